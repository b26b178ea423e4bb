"""Faults on the native stack end every job in a named state, and every effect happens once.

Real emulators, real processes: chunk messages whose audio is gone; a transcriber that is down
while Pub/Sub spends every delivery of a message; ingest and the transcriber killed mid-work;
every message pushed three times, shuffled; webhooks that fail, hang or do not resolve; jobs
deleted in each stage; and jobs whose messages were lost, found by the sweeper.
"""

from __future__ import annotations

import contextvars
import json
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from audiary import names
from audiary.adapters.pubsub import ensure_push_subscription
from audiary.domain.jobs import (
    TERMINAL,
    Chunk,
    ChunkStatus,
    JobStatus,
    SourceObject,
    new_job,
    utcnow,
)
from audiary.domain.keys import Webhook
from audiary.domain.layout import canonical_key, job_prefix, transcript_key
from audiary.local import provision
from audiary.local.stack import NativeStack
from audiary.ports import DEAD_LETTERED, Stores
from audiary.services.ingest import publish_chunks as send_chunks
from audiary.services.jobs import create_upload, delete_job
from audiary.services.notify import WEBHOOK_DEAD_LETTER_TOPIC
from tests.e2e.conftest import Tap, poll, wait_for_status
from tests.fakes.chaos_push import ChaosPush
from tests.fakes.llm_server import FakeLlmServer, answer_with, hang
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.media import DEMO_SAMPLE, decode, encode

from .conftest import model_reading_the_transcript

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One minute of the demo recording: three chunks on the e2e stack."""
    return encode(decode(DEMO_SAMPLE, seconds=60.0), tmp_path_factory.mktemp("faults") / "a.flac")


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole demo recording (89 s): five chunks."""
    return encode(decode(DEMO_SAMPLE), tmp_path_factory.mktemp("faults") / "long.flac")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):
    """`clip(start_s, end_s)`: that part of the demo recording as a file. Tests that count
    model calls use parts no other test uses, so that no note comes from the cache."""
    folder = tmp_path_factory.mktemp("clips")
    samples = decode(DEMO_SAMPLE)

    def make(start_s: float, end_s: float) -> Path:
        part = samples[int(start_s * 16000):int(end_s * 16000)]
        return encode(part, folder / f"clip-{start_s:g}-{end_s:g}.flac")

    return make


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def owned_drop(svc: Stores, owner: str, path: Path) -> str:
    """A job of `owner` whose audio lands in the inbox, as `POST /v1/jobs` then the PUT do."""
    # In a context of its own: the use case tags its request scope with the job (bind_job),
    # which here would outlive the test.
    upload = contextvars.copy_context().run(
        create_upload, svc, owner, path.name, "audio/flac", path.stat().st_size)
    svc.blobs.upload_file(svc.settings.uploads_bucket, upload.job.source.name, path)
    return upload.job.job_id


def add_hook(svc: Stores, owner: str, hook_id: str, url: str) -> None:
    svc.keys.put_webhook(Webhook(webhook_id=hook_id, owner=owner, url=url, secret="s3cret",
                                 created_at=utcnow()))


def delivery_id(job_id: str, hook_id: str) -> str:
    return f"{job_id}-{hook_id}-job.finished"


def assert_once_each(svc: Stores, jobs: list[str], finished: Tap, ready: Tap | None) -> None:
    """Every job ended, announced once (and its transcript once)."""
    for job_id in jobs:
        job = poll(lambda j=job_id: svc.jobs.get_job(j),
                   lambda j: j is not None and j.finished_announced, 60)
        assert job.status in TERMINAL
    counts = poll(finished.counts, lambda c: all(c[j] >= 1 for j in jobs), 30)
    assert {j: counts[j] for j in jobs} == dict.fromkeys(jobs, 1)
    if ready is not None:
        seen = ready.counts()
        assert {j: seen[j] for j in jobs} == dict.fromkeys(jobs, 1)


