"""Signed webhook deliveries: POST an event to a user's URL, retry what may succeed later,
dead-letter what never does.

Signing: Standard Webhooks
--------------------------
Deliveries are signed as https://www.standardwebhooks.com/ specifies, by the
`standardwebhooks` library, so any Standard Webhooks verifier, in any language, checks them.
Every delivery carries:

    Content-Type: application/json
    webhook-id: <id>                    the same on every attempt of one event
    webhook-timestamp: 1717171717       Unix seconds when this attempt was signed
    webhook-signature: v1,<base64>      HMAC-SHA256 of f"{id}.{timestamp}.{body}"

Binding the timestamp into the MAC lets a receiver refuse a captured delivery replayed later
(verifiers refuse one more than 5 minutes off). Each retry is signed again with a fresh
timestamp; use `webhook-id` to ignore an event you already processed.

The secret returned at registration is `whsec_<base64>`; the key is the bytes it encodes.
Secrets registered before have no prefix: their key is their own UTF-8 bytes, and their
`whsec_` form for a verifier is `"whsec_" + base64(secret)` (see `audiary.domain.keys`;
given the bare old secret, a verifier would base64-decode it into another key).

Verify over the raw body bytes, before parsing the JSON (parsing and re-serialising can change
them), for example:

    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    def verify_webhook(secret: str, headers, body: bytes) -> bool:
        try:
            Webhook(secret).verify(body, dict(headers))
        except WebhookVerificationError:
            return False
        return True

Deprecated: the Audiary-* headers
---------------------------------
For this one version every delivery also carries the headers of the earlier scheme
(`DEPRECATED_HEADERS`), computed as before; the Audiary-* headers will be dropped in the next
version:

    Audiary-Timestamp: 1717171717       as webhook-timestamp
    Audiary-Signature: v1=<hex>         HMAC-SHA256 of f"{timestamp}." + body
    Audiary-Delivery: <id>              as webhook-id

Their key is the secret's UTF-8 bytes exactly as it was given, `whsec_` included. The check
they were documented with:

    import hashlib
    import hmac
    import time

    def verify_audiary_webhook(secret: bytes, headers, body: bytes) -> bool:
        timestamp = headers.get("Audiary-Timestamp", "")
        signature = headers.get("Audiary-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return False
        if abs(time.time() - int(timestamp)) > 300:
            return False  # older than 5 minutes (or from the future): maybe a replay
        mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(f"v1={mac.hexdigest()}".encode(), signature.encode())

Retries
-------
Delivery succeeds on any 2xx answer. Connection errors, timeouts, 429 and 5xx are retried
with exponential backoff and jitter (a 429's Retry-After is honoured); other answers,
redirects included, are final: following a redirect would send the event somewhere the user
did not register.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tenacity import RetryCallState, Retrying, retry_if_result, wait_exponential_jitter

from audiary.adapters.retry_after import parse_retry_after
from audiary.adapters.url_fetcher import SafeUrlFetcher
from audiary.domain.keys import standard_webhook_secret
from audiary.errors import FetchError, UnsafeUrlError
from audiary.ports import DeliveryResult, WebhookSender
from audiary.wire.messages import canonical_json

__all__ = [
    "DEPRECATED_HEADERS",
    "LEGACY_DELIVERY_HEADER",
    "LEGACY_SIGNATURE_HEADER",
    "LEGACY_TIMESTAMP_HEADER",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "HttpWebhookSender",
    "deliver",
    "sign",
    "sign_legacy",
    "signed_headers",
    "verify",
    "verify_legacy",
]

log = logging.getLogger(__name__)

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
LEGACY_TIMESTAMP_HEADER = "Audiary-Timestamp"
LEGACY_SIGNATURE_HEADER = "Audiary-Signature"
LEGACY_DELIVERY_HEADER = "Audiary-Delivery"
# Sent beside the Standard Webhooks headers for one version, then dropped.
DEPRECATED_HEADERS = (LEGACY_TIMESTAMP_HEADER, LEGACY_SIGNATURE_HEADER, LEGACY_DELIVERY_HEADER)
LEGACY_SIGNATURE_VERSION = "v1"
USER_AGENT = "audiary-webhooks/1"


def _signer(secret: bytes) -> Webhook:
    # Always the whsec_ form: handed an old secret as a string, the library would base64-decode
    # it (dropping its - and _) into a key no receiver has.
    return Webhook(standard_webhook_secret(secret))


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) of one attempt, made by the library."""
    return _signer(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def verify(secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the Standard Webhooks headers sign `body` with `secret`, checked by the library
    (which also refuses a timestamp more than 5 minutes from now)."""
    try:
        _signer(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: malformed headers or body
        return False
    return True


def sign_legacy(secret: bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `timestamp.body` (the deprecated `Audiary-Signature`, without `v1=`)."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_legacy(
    secret: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = 300,
) -> bool:
    """Whether the deprecated Audiary-* headers sign `body` with `secret` at a time within
    `tolerance_s` of `now`."""
    if not timestamp_header or not signature_header:
        return False
    if not (timestamp_header.isascii() and timestamp_header.isdigit()):
        return False
    timestamp = int(timestamp_header)
    # Future timestamps are refused too: otherwise a forged-clock delivery stays valid forever.
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = f"{LEGACY_SIGNATURE_VERSION}={sign_legacy(secret, timestamp, body)}"
    return hmac.compare_digest(expected.encode(), signature_header.encode())


def signed_headers(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one attempt: Standard Webhooks, and the deprecated Audiary-*."""
    return {
        WEBHOOK_ID_HEADER: delivery_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: sign(secret, delivery_id, timestamp, body),
        LEGACY_TIMESTAMP_HEADER: str(timestamp),
        LEGACY_SIGNATURE_HEADER:
            f"{LEGACY_SIGNATURE_VERSION}={sign_legacy(secret, timestamp, body)}",
        LEGACY_DELIVERY_HEADER: delivery_id,
    }


@dataclass(frozen=True)
class _Outcome:
    """One attempt: the receiver's status, or the transport error that prevented one."""

    status: int | None = None
    error: str | None = None
    transient: bool = False
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return self.transient
        return self.status == 429 or self.status >= 500


def deliver(
    url: str,
    payload: Mapping[str, Any],
    secret: bytes,
    *,
    attempts: int = 5,
    timeout_s: float = 10,
    client: httpx.Client | None = None,
    send: Send | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.time,
    max_wait_s: float = 60,
    delivery_id: str | None = None,
) -> DeliveryResult:
    """POST `payload` as signed JSON to `url`, retrying transient failures; never raises for them.

    `secret` is the webhook's secret as its owner was given it, encoded (`whsec_...` or one
    from before the prefix); every attempt carries the headers of `signed_headers`.

    Waits between attempts grow exponentially (1 s, 2 s, 4 s ... plus up to 1 s of jitter, at
    most `max_wait_s`). A 429 waits its Retry-After instead; one longer than `max_wait_s` ends
    the delivery, since retrying sooner would ignore the receiver. `send` makes one POST (the
    default uses `client`, or a client of its own); `sleep` and `now` are injectable for tests;
    `delivery_id` defaults to a random id.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if not secret:
        raise ValueError("a webhook secret may not be empty")
    body = canonical_json(payload)
    delivery_id = delivery_id or uuid.uuid4().hex
    backoff = wait_exponential_jitter(initial=1, max=max_wait_s, jitter=1)

    def wait(state: RetryCallState) -> float:
        retry_after = _outcome(state).retry_after_s
        return backoff(state) if retry_after is None else retry_after

    def stop(state: RetryCallState) -> bool:
        retry_after = _outcome(state).retry_after_s
        asks_too_long = retry_after is not None and retry_after > max_wait_s
        return state.attempt_number >= attempts or asks_too_long

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "webhook %s to %s failed on attempt %d (%s); retrying in %.1f s",
            delivery_id,
            _origin(url),
            state.attempt_number,
            _reason(_outcome(state)),
            state.upcoming_sleep,
        )

    retrying = Retrying(
        retry=retry_if_result(lambda outcome: outcome.retryable),
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=_outcome,  # out of attempts: report the last one
    )
    own_client = client is None and send is None
    http = httpx.Client(follow_redirects=False) if client is None else client
    try:
        outcome: _Outcome = retrying(
            _attempt, send or _client_send(http), url, body, secret, delivery_id, timeout_s,
            now, max_wait_s,
        )
    finally:
        if own_client:
            http.close()
    tries = int(retrying.statistics.get("attempt_number", 1))
    if outcome.delivered:
        log.info("webhook %s delivered to %s on attempt %d", delivery_id, _origin(url), tries)
    else:
        log.error(
            "webhook %s to %s not delivered after %d attempts (%s)",
            delivery_id,
            _origin(url),
            tries,
            _reason(outcome),
        )
    return DeliveryResult(
        delivered=outcome.delivered,
        attempts=tries,
        last_status=outcome.status,
        last_error=None if outcome.delivered else _reason(outcome),
        delivery_id=delivery_id,
    )


# One POST: (url, body, headers, timeout) -> (status, Retry-After header or None).
Send = Callable[[str, bytes, Mapping[str, str], float], tuple[int, str | None]]


def _client_send(client: httpx.Client) -> Send:
    def send(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
             ) -> tuple[int, str | None]:
        # Streamed and closed unread: only the status matters, and a receiver must not be
        # able to make us buffer a huge answer.
        with client.stream(
            "POST", url, content=body, headers=dict(headers), timeout=timeout_s,
            follow_redirects=False,  # even on a caller's client that follows them
        ) as response:
            return response.status_code, response.headers.get("retry-after")

    return send


def _attempt(
    send: Send,
    url: str,
    body: bytes,
    secret: bytes,
    delivery_id: str,
    timeout_s: float,
    now: Callable[[], float],
    max_wait_s: float,
) -> _Outcome:
    # Signed per attempt: a retry minutes later must still pass the receiver's 5-minute window.
    timestamp = int(now())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(secret, delivery_id, timestamp, body),
    }
    try:
        status, retry_after = send(url, body, headers, timeout_s)
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        return _Outcome(error=f"{type(exc).__name__}: {exc}", transient=True)
    except UnsafeUrlError as exc:  # refused when checked again: retrying cannot help
        return _Outcome(error=str(exc))
    except FetchError as exc:  # no checked address accepted the connection, the name is gone
        return _Outcome(error=str(exc), transient=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _Outcome(error=f"{type(exc).__name__}: {exc}")
    if status != 429:
        return _Outcome(status=status)
    wait_s = parse_retry_after(retry_after, now())
    if wait_s is not None and wait_s > max_wait_s:
        return _Outcome(status=status, retry_after_s=wait_s, error=f"Retry-After {wait_s:g} s")
    return _Outcome(status=status, retry_after_s=wait_s)


def _outcome(state: RetryCallState) -> _Outcome:
    assert state.outcome is not None  # tenacity calls wait/stop/callbacks after an attempt
    outcome: _Outcome = state.outcome.result()
    return outcome


def _reason(outcome: _Outcome) -> str:
    if outcome.status is None:
        return outcome.error or "no answer"
    reason = f"HTTP {outcome.status}"
    return f"{reason}, {outcome.error}" if outcome.error else reason


def _origin(url: str) -> str:
    """Scheme and host only: webhook paths and queries often hold tokens."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


class HttpWebhookSender(WebhookSender):
    """`deliver` behind the `WebhookSender` port. Every attempt checks the URL again (a name
    that was public at registration may point somewhere private since) and connects to an
    address that check found, never to a fresh DNS answer (no DNS rebinding)."""

    def __init__(self, urls: SafeUrlFetcher, *, attempts: int = 5, timeout_s: float = 10) -> None:
        self.urls = urls
        self.attempts = attempts
        self.timeout_s = timeout_s

    def deliver(
        self, url: str, payload: Mapping[str, Any], secret: bytes, *, delivery_id: str
    ) -> DeliveryResult:
        try:
            self.urls.check(url)
        except FetchError as exc:  # refused, or the name does not resolve (any more)
            return DeliveryResult(delivered=False, attempts=0, last_status=None,
                                  last_error=str(exc), delivery_id=delivery_id)
        return deliver(url, payload, secret, attempts=self.attempts, timeout_s=self.timeout_s,
                       delivery_id=delivery_id, send=self.urls.post)
