"""How gunicorn serves the transcriber, in the image and in the native stack alike:

    gunicorn --config python:audiary.entrypoints.transcriber.gunicorn_conf --bind :$PORT
        'main:create_app()'

One worker holds the model; `AUDIARY_TRANSCRIBER_CONCURRENCY` threads serve pushes at once.
On SIGTERM (Cloud Run scale-in, 10 s before the kill) requests in flight get
`graceful_timeout`, within which each push handler finishes its chunk or hands it back (see
drain). Every line gunicorn logs, its access log too, is a Cloud Logging JSON line from the
first one on (`logconfig_dict`, audiary.observability.logs), in the master as in the worker.
"""

from __future__ import annotations

from typing import Any

from audiary.entrypoints.transcriber.drain import install_sigterm_hook
from audiary.observability import logs
from audiary.settings import load_settings

_settings = load_settings()
workers = 1
# Each thread serves one push at a time; their chunks share model calls (WindowBatcher).
threads = _settings.transcriber_concurrency
timeout = 0  # a chunk may take minutes; Pub/Sub's ack deadline bounds it
# Below Cloud Run's 10 s: handlers give up at AUDIARY_SHUTDOWN_GRACE_S (7 s) and answer.
graceful_timeout = 9
# Above the longest retry backoff (30 s locally): the Pub/Sub emulator stops redelivering a
# failed push when it has to reconnect to a server that closed the idle connection (see
# audiary.local.emulators).
keepalive = 75
# Also turns the access log on (one line per request, through the same JSON handler).
logconfig_dict = logs.dict_config(_settings.project_id)


def post_worker_init(worker: Any) -> None:
    """gunicorn has installed the worker's signal handlers: chain the drain onto SIGTERM."""
    install_sigterm_hook()
