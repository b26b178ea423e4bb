"""The learning function's service (services.learning) on the in-memory adapters: the
corrections stream builds datasets at most once per interval and never twice from the same
corrections, `dataset-ready` starts training once however often it is delivered, the schedule
catches up, and nothing trains where no training job is deployed. The launchers: the Cloud Run
one drives the real `google-cloud-run` client against a local server speaking the Run v2 REST
protocol; the process one starts `audiary train` for real."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from audiary.adapters.training_launcher import CloudRunJobLauncher
from audiary.domain.jobs import utcnow
from audiary.errors import ConfigError
from audiary.ports import TrainingLauncher
from audiary.services import learning
from audiary.services.datasets import ready_message
from audiary.wire.messages import TranscriptCorrected
from tests.media import DEMO_SAMPLE, decode
from tests.unit.test_datasets import corrected_job, with_settings
from tests.unit.test_deletion import svc  # noqa: F401 (fixture)


class Recorded(TrainingLauncher):
    """Remembers the runs it was asked to start (the port's fake)."""

    def __init__(self, fail: bool = False) -> None:
        self.started: list[int] = []
        self.fail = fail

    def start(self, dataset_version: int) -> str:
        if self.fail:
            raise RuntimeError("the Cloud Run API is down")
        self.started.append(dataset_version)
        return f"run-{dataset_version}"


def ready(job_id: str, version: int) -> TranscriptCorrected:
    return TranscriptCorrected(job_id=job_id, transcript_version=version, segments=[0],
                               source="api")


@pytest.fixture
def corrected(svc, tmp_path):  # noqa: F811
    for bucket in (svc.settings.datasets_bucket,):
        svc.blobs.ensure_bucket(bucket)
    samples = decode(DEMO_SAMPLE, seconds=20.0)
    job = corrected_job(svc, tmp_path, samples, "a.wav", {0: "Monday, the third of November."})
    return with_settings(svc, dataset_ready_hours=0.0001, dataset_build_interval_s=600), job


def test_the_corrections_stream_builds_at_most_once_per_interval(corrected):
    stores, job = corrected
    # The correction was published on the corrections stream when it was saved.
    (published, _), = stores.publisher.published(stores.settings.topic_transcript_corrected)
    assert TranscriptCorrected.model_validate_json(published) == ready(job.job_id, 2)
    first = learning.on_correction(stores, ready(job.job_id, 2))
    assert (first.action, first.dataset_version) == ("built", 1)
    assert [r.version for r in stores.notes.list_datasets()] == [1]
    again = learning.on_correction(stores, ready(job.job_id, 2))
    assert again.action == "waiting"
    later = utcnow() + timedelta(seconds=601)
    unchanged = learning.on_correction(stores, ready(job.job_id, 2), now=later)
    assert unchanged.action == "unchanged"  # the same corrections make no new version
    assert [r.version for r in stores.notes.list_datasets()] == [1]


def test_dataset_ready_starts_training_once(corrected):
    stores, job = corrected
    learning.on_correction(stores, ready(job.job_id, 2))
    record = stores.notes.list_datasets()[-1]
    assert record.ready
    launcher = Recorded()
    outcomes = [learning.on_dataset_ready(stores, launcher, ready_message(record))
                for _ in range(3)]  # delivered three times
    assert [o.action for o in outcomes] == ["started", "already-started", "already-started"]
    assert launcher.started == [record.version]
    # The schedule finds it started too, and the corrections unchanged.
    assert [o.action for o in learning.on_schedule(stores, launcher)] == [
        "unchanged", "already-started"]
    assert launcher.started == [record.version]


def test_a_launch_that_fails_is_tried_again_and_disabled_training_waits(corrected):
    stores, job = corrected
    learning.on_correction(stores, ready(job.job_id, 2))
    message = ready_message(stores.notes.list_datasets()[-1])
    with pytest.raises(RuntimeError, match="down"):
        learning.on_dataset_ready(stores, Recorded(fail=True), message)
    # The claim lapses; the redelivery after it starts the run.
    later = utcnow() + timedelta(seconds=learning.CLAIM_S + 1)
    launcher = Recorded()
    assert learning.on_dataset_ready(stores, launcher, message, now=later).action == "started"
    off = with_settings(stores, training_enabled=False)
    waiting = learning.on_dataset_ready(off, Recorded(), message.model_copy(
        update={"version": 9}))
    assert waiting.action == "disabled"
    assert "audiary:trainerImage" in waiting.detail


class RunApi(BaseHTTPRequestHandler):
    """Cloud Run Admin API v2's jobs.run, as its REST transport calls it."""

    calls: ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        RunApi.calls.append((self.path, body))
        name = self.path.split("?")[0].removeprefix("/v2/").removesuffix(":run")
        answer = {"name": f"{name}/operations/op-1", "done": False, "metadata": {
            "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
            "name": f"{name}/executions/audiary-train-x7k2p"}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_the_cloud_run_launcher_runs_the_job_with_the_dataset_as_arguments():
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    server = ThreadingHTTPServer(("127.0.0.1", 0), RunApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = run_v2.JobsClient(
            transport="rest", credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{server.server_port}"))
        job = "projects/p/locations/europe-west4/jobs/audiary-train"
        execution = CloudRunJobLauncher(job, client=client).start(7)
    finally:
        server.shutdown()
    assert execution == f"{job}/executions/audiary-train-x7k2p"
    ((path, body),) = RunApi.calls
    assert path.startswith(f"/v2/{job}:run")
    assert body["overrides"]["containerOverrides"] == [{"args": ["train", "--dataset", "7"]}]
    with pytest.raises(ConfigError, match="not a Cloud Run job name"):
        CloudRunJobLauncher("audiary-train", client=client)
