"""The learning loop on the real emulators, with real speech models and real training.

Twenty-four spoken diary entries (evaluation.diaries: eight speakers, names and places the
packaged tiny.en gets wrong) go in through the API, each with its speaker; the packaged model
transcribes them; their corrections go in through the API. Then, through the CLI:
`audiary dataset build` (splits by speaker, `dataset-ready` at the threshold), `audiary train`
(a vocabulary candidate and a fine-tuned one, a few CPU steps), and the gate's decisions, which
must follow from the WER each model was measured at. The transcriber then serves the promoted
model, and its WER on the test split is the recorded one. Faults: a deliberately damaged
checkpoint is refused, a run that fails midway leaves the registry as it was, a train clip
whose audio is gone is trained without, a dataset below the threshold is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from audiary.adapters.pubsub import ensure_pull_subscription, ensure_topic, pull_messages
from audiary.domain.audio import WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.datasets import DatasetRecord, Split, split_of
from audiary.domain.jobs import JobStatus
from audiary.domain.keys import ApiKey, new_key
from audiary.domain.models import ModelState, OriginKind
from audiary.domain.transcript import Transcript
from audiary.entrypoints.api.app import create_app
from audiary.entrypoints.cli.main import cli
from audiary.evaluation.datasets import rows_of
from audiary.evaluation.diaries import ENTRIES, synthesize
from audiary.evaluation.wer import wer
from audiary.learning import loop
from audiary.local.stack import settings_env
from audiary.ports import Stores
from audiary.services import models
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from audiary.wiring import stores, transcriber
from tests.integration.conftest import LocalServers

pytestmark = pytest.mark.integration

SPLITS = (0.6, 0.0, 0.4)  # eight speakers: four train, four test (see the assertion below)


@dataclass
class Loop:
    settings: Settings
    env: dict[str, str]
    svc: Stores
    dataset: DatasetRecord
    build: Result
    train: Result
    ready_events: list[dict[str, object]]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner(env={**self.env, **(env or {})}).invoke(cli, list(args))


def _settings(tmp: Path) -> Settings:
    run = datetime.now(UTC).strftime("%H%M%S%f")
    return Settings(
        uploads_bucket=f"up-{run}", work_bucket=f"work-{run}", transcripts_bucket=f"tr-{run}",
        feedback_bucket=f"fb-{run}", datasets_bucket=f"ds-{run}", models_bucket=f"md-{run}",
        jobs_collection=f"jobs-{run}", notes_collection=f"notes-{run}",
        feedback_collection=f"feedback-{run}", api_keys_collection=f"keys-{run}",
        datasets_collection=f"datasets-{run}", evaluations_collection=f"evals-{run}",
        models_collection=f"models-{run}", topic_audio_uploaded=f"uploaded-{run}",
        topic_transcribe_chunk=f"chunks-{run}", topic_transcript_ready=f"ready-{run}",
        topic_transcript_corrected=f"corrected-{run}",
        topic_dataset_ready=f"dsready-{run}", state_dir=tmp, api_rate_per_s=1000,
        api_burst=1000, dataset_splits=SPLITS, dataset_ready_hours=0.01,
        # A small run for two cores: ten steps of four clips.
        train_steps=10, train_batch_size=4, train_grad_accum=1, train_learning_rate=1e-4,
        train_warmup_steps=2, promote_min_words=20)


def _correct_through_the_api(s: Settings, svc: Stores, tmp: Path) -> None:
    """Every entry: uploaded with its speaker, ingested, transcribed by the packaged model as
    the transcriber leaves it, then corrected through the API."""
    full, key_id, digest = new_key()
    svc.keys.put_key(ApiKey(key_id=key_id, name="learning", secret_hash=digest,
                            created_at=datetime.now(UTC)))
    headers = {"Authorization": f"Bearer {full}"}
    client = create_app(lambda: s).test_client()
    engine = transcriber(s)
    for i, entry in enumerate(ENTRIES):
        path = synthesize(entry, tmp / f"entry-{i}.wav")
        grant = client.post("/v1/uploads", headers=headers, json={
            "filename": path.name, "content_type": "audio/wav",
            "size_bytes": path.stat().st_size, "speaker": entry.speaker})
        assert grant.status_code == 201, grant.json
        put = httpx.put(grant.json["upload_url"], content=path.read_bytes(),
                        headers=grant.json["headers"])
        assert put.status_code == 200, put.text
        job = svc.jobs.get_job(grant.json["job_id"])
        assert job is not None
        assert job.speaker == entry.speaker
        info = svc.blobs.stat(job.source.bucket, job.source.name)
        ingest(svc, ObjectEvent(info.bucket, info.key, info.generation, info.size))
        job = svc.jobs.get_job(job.job_id)
        bucket, name = job.audio_uri.split("/", 1)
        samples = pcm_to_float(svc.blobs.get(bucket, name)[WAV_HEADER_BYTES:])
        heard = Transcript(job_id=job.job_id, segments=engine.transcribe(samples))
        # One segment per entry: decoding is deterministic, so this holds on every run.
        assert len(heard.segments) == 1, heard.segments
        svc.blobs.put(s.transcripts_bucket, f"{job.job_id}.json",
                      heard.model_dump_json().encode())
        for status in (JobStatus.TRANSCRIBING, JobStatus.TRANSCRIBED):
            svc.jobs.advance(job.job_id, status, fields={
                "transcript_uri": f"{s.transcripts_bucket}/{job.job_id}.json",
                "text": heard.text, "model": engine.model_name})
        answer = client.post(f"/v1/jobs/{job.job_id}/feedback", headers=headers,
                             json={"segments": [{"index": 0, "text": entry.text}]})
        assert answer.status_code == 201, answer.json


@pytest.fixture(scope="module")
def learned(local_servers: LocalServers, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Loop]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_servers.env.items():
            patch.setenv(name, value)
        s = _settings(tmp_path_factory.mktemp("learning"))
        svc = stores(s)
        for bucket in (s.uploads_bucket, s.work_bucket, s.transcripts_bucket,
                       s.feedback_bucket, s.datasets_bucket, s.models_bucket):
            svc.blobs.ensure_bucket(bucket)
        for topic in (s.topic_audio_uploaded, s.topic_transcribe_chunk,
                      s.topic_transcript_ready, s.topic_dataset_ready,
                      s.topic_transcript_corrected):
            ensure_topic(s.project_id, topic, emulator_host=s.pubsub_emulator_host)
        ensure_pull_subscription(s.project_id, f"watch-{s.topic_dataset_ready}",
                                 s.topic_dataset_ready, emulator_host=s.pubsub_emulator_host)
        _correct_through_the_api(s, svc, tmp_path_factory.mktemp("speech"))
        env = {**local_servers.env, **settings_env(s)}
        build = CliRunner(env=env).invoke(cli, ["dataset", "build"], catch_exceptions=False)
        events = [json.loads(data) for data, _ in pull_messages(
            s.project_id, f"watch-{s.topic_dataset_ready}", timeout_s=10,
            emulator_host=s.pubsub_emulator_host)]
        dataset = svc.notes.list_datasets()[-1]
        train = CliRunner(env=env).invoke(cli, ["train"], catch_exceptions=False)
        yield Loop(s, env, svc, dataset, build, train, events)


def test_the_dataset_splits_by_speaker_and_announces_itself(learned: Loop):
    assert learned.build.exit_code == 0, learned.build.output
    d = learned.dataset
    assert d.rows == {Split.TRAIN: 12, Split.VAL: 0, Split.TEST: 12}
    assert d.ready
    assert "ready for training" in learned.build.output
    speakers = {split: {json.loads(line)["source_id"] for line in learned.svc.blobs.get(
        d.bucket, d.manifests[split]).decode().splitlines()} for split in Split}
    assert speakers[Split.TRAIN].isdisjoint(speakers[Split.TEST])
    assert speakers[Split.TRAIN] | speakers[Split.TEST] == {e.speaker for e in ENTRIES}
    for split, found in speakers.items():
        assert all(split_of(speaker, SPLITS) is split for speaker in found)
    assert learned.ready_events == [{
        "version": d.version, "bucket": d.bucket,
        "manifests": {k.value: v for k, v in d.manifests.items()},
        "train_hours": d.hours[Split.TRAIN]}]


def test_each_candidate_is_judged_by_its_measured_wer(learned: Loop):
    assert learned.train.exit_code == 0, learned.train.output
    svc, version = learned.svc, learned.dataset.version
    by_kind = {r.origin.kind: r for r in svc.notes.list_models()}
    base, vocab, tuned = (by_kind[k] for k in (OriginKind.PACKAGED, OriginKind.VOCABULARY,
                                               OriginKind.TRAINED))
    assert base.model_id == "tiny.en@1"
    assert base.decision == "replaced by tiny.en-vocab@1"
    # The vocabulary: the names and places corrected in at least two train clips.
    assert set(vocab.hotwords.split()) <= {w.strip(".,") for e in ENTRIES
                                           for w in e.text.split()}
    assert {"Machynlleth", "Llandudno", "Aberystwyth", "Holyhead"} <= set(
        vocab.hotwords.split())
    assert tuned.origin.base == "tiny.en@1"
    assert tuned.origin.dataset_version == version
    assert tuned.origin.details["steps"] == 10
    assert tuned.origin.details["loss_last"] < tuned.origin.details["loss_first"]
    wer_of = {r.model_id: r.wer_on(version, "test") for r in (base, vocab, tuned)}
    margin = learned.settings.promote_margin
    # Each step of the loop must beat what was promoted before it by the margin.
    assert wer_of["tiny.en-vocab@1"] <= wer_of["tiny.en@1"] - margin
    assert wer_of["tiny.en-ft@1"] <= wer_of["tiny.en-vocab@1"] - margin
    assert (base.state, vocab.state, tuned.state) == (
        ModelState.RETIRED, ModelState.RETIRED, ModelState.PROMOTED)
    assert models.promoted(svc).model_id == "tiny.en-ft@1"
    # The evaluation records behind the numbers, and the table the command printed.
    stored = {e.model: e for e in svc.notes.list_evaluations(dataset_version=version)}
    for model_id, measured in wer_of.items():
        assert stored[model_id].splits[Split.TEST].wer == measured
        assert model_id in learned.train.output
    assert "promoted over" in learned.train.output


def test_the_transcriber_serves_the_promoted_model_at_its_recorded_wer(learned: Loop):
    svc, d = learned.svc, learned.dataset
    engine = transcriber(learned.settings, svc=svc)
    assert engine.model_name == "tiny.en-ft@1"
    pairs = []
    for row in rows_of(svc, d, Split.TEST):
        clip = svc.blobs.get(d.bucket, row.audio.split("/", 3)[3])
        heard = engine.transcribe(pcm_to_float(clip[WAV_HEADER_BYTES:]), language=row.language)
        pairs.append((row.text, " ".join(seg.text.strip() for seg in heard)))
    measured = wer([r for r, _ in pairs], [h for _, h in pairs]).wer
    assert measured == models.promoted(svc).wer_on(d.version, "test")
    # A setting still overrides the registry.
    packaged = learned.settings.resolved_model_path()
    override = learned.settings.model_copy(update={"model_path": packaged})
    assert transcriber(override, svc=stores(override)).model_name == packaged


def test_a_damaged_checkpoint_is_refused(learned: Loop, tmp_path: Path):
    import torch

    from audiary.learning.whisper import to_ctranslate2, to_transformers

    svc, d = learned.svc, learned.dataset
    before = models.promoted(svc)
    base_dir = loop.base_directory(svc, before)
    model, processor = to_transformers(base_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.model.decoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    damaged = models.register_directory(
        svc, to_ctranslate2(model, processor, base_dir, tmp_path / "damaged"),
        name="damaged", origin=models.packaged_origin("test"))
    decision = loop.judge(svc, damaged, d, say=lambda _: None)
    assert not decision.promote
    assert "worse" in decision.reason
    record = svc.notes.get_model(damaged.model_id)
    assert record.state is ModelState.CANDIDATE
    assert record.decision == decision.reason
    assert record.wer_on(d.version, "test") > before.wer_on(d.version, "test")
    assert models.promoted(svc).model_id == before.model_id


def test_a_run_that_fails_midway_changes_nothing(learned: Loop):
    svc, d = learned.svc, learned.dataset
    registered = [(r.model_id, r.state) for r in svc.notes.list_models()]
    stored = {o.key for o in svc.blobs.list(learned.settings.models_bucket, "")}

    def fail_at_step_two(step: int, total: int, loss: float) -> None:
        if step == 2:
            raise RuntimeError("the training machine went away")

    with pytest.raises(RuntimeError, match="went away"):
        loop.run(svc, d, vocabulary=False, progress=fail_at_step_two)
    assert [(r.model_id, r.state) for r in svc.notes.list_models()] == registered
    assert {o.key for o in svc.blobs.list(learned.settings.models_bucket, "")} == stored


def test_a_train_clip_whose_audio_is_gone_is_trained_without(learned: Loop):
    svc, d = learned.svc, learned.dataset
    gone = rows_of(svc, d, Split.TRAIN)[0]
    bucket, key = gone.audio.split("://", 1)[1].split("/", 1)
    kept = svc.blobs.get(bucket, key)
    svc.blobs.delete(bucket, key)
    said: list[str] = []
    try:
        examples = loop.examples(svc, d, said.append)
    finally:
        svc.blobs.put(bucket, key, kept, content_type="audio/wav")
    assert len(examples) == d.rows[Split.TRAIN] - 1
    assert said == [f"1 train clips of dataset v{d.version} are gone; trained without"]


def test_a_dataset_below_the_threshold_is_neither_announced_nor_trained(learned: Loop):
    s = learned.settings
    before = models.promoted(learned.svc).model_id
    built = learned.cli("dataset", "build", env={"AUDIARY_DATASET_READY_HOURS": "5"})
    assert built.exit_code == 0, built.output
    assert "not ready: train has 0.01 h of the 5 h needed" in built.output
    assert pull_messages(s.project_id, f"watch-{s.topic_dataset_ready}", timeout_s=2,
                         emulator_host=s.pubsub_emulator_host) == []
    refused = learned.cli("train")
    assert refused.exit_code == 1
    assert "below the 5 h of AUDIARY_DATASET_READY_HOURS" in refused.output
    assert "--force" in refused.output
    assert models.promoted(learned.svc).model_id == before


def test_the_process_launcher_starts_audiary_train_in_the_background(emulator_env,
                                                                     tmp_path: Path):
    import os
    import sys

    from audiary.adapters.training_launcher import ProcessLauncher

    env = {**os.environ, "AUDIARY_STATE_DIR": str(tmp_path),
           "AUDIARY_DATASETS_COLLECTION": f"none-{tmp_path.name}",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    launcher = ProcessLauncher(tmp_path, env=env)
    log_path = Path(launcher.start(3))
    assert log_path == tmp_path / "training-v3.log"
    (process,) = launcher.processes
    assert process.wait(timeout=60) == 1
    # No dataset in that collection: the run says so and ends.
    assert "Error: no dataset yet: run `audiary dataset build` first" in log_path.read_text()


def test_the_registry_from_the_cli(learned: Loop):
    """Last in the module: it promotes by hand."""
    listed = learned.cli("model", "list")
    assert listed.exit_code == 0, listed.output
    assert "the transcriber serves tiny.en-ft@1" in listed.output
    registered = learned.cli("model", "register", "tiny.en")
    assert registered.exit_code == 0, registered.output
    assert "registered tiny.en@2 as a candidate" in registered.output
    record = learned.svc.notes.get_model("tiny.en@2")
    assert record.origin.kind is OriginKind.PACKAGED
    assert record.state is ModelState.CANDIDATE
    refused = learned.cli("model", "promote", "tiny.en@1")
    assert refused.exit_code == 1
    assert "tiny.en@1 is retired; register it again" in refused.output
    promoted = learned.cli("model", "promote", "tiny.en@2", "--reason", "rolled back")
    assert promoted.exit_code == 0, promoted.output
    assert models.promoted(learned.svc).model_id == "tiny.en@2"
    assert learned.svc.notes.get_model("tiny.en-ft@1").state is ModelState.RETIRED
    assert transcriber(learned.settings, svc=learned.svc).model_name == "tiny.en@2"
