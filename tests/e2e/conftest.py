"""The whole native stack on free ports, started once for the e2e tests and stopped after."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from audiary.domain.jobs import Job, JobStatus
from audiary.local.emulators import free_port
from audiary.local.stack import NativeStack
from audiary.local.taps import TopicTap
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wiring import stores
from tests.fakes.google_identity import GoogleIdentity
from tests.fakes.llm_server import FakeLlmServer, answer_with

CHUNK_TARGET_S = 20.0
# The web page's Google sign-in: its OAuth client, and the one person allowed on the page.
WEB_CLIENT_ID = "e2e-web.apps.googleusercontent.com"
WEB_USER = "diarist@example.org"
# The review desk: a real Label Studio, started by the review tests on this port (the stack is
# configured for it from the start), and the secret its webhook carries to the receiver.
LABEL_STUDIO_TOKEN = "e2e-label-studio-token-0123456789"
REVIEW_SECRET = "e2e-review-secret"


@pytest.fixture(scope="session")
def label_studio_port() -> int:
    return free_port()
T = TypeVar("T")


def model_reading_the_transcript(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fake model's answer: a valid note built from the first transcript line it was sent,
    so a test can tell that the note came from this job's transcript."""
    prompt = body["messages"][-1]["content"]
    first = re.search(r"\[([\d.]+)-([\d.]+)\] (.+)", prompt)
    if first is None:  # nothing was said: a note without highlights
        return {"schema_version": "1", "title": "Silence", "date": None,
                "summary": "Nothing was said.",
                "mood": None, "people": [], "places": [], "action_items": [], "tags": ["e2e"],
                "highlights": []}
    start, end, text = float(first[1]), float(first[2]), first[3]
    return {
        "schema_version": "1", "title": "A day", "date": None, "summary": text,
        "mood": None, "people": [], "places": [], "action_items": [], "tags": ["e2e"],
        "highlights": [{"text": text, "source": {"start": start, "end": end}}],
    }


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeLlmServer]:
    with FakeLlmServer(default=answer_with(model_reading_the_transcript)) as server:
        yield server


@pytest.fixture(scope="session")
def google() -> Iterator[GoogleIdentity]:
    with GoogleIdentity(email=WEB_USER) as server:
        yield server


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, llm_server: FakeLlmServer,
          google: GoogleIdentity, label_studio_port: int) -> Iterator[NativeStack]:
    review_port = free_port()
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("stack"),
        pubsub_port=free_port(),
        firestore_port=free_port(),
        gcs_port=free_port(),
        ingest_port=free_port(),
        transcriber_port=free_port(),
        chunk_target_s=CHUNK_TARGET_S,
        # A push the emulator loses (it does, now and then, on a connection the server closed)
        # comes back within a minute rather than ten; a 20 s chunk takes seconds.
        ack_deadline_s=60,
        chunk_search_s=5.0,
        summarize_port=free_port(),
        api_port=free_port(),
        webhooks_port=free_port(),
        deadletters_port=free_port(),
        ingest_metrics_port=free_port(),
        summarize_metrics_port=free_port(),
        webhooks_metrics_port=free_port(),
        watcher_metrics_port=free_port(),
        deadletters_metrics_port=free_port(),
        sweeper_port=free_port(),
        sweeper_metrics_port=free_port(),
        review_port=review_port,
        review_metrics_port=free_port(),
        learning_port=free_port(),
        learning_metrics_port=free_port(),
        # Every correction builds a dataset on the stream (none is ever ready: 5 h).
        dataset_build_interval_s=0.0,
        # Review in Label Studio; the tests run the sync themselves (`audiary review sync`).
        label_studio_url=f"http://127.0.0.1:{label_studio_port}",
        label_studio_token=SecretStr(LABEL_STUDIO_TOKEN),
        review_secret=SecretStr(REVIEW_SECRET),
        review_url=f"http://127.0.0.1:{review_port}",
        review_audit_percent=0.0,
        review_sync_interval_s=3600.0,
        watch_stats_interval_s=1.0,
        # Development settings: the tests' webhook receiver and audio server are on loopback.
        allow_http_urls=True,
        allow_private_urls=True,
        project_id="audiary-e2e",
        # Notes come from the real OpenAI SDK talking to the local fake server.
        llm_providers="openai,extractive",
        openai_api_key=SecretStr("sk-e2e"),
        openai_base_url=llm_server.openai_base_url,
        llm_max_retries=0,
        # Hooks that never answer give up within seconds here.
        webhook_attempts=3,
        webhook_timeout_s=1.0,
        # Small enough for the web test to pick a file above it (a sparse one).
        max_upload_bytes=50 * 1024**2,
        # "Sign in with Google" on the page, verified against the test's certificates.
        web_google_client_id=WEB_CLIENT_ID,
        web_users=[WEB_USER],
        google_certs_url=google.certs_url,
        web_google_script_url=google.script_url,
    )
    with NativeStack(settings) as running:
        yield running


@pytest.fixture
def svc(stack: NativeStack, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """Clients of the running stack, configured exactly like the CLI's."""
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AUDIARY_STATE_DIR", str(stack.state_dir))
    return stores(Settings())


def poll(check: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
    """Call `check` every 0.2 s until `done(result)`; AssertionError with the last result."""
    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.2),
        retry=retry_if_result(lambda result: not done(result)),
    )
    try:
        return retrying(check)
    except RetryError as exc:
        last = exc.last_attempt.result()
        raise AssertionError(f"not reached in {timeout_s:.0f} s; last seen: {last}") from None


def wait_for_status(svc: Stores, job_id: str, statuses: set[JobStatus],
                    timeout_s: float = 300) -> Job:
    job = poll(lambda: svc.jobs.get_job(job_id),
               lambda j: j is not None and j.status in statuses, timeout_s)
    assert job is not None
    return job


class Tap(TopicTap):
    """A pull subscription of the test's own on a topic: how often each job's message was
    published there."""

    def __init__(self, stack: NativeStack, topic: str) -> None:
        super().__init__(stack.settings.project_id, stack.env["PUBSUB_EMULATOR_HOST"],
                         f"e2e-tap-{topic}", topic)


@pytest.fixture(scope="session")
def finished_tap(stack: NativeStack) -> Tap:
    return Tap(stack, stack.settings.topic_job_finished)


@pytest.fixture(scope="session")
def ready_tap(stack: NativeStack) -> Tap:
    return Tap(stack, stack.settings.topic_transcript_ready)
