"""Routes of the API. Every route but /healthz needs a key (or an allowed ID token); a key
sees only its own jobs (others' are 404); errors are JSON: {"error": {"code", "message"}}."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from audiary.domain.jobs import Job, JobStatus, utcnow
from audiary.domain.keys import Webhook, new_webhook_secret
from audiary.domain.transcript import render
from audiary.entrypoints.api import schemas
from audiary.entrypoints.api.auth import AuthError, Principal, authenticate, credentials_of
from audiary.entrypoints.api.openapi import openapi_document
from audiary.entrypoints.api.ratelimit import RateLimiter, retry_after_header
from audiary.errors import (
    AudiaryError,
    ConflictError,
    InvalidRequestError,
    RequestError,
    TooLargeError,
)
from audiary.observability.http import instrument_flask
from audiary.ports import Stores
from audiary.services import jobs as use_cases
from audiary.services import review
from audiary.settings import Settings, load_settings
from audiary.wiring import stores

log = logging.getLogger(__name__)

SERVICE = "api"

M = TypeVar("M", bound=BaseModel)
# How the job use cases' refusals are answered.
REFUSAL_STATUS: dict[type[RequestError], int] = {
    InvalidRequestError: 422, TooLargeError: 413, ConflictError: 409}
TRANSCRIPT_TYPES = {"json": "application/json", "txt": "text/plain; charset=utf-8",
                    "srt": "application/x-subrip", "vtt": "text/vtt"}


class ApiError(AudiaryError):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"code": code, "message": message}), status


def _body(model: type[M]) -> M:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(422, "invalid_body", problems) from exc


def _view(job: Job) -> schemas.JobView:
    return schemas.JobView(
        job_id=job.job_id, status=job.status.value,
        source=f"gs://{job.source.bucket}/{job.source.name}",
        progress=schemas.Progress(chunks_done=job.chunks_done, chunks_total=job.chunks_total),
        duration_s=job.duration_s, stage_seconds=job.stage_seconds(),
        timestamps=job.timestamps,
        error=schemas.ErrorInfo(**job.error.model_dump()) if job.error else None,
        cost_usd=job.cost_usd, uncertain_segments=job.uncertain_segments,
        transcript_version=job.transcript_version,
    )


WEB = Path(__file__).parent / "web"
WEB_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
             ".png": "image/png", ".svg": "image/svg+xml"}


def _static(name: str, settings: Settings) -> Response:
    """A file of the web page; 404 for anything else (no path outside `web/`)."""
    path = (WEB / name).resolve()
    if path.parent != WEB.resolve() or not path.is_file() or path.suffix not in WEB_TYPES:
        raise ApiError(404, "not_found", f"no page {name}")
    response = Response(path.read_bytes(), mimetype=WEB_TYPES[path.suffix])
    # The page loads nothing from elsewhere but Google's sign-in, where configured; the audio
    # player plays blob: URLs it makes.
    policy = ("default-src 'self'; media-src 'self' blob:; connect-src 'self' *; "
              "img-src 'self' data:")
    if google := _google_origin(settings):  # its script, frame, button images and styles
        policy = (f"default-src 'self' {google}; media-src 'self' blob:; connect-src 'self' *; "
                  f"img-src 'self' data: {google}; style-src 'self' 'unsafe-inline' {google}")
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _google_origin(settings: Settings) -> str:
    """The origin the page's Google sign-in comes from, or "" when it is not configured."""
    if not (settings.web_google_client_id and settings.web_users):
        return ""
    url = urlsplit(settings.web_google_script_url)
    return f"{url.scheme}://{url.netloc}"


def _json(model: BaseModel, status: int = 200) -> tuple[Response, int]:
    return Response(model.model_dump_json(), mimetype="application/json"), status


