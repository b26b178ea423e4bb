"""Every log line of a process is one Cloud Logging JSON object: Audiary's, libraries',
gunicorn's, Python warnings and uncaught exceptions, with tracebacks on the same line."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from audiary.observability import telemetry
from audiary.observability.logs import (
    SOURCE_FIELD,
    SPAN_FIELD,
    TRACE_FIELD,
    JsonFormatter,
    StderrHandler,
    dict_config,
    setup_logging,
)
from audiary.settings import Settings

NAMES = ("", "audiary", "gunicorn.error", "gunicorn.access", "py.warnings", "google")


@pytest.fixture(autouse=True)
def _logging_state() -> Iterator[None]:
    """Each test starts from, and leaves behind, the logging configuration it found."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in NAMES}
    hooks = (sys.excepthook, threading.excepthook)
    yield
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed; fails on the first line that is not a JSON object with a severity."""
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert entry["severity"], line
        entries.append(entry)
    return entries


def test_a_record_carries_severity_time_source_and_its_traceback_on_one_line():
    logger = logging.getLogger("urllib3.connectionpool")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 7, "failed %s",
                                   ("x",), sys.exc_info(), func="fetch")
    line = JsonFormatter("p").format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert entry["logger"] == "urllib3.connectionpool"
    assert entry["time"].endswith("+00:00")
    assert entry[SOURCE_FIELD] == {"file": __file__, "line": "7", "function": "fetch"}
    # Error Reporting finds the stack in the message; it is also a field of its own.
    assert entry["message"].startswith("failed x\nTraceback (most recent call last):")
    assert entry["message"].endswith("ValueError: boom")
    assert entry["stack_trace"] == entry["message"].removeprefix("failed x\n")


def test_setup_sends_libraries_warnings_and_gunicorn_to_one_json_handler(capsys):
    telemetry.setup("tests", Settings())  # the tracer provider, for the span below
    logging.getLogger().handlers.clear()
    logging.basicConfig()  # a console handler someone else put on the root logger
    gunicorn = logging.getLogger("gunicorn.error")
    own = logging.StreamHandler(sys.stderr)
    own._gunicorn = True  # type: ignore[attr-defined]  # as gunicorn's Logger.setup marks it
    gunicorn.addHandler(own)
    gunicorn.propagate = False
    # What google-auth and google-api-core do to an unconfigured "google" logger.
    logging.getLogger("google").setLevel(logging.NOTSET)
    logging.getLogger("google").propagate = False
    setup_logging(project="p")
    setup_logging(project="p")  # again: nothing is added twice

    root = logging.getLogger()
    assert [type(h) for h in root.handlers if type(h) in (StderrHandler,
                                                          logging.StreamHandler)] == [
        StderrHandler]
    logging.getLogger("audiary.x").info("ours")
    logging.getLogger("werkzeug").info("a request line")
    logging.getLogger("google.auth").warning("a library's")
    gunicorn.info("Booting worker with pid: 1")
    warnings.warn("old API", DeprecationWarning, stacklevel=1)
    with telemetry.tracer().start_as_current_span("work") as span:
        logging.getLogger("audiary.x").info("in a span")
    entries = json_lines(capsys.readouterr().err)

    assert [(e["logger"], e["message"].splitlines()[0]) for e in entries][:4] == [
        ("audiary.x", "ours"), ("werkzeug", "a request line"), ("google.auth", "a library's"),
        ("gunicorn.error", "Booting worker with pid: 1")]
    [warning] = [e for e in entries if e["logger"] == "py.warnings"]
    assert warning["severity"] == "WARNING"
    assert "DeprecationWarning: old API" in warning["message"]
    ids = span.get_span_context()
    [in_span] = [e for e in entries if e["message"] == "in a span"]
    assert in_span[TRACE_FIELD] == f"projects/p/traces/{ids.trace_id:032x}"
    assert in_span[SPAN_FIELD] == f"{ids.span_id:016x}"


def test_an_uncaught_exception_in_a_thread_is_one_json_line(capsys):
    telemetry.setup("tests", Settings())
    setup_logging()

    def crash() -> None:
        raise RuntimeError("lost")

    thread = threading.Thread(target=crash, name="worker-1")
    thread.start()
    thread.join()
    [entry] = [e for e in json_lines(capsys.readouterr().err)
               if e["logger"] == "audiary.uncaught"]
    assert entry["severity"] == "ERROR"
    assert entry["message"].startswith("uncaught RuntimeError in thread worker-1\nTraceback")
    assert "RuntimeError: lost" in entry["stack_trace"]


def test_the_gunicorn_dict_config_routes_gunicorns_loggers_to_the_root(capsys):
    logging.config.dictConfig(dict_config("p"))
    assert logging.getLogger("google").propagate
    access = logging.getLogger("gunicorn.access")
    assert access.handlers == []
    assert access.propagate
    # gunicorn logs an access line with its atoms as the one argument.
    access.info('%(h)s "%(r)s" %(s)s', {"h": "127.0.0.1", "r": "GET /healthz HTTP/1.1",
                                        "s": "200"})
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["logger"] == "gunicorn.access"
    assert entry["message"] == '127.0.0.1 "GET /healthz HTTP/1.1" 200'
