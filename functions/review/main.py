"""Cloud Function `review`: the review desk's receiver and the periodic sync.

- `POST /label-studio`: Label Studio's webhook (ANNOTATION_CREATED / ANNOTATION_UPDATED /
  TASKS_DELETED), with the shared secret in `X-Audiary-Review-Secret`: each annotation becomes
  a correction (see audiary.services.review).
- `POST /sync`: sends queued items as tasks and applies annotations a webhook missed. Cloud
  Scheduler calls it every minute with an ID token of its service account; the native stack's
  `audiary.local.scheduler` sends the shared secret instead.

Label Studio cannot present a Google identity, so the function is open to the internet (like
the API) and checks every request itself.
"""

from __future__ import annotations

import hmac
import logging

import flask
import functions_framework

from audiary.errors import ReviewDeskError
from audiary.observability import telemetry
from audiary.services.review import SECRET_HEADER, receive, sync
from audiary.settings import Settings, load_settings
from audiary.wiring import review_desk, stores

log = logging.getLogger("audiary.functions.review")
SERVICE = "review"

telemetry.setup_in_workers(SERVICE)


def _error(status: int, code: str, message: str) -> flask.typing.ResponseReturnValue:
    return flask.jsonify(error={"code": code, "message": message}), status


def _has_secret(request: flask.Request, settings: Settings) -> bool:
    sent = request.headers.get(SECRET_HEADER, "")
    return settings.review_secret is not None and bool(sent) and hmac.compare_digest(
        sent.encode(), settings.review_secret.get_secret_value().encode())


def _scheduler_token(request: flask.Request, settings: Settings) -> bool:
    """A Google-signed ID token of one of `AUDIARY_REVIEW_SYNC_ACCOUNTS` (Cloud Scheduler's
    OIDC call), for the audience `AUDIARY_REVIEW_URL`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not settings.review_sync_accounts or not settings.review_url:
        return False
    import google.auth.transport.requests
    from google.oauth2 import id_token

    try:
        claims = id_token.verify_token(token, google.auth.transport.requests.Request(),
                                       audience=settings.review_url,
                                       certs_url=settings.google_certs_url)
    except ValueError as exc:
        log.warning("sync refused: %s", exc)
        return False
    return bool(claims.get("email_verified")) and claims.get("email") in (
        settings.review_sync_accounts)


@functions_framework.http
def review(request: flask.Request) -> flask.typing.ResponseReturnValue:
    settings = load_settings()
    if request.method != "POST":
        return _error(405, "method_not_allowed", "POST /label-studio or /sync")
    path = request.path.rstrip("/")
    if path.endswith("/label-studio"):
        if not _has_secret(request, settings):
            return _error(401, "unauthenticated",
                          f"the webhook must carry the shared secret in {SECRET_HEADER}")
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return _error(400, "invalid_json", "the webhook body is not a JSON object")
        applied = receive(stores(settings), payload)
        log.info("webhook %s: %s %s", payload.get("action"), applied.outcome, applied.detail)
        status = 422 if applied.outcome == "invalid" else 200
        return flask.jsonify(outcome=applied.outcome, detail=applied.detail,
                             transcript_version=applied.transcript_version), status
    if path.endswith("/sync"):
        if not (_has_secret(request, settings) or _scheduler_token(request, settings)):
            return _error(401, "unauthenticated", "the sync needs the shared secret or an ID "
                          "token of a service account in AUDIARY_REVIEW_SYNC_ACCOUNTS")
        if not settings.label_studio_url:
            return flask.jsonify(skipped="Label Studio is not configured "
                                 "(AUDIARY_LABEL_STUDIO_URL)"), 200
        try:
            report = sync(stores(settings), review_desk(settings))
        except ReviewDeskError as exc:
            log.warning("sync failed: %s", exc)
            return _error(502, "review_desk_unavailable", str(exc))
        log.info("sync: %d sent, %s, %d dropped, %d audio URLs signed again, %d waiting",
                 len(report.sent), report.outcomes, len(report.dropped), report.resigned,
                 report.queue_depth)
        return flask.jsonify(sent=report.sent, outcomes=report.outcomes,
                             dropped=report.dropped, resigned=report.resigned,
                             queue_depth=report.queue_depth), 200
    return _error(404, "not_found", f"no route {request.path}; POST /label-studio or /sync")