def queued_job(svc: Stores, name: str, chunks: int = 2, owner: str | None = None,
               spans: list[tuple[int, int]] | None = None) -> str:
    """A job as ingest leaves it, QUEUED with its chunk plan (`chunks` of one second, or
    `spans` of samples), but with no audio in the work bucket: every chunk message fails."""
    job_id = f"fault-{name}-{utcnow().strftime('%H%M%S%f')}"
    svc.jobs.create_job(new_job(job_id, SourceObject(
        bucket=svc.settings.uploads_bucket, name=f"inbox/{job_id}.wav", generation="1"),
        owner=owner, received_at=utcnow()))
    spans = spans or [(i * 16_000, (i + 1) * 16_000) for i in range(chunks)]
    plan = [Chunk(job_id=job_id, index=i, start_sample=start, end_sample=end)
            for i, (start, end) in enumerate(spans)]
    svc.jobs.put_chunks(job_id, plan)
    svc.jobs.advance(job_id, JobStatus.QUEUED)
    return job_id


def process(stack: NativeStack, name: str):
    return next(p for p in stack.processes if p.name == name)


# --- dead letters -------------------------------------------------------------------------------


def test_a_chunk_whose_audio_is_gone_fails_the_job_and_its_hook_is_told(
    svc: Stores, hooks: WebhookReceiver, finished_tap: Tap
):
    owner = "key:poisoned"
    add_hook(svc, owner, "h-poisoned", hooks.url("/ok"))
    job_id = queued_job(svc, "poisoned", owner=owner)
    send_chunks(svc, job_id, svc.jobs.get_chunks(job_id), canonical_key(job_id))
    job = wait_for_status(svc, job_id, {JobStatus.FAILED, JobStatus.DONE}, timeout_s=180)
    assert job.status is JobStatus.FAILED
    assert (job.error.stage, job.error.code) == ("transcribe", "transcription_failed")
    assert "is gone (NotFoundError" in job.error.message
    # The first delivery of either chunk ends the job: no retry can bring the audio back.
    assert [c.attempts for c in svc.jobs.get_chunks(job_id)] in ([1, 0], [0, 1], [1, 1])
    assert_once_each(svc, [job_id], finished_tap, None)
    told = poll(lambda: hooks.posts, lambda posts: len(posts) >= 1, 60)
    assert [(p.body["job_id"], p.body["status"], p.body["error"]["code"]) for p in told] == [
        (job_id, "FAILED", "transcription_failed")]


def test_a_message_pubsub_gives_up_on_is_ended_by_the_dead_letter_consumer(
    svc: Stores, stack: NativeStack
):
    transcriber = process(stack, "transcriber")
    job_id = queued_job(svc, "undelivered", chunks=1)
    transcriber.stop()
    try:
        send_chunks(svc, job_id, svc.jobs.get_chunks(job_id), canonical_key(job_id))
        # Five refused pushes with 1-16 s between them; one the emulator loses comes back
        # after the ack deadline (60 s here).
        job = wait_for_status(svc, job_id, {JobStatus.FAILED}, timeout_s=360)
    finally:
        transcriber.start().wait_ready(120)
    assert (job.error.stage, job.error.code) == ("transcribe", "transcription_failed")
    assert f"{svc.settings.max_attempts} deliveries" in job.error.message
    assert "never acknowledged" in job.error.message
    assert svc.jobs.get_chunks(job_id)[0].attempts == 0  # no delivery reached the handler
    poll(lambda: svc.jobs.get_job(job_id), lambda j: j is not None and j.finished_announced, 30)


# --- processes killed mid-work --------------------------------------------------------------


