"""Routes of the API. Every route but /healthz needs a key (or an allowed ID token); a key
sees only its own jobs (others' are 404); errors are JSON: {"error": {"code", "message"}}."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import tempfile
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from flask import Flask, Response, g, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from audiary.api import schemas
from audiary.api.auth import AuthError, Principal, authenticate, credentials_of
from audiary.api.openapi import openapi_document
from audiary.api.ratelimit import RateLimiter, retry_after_header
from audiary.domain.events import ObjectEvent, notification_message
from audiary.domain.jobs import Job, JobStatus, SourceObject, job_id_for, utcnow
from audiary.domain.notes import Feedback
from audiary.domain.transcript import Transcript, render
from audiary.errors import AudiaryError
from audiary.logs import bind_job
from audiary.messages import inject_trace
from audiary.observability import instrument_flask
from audiary.services.ingest import canonical_key, quarantine_key
from audiary.services.transcription import transcript_key
from audiary.settings import Settings, load_settings
from audiary.wiring import Services, services

log = logging.getLogger(__name__)

SERVICE = "api"

M = TypeVar("M", bound=BaseModel)
API_UPLOADS = "api/"  # inbox/api/<owner id>/<job id>/<file>: uploads that come through the API
# GCS custom metadata is limited to 8 KiB in all; long transcripts go by reference.
METADATA_TEXT_CHARS = 2000
TRANSCRIPT_TYPES = {"json": "application/json", "txt": "text/plain; charset=utf-8",
                    "srt": "application/x-subrip", "vtt": "text/vtt"}


class ApiError(AudiaryError):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def api_object_key(settings: Settings, owner: str, job_id: str, filename: str) -> str:
    safe = re.sub(r"[^\w.-]+", "_", PurePosixPath(filename).name).strip("._") or "audio"
    owner_id = re.sub(r"[^\w-]+", "_", owner)
    return f"{settings.inbox_prefix}{API_UPLOADS}{owner_id}/{job_id}/{safe}"


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
        cost_usd=job.cost_usd,
    )


def _json(model: BaseModel, status: int = 200) -> tuple[Response, int]:
    return Response(model.model_dump_json(), mimetype="application/json"), status


def create_app(settings_source: Callable[[], Settings] = load_settings) -> Flask:
    app = Flask("audiary-api")
    # /metrics is unauthenticated like /healthz: it holds counts, never job content.
    instrument_flask(app, SERVICE, untraced={"healthz"})
    limiters: dict[tuple[float, int], RateLimiter] = {}

    def svc() -> Services:
        return services(settings_source())

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

    @app.get("/v1/openapi.json")
    @authed
    def openapi() -> Response:
        return jsonify(openapi_document())

    @app.post("/v1/uploads")
    @authed
    def create_upload() -> tuple[Response, int]:
        body = _body(schemas.UploadRequest)
        s = svc()
        if body.size_bytes > s.settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"{body.size_bytes} bytes is above the limit of "
                           f"{s.settings.max_upload_bytes} bytes")
        job_id = secrets.token_hex(12)
        bind_job(job_id)
        key = api_object_key(s.settings, g.principal.owner, job_id, body.filename)
        signed = s.blobs.signed_put_url(
            s.settings.uploads_bucket, key, content_type=body.content_type,
            size=body.size_bytes, expires_s=s.settings.upload_url_ttl_s,
        )
        # The job exists from now on, so GET /v1/jobs/{id} works before the upload lands;
        # ingest recognises it by the object name (see services.ingest).
        s.jobs.create_job(Job(
            job_id=job_id, correlation_id=job_id, owner=g.principal.owner,
            source=SourceObject(bucket=s.settings.uploads_bucket, name=key, generation="",
                                size=body.size_bytes, content_type=body.content_type),
        ))
        return _json(schemas.UploadResponse(
            job_id=job_id, upload_url=signed.url, method="PUT", headers=dict(signed.headers),
            expires_at=signed.expires_at, object=f"gs://{s.settings.uploads_bucket}/{key}",
        ), 201)

    @app.post("/v1/jobs")
    @authed
    def create_job() -> tuple[Response, int]:
        body = _body(schemas.JobRequest)
        s = svc()
        if body.audio_url is not None:
            job = _job_from_url(s, g.principal, body.audio_url)
        else:
            job = _job_from_object(s, g.principal, body.object or "")
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
        jobs = svc().jobs.list_jobs(int(limit) + 1, owner=g.principal.owner,
                                    received_before=before)
        page, more = jobs[: int(limit)], len(jobs) > int(limit)
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
        job = own_job(job_id)
        if job.transcript_uri is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no transcript yet")
        s = svc()
        raw = s.blobs.get(s.settings.transcripts_bucket, transcript_key(job_id))
        text = render(Transcript.model_validate_json(raw), fmt)  # type: ignore[arg-type]
        return Response(text, mimetype=TRANSCRIPT_TYPES[fmt])

    @app.get("/v1/jobs/<job_id>/notes")
    @authed
    def get_notes(job_id: str) -> tuple[Response, int]:
        job = own_job(job_id)
        record = svc().notes.get_note(job_id)
        if record is None:
            raise ApiError(409, "not_ready", f"job {job_id} is {job.status}: no note yet")
        return _json(record)

    @app.delete("/v1/jobs/<job_id>")
    @authed
    def delete_job(job_id: str) -> tuple[str, int]:
        _delete_everything(svc(), own_job(job_id))
        return "", 204

    @app.post("/v1/jobs/<job_id>/feedback")
    @authed
    def feedback(job_id: str) -> tuple[Response, int]:
        body = _body(schemas.FeedbackRequest)
        job = own_job(job_id)
        return _json(_store_feedback(svc(), job, body, g.principal), 201)

    @app.post("/v1/webhooks")
    @authed
    def add_webhook() -> tuple[Response, int]:
        from audiary.domain.keys import Webhook
        from audiary.fetch import check_url

        body = _body(schemas.WebhookRequest)
        s = svc()
        try:
            check_url(body.url, allow_http=s.settings.allow_http_urls,
                      allow_private=s.settings.allow_private_urls)
        except AudiaryError as exc:
            raise ApiError(422, "invalid_url", str(exc)) from exc
        hook = Webhook(webhook_id=secrets.token_hex(8), owner=g.principal.owner, url=body.url,
                       secret=secrets.token_urlsafe(32), created_at=utcnow())
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


def _job_from_url(s: Services, principal: Principal, url: str) -> Job:
    from audiary.fetch import fetch_audio

    job_id = secrets.token_hex(12)
    bind_job(job_id)
    name = PurePosixPath(url.split("?", 1)[0]).name or "audio"
    key = api_object_key(s.settings, principal.owner, job_id, name)
    with tempfile.TemporaryDirectory(prefix="audiary-fetch-") as tmp:
        try:
            fetched = fetch_audio(
                url, Path(tmp) / "audio", max_bytes=s.settings.audio_url_max_bytes,
                allow_private=s.settings.allow_private_urls,
                allow_http=s.settings.allow_http_urls,
            )
        except AudiaryError as exc:
            raise ApiError(422, "invalid_audio_url", str(exc)) from exc
        job, _ = s.jobs.create_job(Job(
            job_id=job_id, correlation_id=job_id, owner=principal.owner,
            source=SourceObject(bucket=s.settings.uploads_bucket, name=key, generation="",
                                size=fetched.size, content_type=fetched.content_type),
        ))
        # The upload's notification (GCS, or the local watcher) starts ingest as for any drop.
        s.blobs.upload_file(s.settings.uploads_bucket, key, fetched.path,
                            content_type=fetched.content_type)
    return job


def _job_from_object(s: Services, principal: Principal, name: str) -> Job:
    st = s.settings
    name = name.removeprefix(f"gs://{st.uploads_bucket}/")
    if not name.startswith(st.inbox_prefix) or name.startswith(st.inbox_prefix + API_UPLOADS):
        raise ApiError(422, "invalid_object",
                       f"object must be in gs://{st.uploads_bucket}/{st.inbox_prefix} "
                       f"(and not under {st.inbox_prefix}{API_UPLOADS})")
    info = s.blobs.stat(st.uploads_bucket, name)
    if info is None:
        raise ApiError(422, "invalid_object", f"gs://{st.uploads_bucket}/{name} does not exist")
    job_id = job_id_for(info.bucket, info.key, info.generation)
    bind_job(job_id)
    job, created = s.jobs.create_job(Job(
        job_id=job_id, correlation_id=job_id, owner=principal.owner,
        source=SourceObject(bucket=info.bucket, name=info.key, generation=info.generation,
                            size=info.size, content_type=info.content_type),
    ))
    if not created and job.owner != principal.owner:
        raise ApiError(409, "conflict", "this object is already being processed for someone else")
    if created:  # as GCS would on upload: ingest takes it from here
        data, attributes = notification_message(ObjectEvent(
            info.bucket, info.key, info.generation, info.size, info.content_type))
        # Unlike GCS, this notification can carry the request's trace on to ingest.
        s.publisher.publish(st.topic_audio_uploaded, data, inject_trace(attributes))
    return job


def _delete_everything(s: Services, job: Job) -> None:
    st = s.settings
    s.blobs.delete(job.source.bucket, job.source.name)
    s.blobs.delete(st.uploads_bucket, quarantine_key(st.quarantine_prefix, job.job_id,
                                                       job.source.name))
    for info in s.blobs.list(st.work_bucket, f"{job.job_id}/"):
        s.blobs.delete(st.work_bucket, info.key)
    s.blobs.delete(st.work_bucket, canonical_key(job.job_id))
    s.blobs.delete(st.transcripts_bucket, transcript_key(job.job_id))
    s.notes.delete_note(job.job_id)
    s.jobs.delete_job(job.job_id)
    log.info("deleted job, audio, transcript and note", extra={"job_id": job.job_id})


def _store_feedback(s: Services, job: Job, body: schemas.FeedbackRequest,
                    principal: Principal) -> schemas.FeedbackResponse:
    """Feedback document, a copy of the audio in the userfeedback bucket carrying the
    correction, and the review state on the original upload."""
    st = s.settings
    now = utcnow()
    fb = Feedback(feedback_id=secrets.token_hex(10), job_id=job.job_id, owner=principal.owner,
                  corrected_transcript=body.corrected_transcript, flagged=body.flagged,
                  comment=body.comment, source="api", created_at=now)
    s.notes.put_feedback(fb)
    stamp = now.isoformat()
    dest = f"{job.job_id}/{PurePosixPath(job.source.name).name}"
    if s.blobs.stat(job.source.bucket, job.source.name) is None:
        raise ApiError(409, "audio_gone", "the job's audio no longer exists")
    s.blobs.copy(job.source.bucket, job.source.name, st.feedback_bucket, dest)
    corrected = body.corrected_transcript or ""
    s.blobs.update_metadata(st.feedback_bucket, dest, {
        "corrected_transcript": corrected[:METADATA_TEXT_CHARS],
        "corrected_transcript_truncated": str(len(corrected) > METADATA_TEXT_CHARS).lower(),
        "feedback_id": fb.feedback_id,
        "timestamp": stamp,
    })
    machine = job.text or ""
    s.blobs.update_metadata(job.source.bucket, job.source.name, {
        "transcript": machine[:METADATA_TEXT_CHARS],
        "timestamp": stamp,
        "flagged": str(body.flagged).lower(),
    })
    return schemas.FeedbackResponse(feedback_id=fb.feedback_id, job_id=job.job_id,
                                    feedback_object=f"gs://{st.feedback_bucket}/{dest}")

