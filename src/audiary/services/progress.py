"""Job state moves, what they tell the metrics (time spent in the state left, jobs finished by
status) and the one effect every end state has: `job-finished`.

`job-finished` belongs to the transition that ended the job. It is published right after that
transition, and `finished_announced` is set once it is out; a redelivery of the same stage that
finds the job ended by itself but not yet announced (the process died in between) publishes it
then (`resume_announcement`). No other stage ever does, so a job is announced once.

A delivery that finds the announcement missing only moments after the transition may be racing
the delivery that made it, which is publishing right now: within `ANNOUNCE_GRACE_S` of the
transition it raises `AnnouncementPending` instead, so that Pub/Sub delivers it again later
(10 s at the earliest on Google Cloud), when the announcement is either out or overdue.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping

from opentelemetry import trace

from audiary.domain.jobs import TERMINAL, Job, JobError, JobStatus, utcnow
from audiary.observability import metrics
from audiary.ports import Stores
from audiary.wire import messages

log = logging.getLogger(__name__)

# How long after a transition its own delivery is presumed to be announcing it.
ANNOUNCE_GRACE_S = 5.0


class AnnouncementPending(Exception):  # noqa: N818 (a state, not a failure)
    """Raised so that Pub/Sub delivers again: the delivery that moved the job to this state
    is publishing its announcement right now."""


def check_announcement_due(job: Job, state: JobStatus, what: str) -> None:
    """Raise `AnnouncementPending` if `job` entered `state` less than `ANNOUNCE_GRACE_S` ago."""
    entered = job.timestamps.get(state.value)
    age_s = (utcnow() - entered).total_seconds() if entered is not None else None
    if age_s is not None and age_s < ANNOUNCE_GRACE_S:
        raise AnnouncementPending(
            f"job {job.job_id} entered {state} {age_s:.1f} s ago; the delivery that moved it "
            f"is announcing {what}")


def advance(
    svc: Stores,
    job_id: str,
    status: JobStatus,
    *,
    error: JobError | None = None,
    fields: Mapping[str, object] | None = None,
    stage: str | None = None,
) -> bool:
    """`svc.jobs.advance`, and when the job moved: observe the stage it left, and if `status`
    is an end state (which needs the `stage` that ends it) count it and announce it.
    Returns whether it moved."""
    if status in TERMINAL:
        if stage is None:
            raise ValueError(f"moving a job to {status} needs the stage that ends it")
        fields = {**(fields or {}), "finished_by": stage}
    moved = svc.jobs.advance(job_id, status, error=error, fields=fields)
    if not moved:
        return False
    # One more read per transition (a handful per job) buys stage timings from the stored
    # timestamps, the same ones GET /v1/jobs/{id} reports.
    job = svc.jobs.get_job(job_id)
    if job is not None:
        observe_stage_left(job, status)
    span = trace.get_current_span()
    if span.is_recording():  # not the delivery's span that ended when a drain handed it back
        span.add_event("job state", {"audiary.status": status.value})
    if status in TERMINAL:
        metrics.JOBS_FINISHED.labels(status.value).inc()
        announce_finished(svc, job_id, status)
    return True


def announce_finished(svc: Stores, job_id: str, status: JobStatus) -> None:
    """Publish `job-finished` for an ended job and remember that it went out."""
    s = svc.settings
    svc.publisher.publish(
        s.topic_job_finished,
        messages.encode(messages.JobFinished(job_id=job_id, status=status.value)),
        messages.attributes_for(job_id),
    )
    svc.jobs.update_job(job_id, {"finished_announced": True})


def resume_announcement(svc: Stores, job: Job, stage: str) -> bool:
    """For a redelivery at `stage` that finds `job` ended: announce it if `stage` ended it and
    died before announcing. Returns whether it announced."""
    if job.status not in TERMINAL or job.finished_by != stage or job.finished_announced:
        return False
    check_announcement_due(job, job.status, "job-finished")
    announce_finished(svc, job.job_id, job.status)
    return True


def fail(svc: Stores, job_id: str, code: str, message: str, stage: str) -> bool:
    """Move a job to FAILED with a reason; False if it had already ended."""
    return advance(
        svc, job_id, JobStatus.FAILED, error=JobError(code=code, message=message, stage=stage),
        stage=stage,
    )


def fail_on_last_attempt(svc: Stores, job_id: str, attempt: int, exc: Exception, *, code: str,
                         what: str, stage: str) -> bool:
    """After `exc` on delivery `attempt`: if that was the last one Pub/Sub makes, end the job
    FAILED with the error (rather than leave it waiting for a delivery that never comes) and
    return True; otherwise False, and the caller raises so that Pub/Sub delivers again."""
    if attempt < svc.settings.max_attempts:
        return False
    fail(svc, job_id, code, f"{what} failed {attempt} times; last: {type(exc).__name__}: {exc}",
         stage)
    log.exception("%s failed on its last attempt", what, extra={"job_id": job_id})
    return True


def observe_stage_left(job: Job, entered: JobStatus) -> None:
    """Observe the time `job` spent in the state it was in before it entered `entered`."""
    seen = sorted(job.timestamps.items(), key=lambda kv: kv[1])
    for (state, at), (following, later) in itertools.pairwise(seen):
        if following == entered.value:
            metrics.STAGE_SECONDS.labels(state).observe((later - at).total_seconds())
            return