def test_ingest_killed_mid_fan_out_and_restarted_finishes_the_job(
    svc: Stores, stack: NativeStack, long_speech: Path, finished_tap: Tap, ready_tap: Tap
):
    ingest = process(stack, "ingest")
    chunk_tap = Tap(stack, stack.settings.topic_transcribe_chunk)
    job_id = owned_drop(svc, "key:kill-ingest", long_speech)
    # QUEUED is written just before the chunk messages go out: kill ingest the moment it is
    # seen (reading as fast as the emulator answers), which lands in or just after fan-out.
    deadline = time.monotonic() + 120
    while (job := svc.jobs.get_job(job_id)) is None or job.status is JobStatus.RECEIVED:
        assert time.monotonic() < deadline, "ingest never planned the job"
    ingest.kill(signal.SIGKILL)
    ingest.wait_exit(10)
    sent_before = chunk_tap.counts()[job_id]
    ingest.start().wait_ready(60)
    job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error
    assert all(c.status is ChunkStatus.DONE for c in svc.jobs.get_chunks(job_id))
    assert_once_each(svc, [job_id], finished_tap, ready_tap)
    print(f"ingest killed after {sent_before} of {job.chunks_total} chunk messages went out")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_transcriber_stopped_mid_chunk_and_restarted_finishes_the_job(
    svc: Stores, stack: NativeStack, speech: Path, finished_tap: Tap, ready_tap: Tap, how: str
):
    transcriber = process(stack, "transcriber")
    job_id = owned_drop(svc, f"key:transcriber-{how}", speech)
    poll(lambda: svc.jobs.get_chunks(job_id),
         lambda chunks: any(c.attempts and c.status is ChunkStatus.PENDING for c in chunks), 120)
    if how == "SIGKILL":
        transcriber.kill(signal.SIGKILL)  # the whole instance goes
        transcriber.wait_exit(10)
    else:
        transcriber.kill(signal.SIGTERM, group=False)  # Cloud Run's scale-in
        # Chunks in flight finish or are handed back within the 10 s Cloud Run allows.
        assert transcriber.wait_exit(10) == 0
    transcriber.start().wait_ready(120)
    job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error
    assert_once_each(svc, [job_id], finished_tap, ready_tap)


# --- every message three times, shuffled ------------------------------------------------------


@pytest.fixture
def chaos(stack: NativeStack) -> Iterator[ChaosPush]:
    """Every push subscription of the pipeline goes through a ChaosPush while the test runs."""
    s = stack.settings
    native = provision.native_endpoints(s)
    routes = provision.push_routes(s)
    host = stack.env["PUBSUB_EMULATOR_HOST"]
    with ChaosPush({r.subscription: native[r.subscription] for r in routes}, copies=3,
                   max_delay_s=0.8, seed=3) as proxy:
        try:
            for route in routes:
                ensure_push_subscription(s.project_id, route.subscription, route.topic,
                                         proxy.url(route.subscription), emulator_host=host)
            yield proxy
            proxy.settle()
        finally:
            for route in routes:
                ensure_push_subscription(s.project_id, route.subscription, route.topic,
                                         native[route.subscription], emulator_host=host)


def test_every_message_three_times_and_shuffled_gives_one_of_everything(
    svc: Stores, chaos: ChaosPush, llm_server: FakeLlmServer, hooks: WebhookReceiver,
    clip, finished_tap: Tap, ready_tap: Tap
):
    owner = "key:chaos"
    add_hook(svc, owner, "h-chaos", hooks.url("/ok"))
    # The model takes a second, so copies of transcript-ready arrive while SUMMARIZING.
    for _ in range(2):
        llm_server.enqueue(hang(1.0, then=answer_with(model_reading_the_transcript)))
    calls_before = len(llm_server.requests)
    jobs = [owned_drop(svc, owner, clip(3, 50)), owned_drop(svc, owner, clip(50, 85))]
    for job_id in jobs:
        job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
        assert job.status is JobStatus.DONE, job.error
    chaos.settle()
    assert_once_each(svc, jobs, finished_tap, ready_tap)
    assert len(llm_server.requests) - calls_before == len(jobs)  # one note each
    for job_id in jobs:
        job = svc.jobs.get_job(job_id)
        assert job.summarize_attempts == 1
        assert job.chunks_done == job.chunks_total == len(svc.jobs.get_chunks(job_id))
        assert svc.notes.get_note(job_id) is not None
    delivered = poll(lambda: hooks.delivered("/ok"), lambda d: len(d) == len(jobs), 60)
    assert delivered == {delivery_id(j, "h-chaos"): 1 for j in jobs}
    assert chaos.sent[names.SUBSCRIPTION_SUMMARIZE] >= 3 * len(jobs)  # the copies went out


