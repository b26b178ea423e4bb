"""Job state moves, with what they tell the metrics: time spent in the state left, jobs
finished by status."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from opentelemetry import trace

from audiary.domain.jobs import TERMINAL, Job, JobError, JobStatus
from audiary.observability import metrics
from audiary.ports import Stores


def advance(
    svc: Stores,
    job_id: str,
    status: JobStatus,
    *,
    error: JobError | None = None,
    fields: Mapping[str, object] | None = None,
) -> bool:
    """`svc.jobs.advance`, and when the job moved: observe the stage it left and count it
    finished if `status` is an end state. Returns whether it moved."""
    moved = svc.jobs.advance(job_id, status, error=error, fields=fields)
    if not moved:
        return False
    # One more read per transition (a handful per job) buys stage timings from the stored
    # timestamps, the same ones GET /v1/jobs/{id} reports.
    job = svc.jobs.get_job(job_id)
    if job is not None:
        observe_stage_left(job, status)
    if status in TERMINAL:
        metrics.JOBS_FINISHED.labels(status.value).inc()
    trace.get_current_span().add_event("job state", {"audiary.status": status.value})
    return True


def fail(svc: Stores, job_id: str, code: str, message: str, stage: str) -> bool:
    """Move a job to FAILED with a reason; False if it had already ended."""
    return advance(
        svc, job_id, JobStatus.FAILED, error=JobError(code=code, message=message, stage=stage)
    )


def observe_stage_left(job: Job, entered: JobStatus) -> None:
    """Observe the time `job` spent in the state it was in before it entered `entered`."""
    seen = sorted(job.timestamps.items(), key=lambda kv: kv[1])
    for (state, at), (following, later) in itertools.pairwise(seen):
        if following == entered.value:
            metrics.STAGE_SECONDS.labels(state).observe((later - at).total_seconds())
            return
