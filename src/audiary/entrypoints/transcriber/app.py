"""The transcriber service: Pub/Sub push endpoint around faster-whisper.

- `POST /` takes a push envelope with a chunk task. A malformed envelope gets 400 (Pub/Sub
  does not retry it), in OpenAI's error shape like every error of the service; 204 only once
  the result is stored; an unexpected error gets 500 so Pub/Sub redelivers within the
  subscription's retry policy. A duplicate that meets its job just as the delivery that
  finished it announces the transcript gets 503 (`announcement_pending`, Retry-After), so it
  comes again and announces in case that delivery dies.
- `GET /healthz` answers 200 only once the model is loaded (startup probe), 503 before.
- SIGTERM drains (see drain): gunicorn stops accepting; a chunk in flight is finished within
  `AUDIARY_SHUTDOWN_GRACE_S` or handed back (published again, this delivery acknowledged), and
  a push that arrives while draining is handed back at once, so no attempt is spent.
- `GET /metrics` for Prometheus; each chunk is a span of the trace its message carries.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, Response, jsonify, request

from audiary.entrypoints.transcriber.drain import DRAIN, Drain
from audiary.entrypoints.transcriber.openai import (
    ApiError,
    install_openai_errors,
    openai_blueprint,
)
from audiary.errors import BadEventError
from audiary.observability import metrics, telemetry
from audiary.observability.http import instrument_flask
from audiary.ports import Transcriber
from audiary.services.progress import ANNOUNCE_GRACE_S, AnnouncementPending
from audiary.services.transcription import hand_back, handle_chunk
from audiary.settings import load_settings
from audiary.wire import messages
from audiary.wiring import stores, transcriber

log = logging.getLogger(__name__)

SERVICE = "transcriber"


class ModelHolder:
    """Loads the model in the background so the server can answer health checks meanwhile."""

    def __init__(self, load: Callable[[], Transcriber]) -> None:
        self._model: Transcriber | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._load, args=(load,), daemon=True)
        self._thread.start()

    def _load(self, load: Callable[[], Transcriber]) -> None:
        try:
            self._model = load()
            log.info("model %s loaded", self._model.model_name)
        except BaseException as exc:  # reported by /healthz and every request
            self._error = exc
            log.exception("model failed to load")
        finally:
            self._ready.set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def get(self, timeout: float | None = None) -> Transcriber:
        if not self._ready.wait(timeout):
            raise TimeoutError("the model is still loading")
        if self._model is None:
            raise RuntimeError(f"the model failed to load: {self._error}")
        return self._model

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._model is not None


def create_app(load_model: Callable[[], Transcriber] | None = None,
               drain: Drain = DRAIN) -> Flask:
    """Build the app; the model starts loading at once, in the background. `drain` is the
    process's shutdown state, which SIGTERM begins."""
    settings = load_settings()
    telemetry.setup(SERVICE, settings)
    holder = ModelHolder(load_model or (lambda: transcriber(settings)))
    # Up means ready to transcribe, as /healthz says.
    metrics.SERVICE_UP.labels(SERVICE).set_function(lambda: float(holder.ready))
    # As many as gunicorn has request threads: each push waits on its own chunk.
    chunks = ThreadPoolExecutor(max_workers=settings.transcriber_concurrency,
                                thread_name_prefix="chunk")
    app = Flask("audiary-transcriber")
    instrument_flask(app, SERVICE, untraced={"push", "healthz"})
    app.register_blueprint(openai_blueprint(holder.get, load_settings))
    install_openai_errors(app)  # unknown routes and wrong methods answer as OpenAI's API does

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        if holder.ready:
            return jsonify(status="ok", model=holder.get().model_name), 200
        if holder.error is not None:
            return jsonify(status="error", error=str(holder.error)), 503
        return jsonify(status="loading"), 503

    @app.post("/")
    def push() -> Response | tuple[str, int]:
        body = request.get_json(silent=True)
        try:
            data, attributes, message_id = messages.decode_push(body)
        except BadEventError as exc:
            log.warning("rejecting push: %s", exc)
            return _bad_push(exc)
        current = load_settings()
        with telemetry.consuming(
            SERVICE, "transcribe chunk", attributes, topic=current.topic_transcribe_chunk,
            published_at=messages.publish_time(body),
        ):
            try:
                task = messages.parse_chunk_task(data)
            except BadEventError as exc:
                log.warning("rejecting push: %s", exc)
                return _bad_push(exc)
            svc = stores(current)
            if drain.draining:
                hand_back(svc, task, started=False)
                return "", 204
            # The chunk runs on a thread of its own, in this request's context (its span), so
            # that this handler can stop waiting for it when the process is told to stop.
            running = chunks.submit(
                contextvars.copy_context().run, handle_chunk, svc, holder.get(), task,
                delivery_attempt=messages.delivery_attempt(body))
            try:
                outcome = drain.wait(running, current.shutdown_grace_s)
            except AnnouncementPending as exc:
                # Not a failure: a duplicate met the job just as the delivery that finished it
                # announces it. Deliver again (any answer but 2xx), in case that one dies.
                log.info("chunk %d (message %s): %s; delivering again later", task.index,
                         message_id, exc, extra={"job_id": task.job_id})
                return _deliver_again(exc)
            if outcome is None:  # still running, and the process must stop
                hand_back(svc, task, started=True)
                return "", 204
            log.info(
                "chunk %d (message %s): %s", task.index, message_id, outcome.detail,
                extra={"job_id": task.job_id},
            )
        return "", 204

    return app


def _deliver_again(exc: AnnouncementPending) -> Response:
    """503 with Retry-After: Pub/Sub delivers the message again, after its backoff."""
    response = ApiError(503, str(exc), error_type="server_error",
                        code="announcement_pending").response()
    response.headers["Retry-After"] = str(int(ANNOUNCE_GRACE_S))
    return response


def _bad_push(exc: BadEventError) -> Response:
    """A push Pub/Sub must not retry: 400, in the error shape of every route of the service."""
    return ApiError(400, str(exc), code="bad_push").response()