# --- webhooks that fail ---------------------------------------------------------------------


def test_hooks_that_fail_twice_never_answer_or_do_not_resolve_are_each_handled_once(
    svc: Stores, stack: NativeStack, hooks: WebhookReceiver, speech: Path
):
    owner = "key:hooks"
    add_hook(svc, owner, "flaky", hooks.url("/flaky"))
    add_hook(svc, owner, "silent", hooks.url("/silent"))
    add_hook(svc, owner, "nowhere", "http://hooks.audiary.invalid/h")
    add_hook(svc, owner, "fine", hooks.url("/ok"))
    job_id = owned_drop(svc, owner, speech)
    job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE, job.error

    ended = {h: poll(lambda h=h: svc.keys.delivery_outcome(delivery_id(job_id, h)),
                     lambda o: o is not None, 90)
             for h in ("flaky", "silent", "nowhere", "fine")}
    assert ended == {"flaky": "delivered", "silent": DEAD_LETTERED, "nowhere": DEAD_LETTERED,
                     "fine": "delivered"}
    flaky = delivery_id(job_id, "flaky")
    assert hooks.tried("/flaky") == {flaky: 3}  # two 503s, then through
    assert hooks.delivered("/flaky") == {flaky: 1}
    assert hooks.delivered("/ok") == {delivery_id(job_id, "fine"): 1}
    # The silent hook was tried as often as the settings say, and never answered.
    silent = delivery_id(job_id, "silent")
    assert hooks.tried("/silent") == {silent: stack.settings.webhook_attempts}
    expected = {delivery_id(job_id, "silent"), delivery_id(job_id, "nowhere")}
    letters = dead_letters(stack, WEBHOOK_DEAD_LETTER_TOPIC, expected)
    reasons = {letter["delivery_id"]: letter for letter in letters}
    assert set(reasons) == expected
    assert reasons[delivery_id(job_id, "nowhere")]["attempts"] == 0
    assert "resolved" in reasons[delivery_id(job_id, "nowhere")]["reason"]


def dead_letters(stack: NativeStack, subscription: str, ids: set[str]) -> list[dict]:
    """Pull the dead-letter subscription until the letters of `ids` are in; returns those."""
    from audiary.adapters.pubsub import pull_messages

    got: list[dict] = []

    def pull() -> list[dict]:
        got.extend(letter for data, _ in pull_messages(
            stack.settings.project_id, subscription, timeout_s=1.0,
            emulator_host=stack.env["PUBSUB_EMULATOR_HOST"])
            if (letter := json.loads(data)).get("delivery_id") in ids)
        return got

    return poll(pull, lambda letters: {le["delivery_id"] for le in letters} >= ids, 60)


# --- deletion in every stage -----------------------------------------------------------------


def leftovers(svc: Stores, job_id: str, source: SourceObject) -> list[str]:
    """Everything of the job still stored anywhere (its tombstone aside)."""
    s = svc.settings
    found = [f"{b}/{o.key}" for b in (s.work_bucket, s.feedback_bucket)
             for o in svc.blobs.list(b, job_prefix(job_id))]
    for bucket, key in ((source.bucket, source.name), (s.transcripts_bucket,
                                                       transcript_key(job_id))):
        if svc.blobs.stat(bucket, key) is not None:
            found.append(f"{bucket}/{key}")
    if svc.jobs.get_job(job_id) is not None:
        found.append("job document")
    if svc.jobs.get_chunks(job_id):
        found.append("chunk documents")
    if svc.notes.get_note(job_id) is not None:
        found.append("note")
    if svc.notes.list_feedback(job_id):
        found.append("feedback")
    return found


