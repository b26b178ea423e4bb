"""JSON-lines logging that Cloud Logging understands: `severity`, `message`, `time`, the
source location, the trace fields of the active span, and the job id as correlation id on every
line that concerns a job.

`setup_logging` gives the root logger the one handler of the process, so every line is JSON:
Audiary's own, gunicorn's (error and access logs), Flask's and functions-framework's, those of
libraries (werkzeug, urllib3, google-*, opentelemetry) and Python warnings. A traceback is part
of its line's `message` (where Error Reporting looks for it) and also in `stack_trace`. gunicorn
configures its loggers before an application is loaded: `dict_config` is the same setup as a
`logconfig_dict` (see entrypoints/transcriber/gunicorn_conf.py).

The job id comes from `extra={"job_id": ...}` or, for every other line, from the job being
handled in this context (`job_context`), so lines of library code inside a handler carry it too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({})))
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"
LABELS_FIELD = "logging.googleapis.com/labels"
# Libraries whose lines go to the root handler at INFO; gunicorn's loggers keep gunicorn's level.
ROOT_LEVEL = logging.INFO
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")
# Google's client libraries stop their "google" logger from propagating unless it has been
# configured (a level, a handler) before they look; a level set here keeps their lines flowing.
GOOGLE_LOGGER = "google"

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
        message = record.getMessage()
        stack = self._stack(record)
        entry: dict[str, object] = {
            "severity": record.levelname if record.levelno else "DEFAULT",
            "message": f"{message}\n{stack}" if stack else message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            SOURCE_FIELD: {"file": record.pathname, "line": str(record.lineno),
                           "function": record.funcName},
        }
        if stack:
            entry["stack_trace"] = stack
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id:
            entry[LABELS_FIELD] = {"job_id": job_id}
            entry["job_id"] = job_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid and self.project:
            entry[TRACE_FIELD] = f"projects/{self.project}/traces/{span.trace_id:032x}"
            entry[SPAN_FIELD] = f"{span.span_id:016x}"
            entry[SAMPLED_FIELD] = span.trace_flags.sampled
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry and key != "job_id":
                entry[key] = value
        return json.dumps(entry, default=str)

    def _stack(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


class StderrHandler(logging.Handler):
    """Writes each record as one line to `sys.stderr` as it is when the record is emitted (a
    test's capture, functions-framework's execution-id wrapper), not as it was at setup."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def dict_config(project: str | None = None) -> dict[str, Any]:
    """`logging.config.dictConfig` settings (and gunicorn's `logconfig_dict`) that send every
    logger, gunicorn's included, to one JSON handler on the root logger."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "project": project}},
        "handlers": {"stderr": {"()": StderrHandler, "formatter": "json"}},
        "root": {"level": logging.getLevelName(ROOT_LEVEL), "handlers": ["stderr"]},
        # Their level stays what gunicorn sets (its --log-level); only the handlers go.
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in GUNICORN_LOGGERS},
            GOOGLE_LOGGER: {"level": logging.getLevelName(ROOT_LEVEL), "propagate": True},
        },
    }


def setup_logging(level: int = logging.INFO, *, project: str | None = None) -> None:
    """Make every log line of this process a JSON line on stderr (cheap to call again).

    The root logger gets one `StderrHandler` with a `JsonFormatter` (or keeps the one it has,
    e.g. from `dict_config`); console handlers others put there (functions-framework's,
    `logging.basicConfig`'s) are removed, so no line is written twice or as text. gunicorn's
    loggers lose their own handlers and propagate, and so does Google's libraries' "google"
    logger (which they stop from propagating); warnings are captured; uncaught exceptions,
    also in threads, are logged as one line each. `level` is that of the `audiary` loggers;
    `project` (the Google Cloud project id) is needed for the trace fields, and a later call
    may supply it.
    """
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers
                      if isinstance(h.formatter, JsonFormatter)), None)
    if formatter is None:
        for handler in list(root.handlers):
            if type(handler) is logging.StreamHandler:
                root.removeHandler(handler)
        formatter = JsonFormatter(project)
        handler = StderrHandler()
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.setLevel(ROOT_LEVEL)
    if project:
        formatter.project = project
    audiary = logging.getLogger("audiary")
    audiary.setLevel(level)
    audiary.propagate = True
    for name in GUNICORN_LOGGERS:
        gunicorn = logging.getLogger(name)
        for handler in list(gunicorn.handlers):
            if getattr(handler, "_gunicorn", False):  # what gunicorn's Logger.setup adds
                gunicorn.removeHandler(handler)
        gunicorn.propagate = True
    google = logging.getLogger(GOOGLE_LOGGER)
    if google.level == logging.NOTSET:
        google.setLevel(ROOT_LEVEL)
    google.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("audiary.uncaught").critical("uncaught %s", kind.__name__,
                                                   exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as threading's own hook: a thread may end itself so
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("audiary.uncaught").error(
        "uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=args.exc_value)
