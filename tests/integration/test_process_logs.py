"""Every line the transcriber writes under gunicorn is a Cloud Logging JSON object: gunicorn's
master and worker, its access log, Flask's error log, libraries (the OTLP exporter here) and
Audiary's own, tracebacks included, from start to shutdown.

The server runs as the image runs it (gunicorn with its config module) on 127.0.0.1, with a
model folder that holds no model (a traceback at once, and no model to wait for) and an OTLP
collector address where nothing listens (the exporter's library log lines).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from audiary.local.emulators import free_port
from audiary.local.stack import transcriber_process
from audiary.wire import messages
from tests.e2e.conftest import poll
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

PROJECT = "logs-proj"


def test_every_line_of_the_transcriber_under_gunicorn_is_cloud_logging_json(tmp_path: Path):
    port, nowhere = free_port(), free_port()
    empty = tmp_path / "no-model"
    empty.mkdir()
    server = transcriber_process(
        REPO_ROOT, port, tmp_path / "transcriber.log",  # stdout and stderr both
        {"AUDIARY_JOB_BACKEND": "memory", "AUDIARY_BLOB_BACKEND": "memory",
         "AUDIARY_PUBLISHER_BACKEND": "memory", "AUDIARY_STATE_DIR": str(tmp_path),
         "AUDIARY_PROJECT_ID": PROJECT, "AUDIARY_MODEL_PATH": str(empty),
         "AUDIARY_OTEL_EXPORTER": "otlp",
         "AUDIARY_OTEL_ENDPOINT": f"http://127.0.0.1:{nowhere}",
         "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1"},
        ready_any_status=True)
    base = f"http://127.0.0.1:{port}"
    with server.start():
        server.wait_ready(60)
        health = poll(lambda: httpx.get(f"{base}/healthz", timeout=5),
                      lambda r: r.json()["status"] == "error", 30)
        assert health.status_code == 503
        task = messages.ChunkTask(job_id="job-logs", index=0, start_sample=0, end_sample=16000,
                                  audio_bucket="work", audio_key="job-logs/audio.wav")
        push = httpx.post(base + "/", timeout=10, json={
            "message": {"data": base64.b64encode(messages.encode(task)).decode(),
                        "attributes": messages.attributes_for("job-logs", chunk="0"),
                        "messageId": "41", "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": f"projects/{PROJECT}/subscriptions/transcriber",
            "deliveryAttempt": 1,
        })
        assert push.status_code == 500  # the model is not there: Pub/Sub would retry
        # The push's span is exported in the background and fails: the exporter says so.
        poll(lambda: server.log_path.read_text(),
             lambda text: "opentelemetry.exporter" in text, 30)
    text = server.log_path.read_text()

    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        entry = json.loads(line)  # fails on the first line that is not JSON
        assert isinstance(entry, dict), line
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert {"message", "time", "logging.googleapis.com/sourceLocation"} <= set(entry), line
        entries.append(entry)

    def by(logger: str) -> list[dict[str, Any]]:
        return [e for e in entries if e["logger"] == logger]

    gunicorn = [e["message"] for e in by("gunicorn.error")]
    assert any(m.startswith("Starting gunicorn") for m in gunicorn), gunicorn  # the master
    assert any(m.startswith("Booting worker") for m in gunicorn), gunicorn
    assert any("Shutting down" in m for m in gunicorn), gunicorn
    access = [e["message"] for e in by("gunicorn.access")]
    assert any('"GET /healthz HTTP/1.1" 503' in m for m in access), access
    assert any('"POST / HTTP/1.1" 500' in m for m in access), access
    # Flask's log of the unhandled error, its traceback on the same line.
    [flask_error] = by("audiary-transcriber")
    assert flask_error["severity"] == "ERROR"
    assert "Traceback (most recent call last)" in flask_error["stack_trace"]
    assert flask_error["message"].startswith("Exception on / [POST]\nTraceback")
    [load] = [e for e in by("audiary.entrypoints.transcriber.app")
              if e["message"].startswith("model failed to load")]
    assert "Unable to open file 'model.bin'" in load["stack_trace"]
    assert [e for e in entries if e["logger"].startswith("opentelemetry.exporter")]


def test_the_training_job_logs_json_and_fails_with_its_reason(tmp_path: Path):
    """`audiary train` as the Cloud Run job runs it (CLOUD_RUN_JOB set): no progress bar, every
    line JSON, and a run with nothing to train on ends with exit 1 and the reason."""
    import subprocess

    result = subprocess.run(
        [str(Path(sys.executable).parent / "audiary"), "train", "--no-fine-tune"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CLOUD_RUN_JOB": "audiary-train",
             "AUDIARY_JOB_BACKEND": "memory", "AUDIARY_BLOB_BACKEND": "memory",
             "AUDIARY_PUBLISHER_BACKEND": "memory", "AUDIARY_STATE_DIR": str(tmp_path),
             "AUDIARY_PROJECT_ID": PROJECT})
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all("severity" in record for record in records)
    (failure,) = [r for r in records if r["severity"] == "ERROR"]
    assert failure["message"] == (
        "training failed: no dataset yet: run `audiary dataset build` first")
