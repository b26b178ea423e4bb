"""The native stack for benchmarks: every port free, state in a folder of the run's own, and
clients configured for it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from audiary.domain.jobs import Job, JobStatus
from audiary.local.emulators import free_port
from audiary.local.stack import NativeStack
from audiary.ports import Stores
from audiary.settings import Settings
from audiary.wiring import stores

__all__ = ["bench_settings", "drop_all", "stack_stores", "wait_past"]


def bench_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Settings of a stack of its own: every `*_port` on a free port."""
    ports = {name: free_port() for name in Settings.model_fields if name.endswith("_port")}
    return Settings(state_dir=state_dir, project_id="audiary-bench", **{**ports, **overrides})


def stack_stores(settings: Settings, stack: NativeStack) -> Stores:
    """Clients of the running stack's emulators."""
    return stores(settings.model_copy(update={
        "pubsub_emulator_host": stack.env["PUBSUB_EMULATOR_HOST"],
        "firestore_emulator_host": stack.env["FIRESTORE_EMULATOR_HOST"],
        "storage_emulator_host": stack.env["STORAGE_EMULATOR_HOST"],
    }))


BEFORE_TRANSCRIBED = {JobStatus.RECEIVED, JobStatus.QUEUED, JobStatus.TRANSCRIBING}


def wait_past(svc: Stores, job_ids: list[str], timeout_s: float,
              statuses: set[JobStatus] = BEFORE_TRANSCRIBED) -> dict[str, tuple[Job, float]]:
    """Poll until every job has left `statuses`: each job and when (perf_counter) it was seen
    so; RuntimeError for a job that failed, was rejected or is not there by the deadline."""
    seen: dict[str, tuple[Job, float]] = {}
    deadline = time.perf_counter() + timeout_s
    while len(seen) < len(job_ids):
        for job_id in job_ids:
            if job_id in seen:
                continue
            job = svc.jobs.get_job(job_id)
            if job is not None and job.status not in statuses:
                if job.status in {JobStatus.FAILED, JobStatus.REJECTED}:
                    raise RuntimeError(f"benchmark job {job_id} ended {job.status}: {job.error}")
                seen[job_id] = (job, time.perf_counter())
        if time.perf_counter() > deadline:
            missing = sorted(set(job_ids) - set(seen))
            raise RuntimeError(f"{len(missing)} jobs not transcribed in {timeout_s:.0f} s: "
                               f"{missing[:5]}")
        time.sleep(0.05)
    return seen


def drop_all(svc: Stores, files: list[Path], timeout_s: float
             ) -> tuple[list[str], dict[str, tuple[Job, float]], float]:
    """Upload every file at once; when each job is past transcription: the job ids, each job
    and when it was seen so (`wait_past`), and seconds from the first upload to the last."""
    from audiary.entrypoints.cli.backends import LocalBackend

    started = time.perf_counter()
    job_ids = [LocalBackend(svc).upload(path) for path in files]
    finished = wait_past(svc, job_ids, timeout_s=timeout_s)
    return job_ids, finished, max(at for _, at in finished.values()) - started
