"""JSON-lines logging that Cloud Logging understands: `severity`, `message`, the trace fields
of the active span, and the job id as correlation id on every line that concerns a job.

The job id comes from `extra={"job_id": ...}` or, for every other line, from the job being
handled in this context (`job_context`), so lines of library code inside a handler carry it too.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({})))
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"

JOB_ID: ContextVar[str | None] = ContextVar("audiary_job_id", default=None)
"""The job being handled in this context (thread or task); None outside a handler."""


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Tag log lines (and the active span) with `job_id` until the block ends."""
    token = JOB_ID.set(job_id) if job_id else None
    if job_id:
        trace.get_current_span().set_attribute("audiary.job_id", job_id)
    try:
        yield
    finally:
        if token is not None:
            JOB_ID.reset(token)


def bind_job(job_id: str) -> None:
    """Tag the rest of the current handling scope with `job_id`.

    For code that learns the job id midway through a scope that resets `JOB_ID` when it ends
    (an HTTP request); elsewhere use `job_context`.
    """
    JOB_ID.set(job_id)
    trace.get_current_span().set_attribute("audiary.job_id", job_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `project` turns trace ids into Cloud Trace resource names."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id:
            entry["logging.googleapis.com/labels"] = {"job_id": job_id}
            entry["job_id"] = job_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid and self.project:
            entry[TRACE_FIELD] = f"projects/{self.project}/traces/{span.trace_id:032x}"
            entry[SPAN_FIELD] = f"{span.span_id:016x}"
            entry[SAMPLED_FIELD] = span.trace_flags.sampled
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and key != "job_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: int = logging.INFO, *, project: str | None = None) -> None:
    """Send the `audiary` loggers to stderr as JSON lines (once per process).

    `project` (the Google Cloud project id) is needed for the trace fields; a later call may
    supply it.
    """
    logger = logging.getLogger("audiary")
    for handler in logger.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            if project:
                handler.formatter.project = project
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(project))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
