"""`audiary dataset build` and `audiary eval` on the native stack: a correction made through the
API becomes a clip in the datasets bucket (the GCS emulator) with its text in the manifest of
its split, the dataset record in Firestore says how much there is, and the packaged model's
WER on that split is stored as an evaluation, the same as scoring its transcripts here."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from audiary.domain.audio import WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.datasets import DatasetRecord, Split
from audiary.entrypoints.cli.main import cli
from audiary.evaluation.datasets import rows_of
from audiary.evaluation.wer import wer
from audiary.local.stack import NativeStack, settings_env
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wiring import transcriber
from tests.e2e.conftest import poll
from tests.e2e.test_review import finished_job

pytestmark = pytest.mark.e2e


def test_a_correction_becomes_a_training_clip(stack: NativeStack, svc: Stores, tmp_path: Path):
    s = stack.settings
    runner = CliRunner(env={**settings_env(s), **stack.env,
                            "AUDIARY_STATE_DIR": str(stack.state_dir)})
    key = runner.invoke(cli, ["keys", "create", "datasets"]).stdout.strip().splitlines()[-1]
    job_id = finished_job(svc, stack, key, tmp_path, "for-training.flac")
    base = f"http://{s.host}:{s.api_port}"
    corrected = "Monday, the third of November. Today started early, at six."
    answer = httpx.post(f"{base}/v1/jobs/{job_id}/feedback",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"segments": [{"index": 0, "text": corrected}]}, timeout=30)
    assert answer.status_code == 201, answer.text

    # The learning function builds a dataset from the corrections stream by itself.
    def mine_in(record: DatasetRecord) -> list[dict]:
        return [json.loads(line) for split in Split for line in svc.blobs.get(
            s.datasets_bucket, record.manifests[split]).decode().splitlines()
            if json.loads(line)["job_id"] == job_id]

    streamed = poll(lambda: [r for r in svc.notes.list_datasets() if mine_in(r)],
                    bool, timeout_s=120)
    assert [(r["segment"], r["text"]) for r in mine_in(streamed[0])] == [(0, corrected)]
    assert not streamed[0].ready  # far below AUDIARY_DATASET_READY_HOURS: nothing trains

    built = runner.invoke(cli, ["dataset", "build"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    record = svc.notes.list_datasets()[-1]
    assert f"dataset v{record.version}" in built.output
    assert "not ready" in built.output  # far below AUDIARY_DATASET_READY_HOURS
    rows = [json.loads(line) for split in Split for line in svc.blobs.get(
        s.datasets_bucket, record.manifests[split]).decode().splitlines()]
    mine = [r for r in rows if r["job_id"] == job_id]
    assert [(r["segment"], r["text"]) for r in mine] == [(0, corrected)]
    clip = svc.blobs.get(s.datasets_bucket, mine[0]["audio"].split("/", 3)[3])
    with wave.open(io.BytesIO(clip)) as audio:
        assert audio.getnframes() / audio.getframerate() == pytest.approx(
            mine[0]["duration_s"], abs=1e-3)
    assert record.rows[Split(mine[0]["split"])] >= 1

    # The packaged model on the clip's split: the stored WER is the one computed here.
    split = Split(mine[0]["split"])
    scored = runner.invoke(cli, ["eval", "--dataset", str(record.version), "--split",
                                 split.value], catch_exceptions=False)
    assert scored.exit_code == 0, scored.output
    (evaluation,) = svc.notes.list_evaluations(dataset_version=record.version)
    assert evaluation.evaluation_id in scored.output
    engine = transcriber(Settings())
    pairs = []
    for row in rows_of(svc, record, split):
        clip = svc.blobs.get(s.datasets_bucket, row.audio.split("/", 3)[3])
        heard = engine.transcribe(pcm_to_float(clip[WAV_HEADER_BYTES:]), language=row.language)
        pairs.append((row.text, " ".join(seg.text.strip() for seg in heard)))
    expected = wer([r for r, _ in pairs], [h for _, h in pairs])
    summary = evaluation.splits[split]
    assert (summary.errors, summary.words, summary.clips) == (
        expected.errors, expected.words, len(pairs))
    assert f"{summary.wer:.3f}" in scored.output