@pytest.mark.parametrize("stage", [JobStatus.RECEIVED, JobStatus.TRANSCRIBING,
                                   JobStatus.SUMMARIZING])
def test_a_job_deleted_in_each_stage_leaves_nothing_behind(
    svc: Stores, llm_server: FakeLlmServer, speech: Path, long_speech: Path, clip,
    stage: JobStatus
):
    audio = long_speech if stage is JobStatus.TRANSCRIBING else speech  # five chunks to catch
    if stage is JobStatus.SUMMARIZING:  # long enough to delete it while the note is written
        llm_server.enqueue(hang(2.0, then=answer_with(model_reading_the_transcript)))
        audio = clip(7, 47)  # a transcript of its own: the note is not in the cache
    job_id = owned_drop(svc, f"key:delete-{stage.value.lower()}", audio)
    job = poll(lambda: svc.jobs.get_job(job_id),
               lambda j: j is not None and j.status is stage, 300)
    delete_job(svc, job)
    # Stages still in flight find the tombstone and remove what they write after the delete.
    assert poll(lambda: leftovers(svc, job_id, job.source), lambda left: not left, 120) == []
    assert svc.jobs.deleted(job_id) is not None
    # After a later job went all the way through, still nothing came back.
    marker = owned_drop(svc, "key:delete-marker", speech)
    wait_for_status(svc, marker, TERMINAL, timeout_s=300)
    assert leftovers(svc, job_id, job.source) == []


# --- the sweeper ---------------------------------------------------------------------------


def sweep(stack: NativeStack) -> dict:
    """What Cloud Scheduler (locally audiary.local.scheduler) does: POST to the sweeper."""
    s = stack.settings
    response = httpx.post(f"http://{s.host}:{s.sweeper_port}/", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_job_whose_messages_were_lost_is_re_driven_then_finished(
    svc: Stores, stack: NativeStack, speech: Path
):
    job_id = owned_drop(svc, "key:lost", speech)
    job = wait_for_status(svc, job_id, TERMINAL, timeout_s=300)
    assert job.status is JobStatus.DONE
    # The same job as if every chunk message had been lost: planned, QUEUED, stalled.
    lost = queued_job(svc, "lost", spans=[(c.start_sample, c.end_sample)
                                          for c in svc.jobs.get_chunks(job_id)])
    svc.blobs.copy(svc.settings.work_bucket, canonical_key(job_id), svc.settings.work_bucket,
                   canonical_key(lost))
    stalled_since = utcnow() - timedelta(seconds=svc.settings.stall_after_s + 60)
    svc.jobs.update_job(lost, {"progress_at": stalled_since})
    outcome = sweep(stack)
    assert lost in outcome["redriven"]
    done = wait_for_status(svc, lost, TERMINAL, timeout_s=300)
    assert done.status is JobStatus.DONE, done.error
    assert done.redriven_at is not None


def test_a_job_still_stalled_after_its_re_drive_is_failed_by_the_sweeper(
    svc: Stores, stack: NativeStack, finished_tap: Tap
):
    job_id = queued_job(svc, "stalled", chunks=1)
    long_ago = utcnow() - timedelta(seconds=svc.settings.stall_after_s + 60)
    svc.jobs.update_job(job_id, {"progress_at": long_ago, "redriven_at": long_ago})
    outcome = sweep(stack)
    assert job_id in outcome["failed"]
    job = svc.jobs.get_job(job_id)
    assert (job.status, job.error.code, job.error.stage) == (JobStatus.FAILED, "stalled",
                                                             "transcribe")
    assert_once_each(svc, [job_id], finished_tap, None)


def test_the_scheduler_process_calls_the_sweeper(stack: NativeStack):
    scheduler = process(stack, "scheduler")
    assert scheduler.running()
    log = (stack.state_dir / "scheduler.log").read_text()
    assert f"calling http://{stack.settings.host}:{stack.settings.sweeper_port}/ every" in log