def create_app(settings_source: Callable[[], Settings] = load_settings) -> Flask:
    app = Flask("audiary-api")
    # /metrics is unauthenticated like /healthz: it holds counts, never job content.
    instrument_flask(app, SERVICE, untraced={"healthz"})
    limiters: dict[tuple[float, int], RateLimiter] = {}

    def svc() -> Stores:
        return stores(settings_source())

    def limiter(s: Settings) -> RateLimiter:
        key = (s.api_rate_per_s, s.api_burst)
        if key not in limiters:
            limiters[key] = RateLimiter(s.api_rate_per_s, s.api_burst)
        return limiters[key]

    def authed(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            s = svc()
            try:
                token = credentials_of(request.headers.get("Authorization"),
                                       request.headers.get("X-API-Key"))
                g.principal = authenticate(token, s.keys, s.settings)
            except AuthError as exc:
                raise ApiError(401, "unauthenticated", str(exc),
                               {"WWW-Authenticate": 'Bearer realm="audiary"'}) from exc
            wait = limiter(s.settings).take(g.principal.owner)
            if wait:
                raise ApiError(429, "rate_limited",
                               f"too many requests; retry in {wait:.1f} s",
                               {"Retry-After": retry_after_header(wait)})
            return view(*args, **kwargs)
        return wrapper

    def own_job(job_id: str) -> Job:
        job = svc().jobs.get_job(job_id)
        principal: Principal = g.principal
        if job is None or job.owner != principal.owner:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return job

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> tuple[Response, int]:
        return _error(REFUSAL_STATUS[type(exc)], exc.code, exc.message)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        response, status = _error(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = _error(exc.code or 500, code, exc.description or code)
        # Keep what werkzeug says besides the body, e.g. `Allow` on a 405.
        response.headers.update(
            (k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return _error(500, "internal", "an internal error occurred; it has been logged")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _json(schemas.Health(status="ok"))

    # The web page: static files, no build step; it signs in with a key and calls /v1.
    @app.get("/")
    def web_page() -> Response:
        return _static("index.html", settings_source())

    @app.get("/web/config")
    def web_config() -> tuple[Response, int]:
        """What the page needs before sign-in: whether (and how) to offer Google sign-in."""
        s = settings_source()
        configured = bool(_google_origin(s))
        return _json(schemas.WebConfig(
            google_client_id=s.web_google_client_id if configured else None,
            google_script_url=s.web_google_script_url if configured else None,
        ))

    @app.get("/web/<path:name>")
    def web_asset(name: str) -> Response:
        return _static(name, settings_source())

    @app.get("/v1/jobs/<job_id>/audio")
    @authed
    def get_audio(job_id: str) -> Response:
        """The job's canonical audio (16 kHz mono WAV), for the page's player."""
        job = own_job(job_id)
        s = svc()
        if job.audio_uri is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no audio yet")
        bucket, key = job.audio_uri.split("/", 1)
        return Response(s.blobs.get(bucket, key), mimetype="audio/wav",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/openapi.json")
    @authed
    def openapi() -> Response:
        return jsonify(openapi_document())

    @app.post("/v1/uploads")
    @authed
    def create_upload() -> tuple[Response, int]:
        body = _body(schemas.UploadRequest)
        s = svc()
        upload = use_cases.create_upload(s, g.principal.owner, body.filename, body.content_type,
                                         body.size_bytes, speaker=body.speaker)
        source = upload.job.source
        return _json(schemas.UploadResponse(
            job_id=upload.job.job_id, upload_url=upload.signed.url, method="PUT",
            headers=dict(upload.signed.headers), expires_at=upload.signed.expires_at,
            object=f"gs://{source.bucket}/{source.name}",
        ), 201)

    @app.post("/v1/jobs")
    @authed
    def create_job() -> tuple[Response, int]:
        body = _body(schemas.JobRequest)
        s = svc()
        if body.audio_url is not None:
            job = use_cases.job_from_url(s, g.principal.owner, body.audio_url)
        else:
            job = use_cases.job_from_object(s, g.principal.owner, body.object or "")
        return _json(_view(job), 202)

    @app.get("/v1/jobs")
    @authed
    def list_jobs() -> tuple[Response, int]:
        limit = request.args.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise ApiError(400, "invalid_query", "limit must be a whole number from 1 to 100")
        before = None
        if token := request.args.get("page_token"):
            try:
                before = datetime.fromisoformat(base64.urlsafe_b64decode(token).decode())
            except ValueError as exc:
                raise ApiError(400, "invalid_query", "page_token is not valid") from exc
        found = svc().jobs.list_jobs(int(limit) + 1, owner=g.principal.owner,
                                     received_before=before)
        page, more = found[: int(limit)], len(found) > int(limit)
        next_token = None
        if more:
            last = page[-1].timestamps[JobStatus.RECEIVED.value].isoformat()
            next_token = base64.urlsafe_b64encode(last.encode()).decode()
        return _json(schemas.JobList(jobs=[_view(j) for j in page], next_page_token=next_token))

    @app.get("/v1/jobs/<job_id>")
    @authed
    def get_job(job_id: str) -> tuple[Response, int]:
        return _json(_view(own_job(job_id)))

    @app.get("/v1/jobs/<job_id>/transcript")
    @authed
    def get_transcript(job_id: str) -> Response:
        fmt = request.args.get("format", "json")
        if fmt not in TRANSCRIPT_TYPES:
            raise ApiError(400, "invalid_query", "format must be one of json, txt, srt, vtt")
        version = request.args.get("version", "")
        if version and not version.isdigit():
            raise ApiError(400, "invalid_query", "version must be a whole number")
        job = own_job(job_id)
        if job.transcript_uri is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no transcript yet")
        transcript = use_cases.load_transcript(svc(), job, int(version) if version else None)
        text = render(transcript, fmt)  # type: ignore[arg-type]
        return Response(text, mimetype=TRANSCRIPT_TYPES[fmt])

    @app.get("/v1/jobs/<job_id>/notes")
    @authed
    def get_notes(job_id: str) -> tuple[Response, int]:
        job = own_job(job_id)
        record = svc().notes.get_note(job_id)
        if record is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no note yet")
        return _json(record)

    @app.post("/v1/jobs/<job_id>/notes")
    @authed
    def write_notes_again(job_id: str) -> tuple[Response, int]:
        version = use_cases.summarize_again(svc(), own_job(job_id))
        return _json(schemas.SummarizeAgain(job_id=job_id, transcript_version=version), 202)

    @app.delete("/v1/jobs/<job_id>")
    @authed
    def delete_job(job_id: str) -> tuple[str, int]:
        use_cases.delete_job(svc(), own_job(job_id))
        return "", 204

    @app.post("/v1/jobs/<job_id>/feedback")
    @authed
    def feedback(job_id: str) -> tuple[Response, int]:
        body = _body(schemas.FeedbackRequest)
        job = own_job(job_id)
        if (body.segments or body.flagged_segments) and job.transcript_uri is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no transcript yet")
        stores_ = svc()
        if body.flagged_segments:
            count = len(use_cases.load_transcript(stores_, job).segments)
            if bad := [i for i in body.flagged_segments if not 0 <= i < count]:
                raise ApiError(422, "invalid_segment", f"the transcript has segments 0 to "
                               f"{count - 1}; no segment {bad[0]}")
        stored = use_cases.store_feedback(
            stores_, job, g.principal.owner, corrected_transcript=body.corrected_transcript,
            flagged=body.flagged, comment=body.comment,
            segment_edits={e.index: e.text for e in body.segments or []},
            flagged_segments=body.flagged_segments)
        queued = []
        if (body.flagged or body.flagged_segments) and job.transcript_uri is not None:
            fresh = stores_.jobs.get_job(job.job_id) or job
            queued = review.queue_flags(stores_, fresh, whole=body.flagged,
                                        segments=body.flagged_segments)
        return _json(schemas.FeedbackResponse(
            feedback_id=stored.feedback.feedback_id, job_id=job.job_id,
            feedback_object=stored.feedback_object,
            transcript_version=stored.feedback.transcript_version,
            review_items=[item.item_id for item in queued]), 201)

    @app.post("/v1/webhooks")
    @authed
    def add_webhook() -> tuple[Response, int]:
        body = _body(schemas.WebhookRequest)
        s = svc()
        try:
            s.urls.check(body.url)
        except AudiaryError as exc:
            raise ApiError(422, "invalid_url", str(exc)) from exc
        hook = Webhook(webhook_id=secrets.token_hex(8), owner=g.principal.owner, url=body.url,
                       secret=new_webhook_secret(), created_at=utcnow())
        s.keys.put_webhook(hook)
        return _json(schemas.WebhookCreated(**hook.model_dump()), 201)

    @app.get("/v1/webhooks")
    @authed
    def list_webhooks() -> tuple[Response, int]:
        hooks = svc().keys.list_webhooks(g.principal.owner)
        return _json(schemas.WebhookList(
            webhooks=[schemas.WebhookView(**h.model_dump()) for h in hooks]))

    @app.delete("/v1/webhooks/<webhook_id>")
    @authed
    def delete_webhook(webhook_id: str) -> tuple[str, int]:
        if not svc().keys.delete_webhook(g.principal.owner, webhook_id):
            raise ApiError(404, "not_found", f"no webhook {webhook_id}")
        return "", 204

    return app
