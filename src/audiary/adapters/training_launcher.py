"""Where `dataset-ready` starts training: a Cloud Run job execution, or a local process.

`CloudRunJobLauncher` runs the training job Pulumi created (`AUDIARY_TRAIN_JOB`, an NVIDIA L4)
with the `google-cloud-run` client, overriding the container's arguments with the dataset
version, and returns the execution's name without waiting for it. `ProcessLauncher` starts
`audiary train --dataset N` in the background on this machine, its output in
`<state_dir>/training-v<N>.log`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from audiary.errors import ConfigError
from audiary.ports import TrainingLauncher

__all__ = ["CloudRunJobLauncher", "ProcessLauncher", "train_args"]

log = logging.getLogger(__name__)


def train_args(dataset_version: int) -> list[str]:
    """The `audiary` arguments of one training run."""
    return ["train", "--dataset", str(dataset_version)]


class CloudRunJobLauncher(TrainingLauncher):
    """Executions of a Cloud Run job (`projects/P/locations/R/jobs/J`)."""

    def __init__(self, job: str, *, client: Any = None) -> None:
        if not job.startswith("projects/") or "/jobs/" not in job:
            raise ConfigError(f"AUDIARY_TRAIN_JOB={job!r} is not a Cloud Run job name: "
                              "expected projects/<project>/locations/<region>/jobs/<job>")
        self.job = job
        if client is None:
            from google.cloud import run_v2

            client = run_v2.JobsClient()
        self._client = client

    def start(self, dataset_version: int) -> str:
        from google.cloud import run_v2

        request = run_v2.RunJobRequest(
            name=self.job,
            overrides=run_v2.RunJobRequest.Overrides(container_overrides=[
                run_v2.RunJobRequest.Overrides.ContainerOverride(
                    args=train_args(dataset_version))]))
        operation = self._client.run_job(request=request)
        # The long-running operation's metadata is the execution it created.
        execution = getattr(operation.metadata, "name", "") or operation.operation.name
        log.info("training on dataset v%d started: %s", dataset_version, execution)
        return str(execution)


class ProcessLauncher(TrainingLauncher):
    """`audiary train` as a background process of this machine."""

    def __init__(self, state_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []  # what it started, newest last

    def start(self, dataset_version: int) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.state_dir / f"training-v{dataset_version}.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "audiary.entrypoints.cli.main",
                 *train_args(dataset_version)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True)
        self.processes.append(process)
        log.info("training on dataset v%d started as process %d (%s)", dataset_version,
                 process.pid, log_path)
        return str(log_path)
