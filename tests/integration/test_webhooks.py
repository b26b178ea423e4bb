"""Webhook deliveries to a real receiver on 127.0.0.1 that checks signatures with its own code.

The receiver runs the two snippets of the `audiary.adapters.webhook_sender` docstring, copied
here rather than imported: `verify_webhook` (the `standardwebhooks` library, on the
Standard Webhooks headers) and `verify_audiary_webhook` (the deprecated Audiary-* headers). They
are what a user would paste, and tests keep the copies equal to the documentation. A secret
from before the `whsec_` prefix reaches the library in the form the documentation gives
(`whsec_form`, also written out here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import itertools
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import audiary.adapters.webhook_sender
from audiary.adapters.memory import MemoryPublisher
from audiary.adapters.webhook_sender import (
    DEPRECATED_HEADERS,
    deliver,
    sign,
    sign_legacy,
    signed_headers,
    verify,
    verify_legacy,
)
from audiary.domain.keys import new_webhook_secret, standard_webhook_secret
from audiary.entrypoints.api.schemas import WebhookEvent
from audiary.ports import DeliveryResult, Stores
from audiary.services.notify import (
    WEBHOOK_DEAD_LETTER_TOPIC as TOPIC_DEAD,
)
from audiary.services.notify import NotifyOutcome, dead_letter, fan_out
from audiary.services.notify import deliver as deliver_one
from audiary.wire.messages import JobFinished, parse_webhook_delivery

pytestmark = pytest.mark.integration

SECRET = new_webhook_secret().encode()
# A secret as registrations made them before the whsec_ prefix (`secrets.token_urlsafe`): with
# - and _, which the library's base64 decoding would drop.
LEGACY_SECRET = b"q-8Zr_T3xWm0-LkV9_c2sPaYb7_NdE4-hUjG1oFi5Rw"
PAYLOAD = {"job_id": "job-123", "status": "done", "note": {"title": "A walk", "mood": "calm"}}
TOPIC = "audiary-webhooks-dead-letter"


def verify_webhook(secret: str, headers, body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        return False
    return True


def whsec_form(secret: str) -> str:
    """The documented rule: a secret without the prefix is its own key, so its Standard
    Webhooks form is `whsec_` and the base64 of its bytes."""
    if secret.startswith("whsec_"):
        return secret
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def verify_audiary_webhook(secret: bytes, headers, body: bytes) -> bool:
    timestamp = headers.get("Audiary-Timestamp", "")
    signature = headers.get("Audiary-Signature", "")
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > 300:
        return False  # older than 5 minutes (or from the future): maybe a replay
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(f"v1={mac.hexdigest()}".encode(), signature.encode())


@dataclass
class Received:
    standard: bool  # the webhook-* headers, checked by the standardwebhooks library
    legacy: bool  # the deprecated Audiary-* headers
    body: bytes
    headers: dict[str, str]

    @property
    def verified(self) -> bool:
        return self.standard and self.legacy


@dataclass
class Receiver:
    """Answers 401 to a bad signature (either scheme), else the next scripted status (200 once
    it runs out)."""

    secret: bytes = SECRET  # as the owner was given it
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hold: bool = False  # keep every request waiting until the test ends (timeouts)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                standard = verify_webhook(whsec_form(receiver.secret.decode()), self.headers,
                                          body)
                legacy = verify_audiary_webhook(receiver.secret, self.headers, body)
                verified = standard and legacy
                receiver.received.append(Received(standard, legacy, body, dict(self.headers)))
                if receiver.hold:
                    receiver.release.wait(30)
                    return
                status, headers = (
                    (401, {}) if not verified else (receiver.script or [(200, {})]).pop(0)
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/audiary?token=t0k3n"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Sleeps(list[float]):
    """Records the waits `deliver` asks for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Tampering(httpx.BaseTransport):
    """A man in the middle: edits the body, keeps the signature headers."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().replace(b'"done"', b'"failed"')
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        forged = httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )
        return self._inner.handle_request(forged)

    def close(self) -> None:
        self._inner.close()


def documented(name: str) -> str:
    """The function `name` as the webhook_sender docstring shows it."""
    doc = audiary.adapters.webhook_sender.__doc__ or ""
    start = doc.index(f"    def {name}(")
    end = doc.index("\n\n", start)
    return textwrap.dedent(doc[start:end]).strip()


def test_the_receiver_runs_the_documented_snippet():
    assert inspect.getsource(verify_audiary_webhook).strip() == documented("verify_audiary_webhook")


def test_the_readme_gives_the_same_standard_snippet():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("def verify_webhook(")
    block = readme[start:readme.index("```", start)]
    assert textwrap.dedent(block).strip() == documented("verify_webhook")


def test_the_receiver_runs_the_documented_standard_snippet():
    assert inspect.getsource(verify_webhook).strip() == documented("verify_webhook")
    doc = audiary.adapters.webhook_sender.__doc__ or ""
    assert "from standardwebhooks.webhooks import Webhook, WebhookVerificationError" in doc
    assert "the Audiary-* headers will be dropped in the next version" in " ".join(doc.split())


# Delivery and signatures


def test_delivered_and_verified(receiver):
    sleeps = Sleeps()
    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps)

    assert result == DeliveryResult(
        delivered=True,
        attempts=1,
        last_status=200,
        last_error=None,
        delivery_id=result.delivery_id,
    )
    [got] = receiver.received
    assert got.verified
    assert json.loads(got.body) == PAYLOAD
    assert got.body == json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True).encode()
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Audiary-Signature"].startswith("v1=")
    assert got.headers["Audiary-Delivery"] == result.delivery_id
    assert got.headers["webhook-id"] == result.delivery_id
    assert got.headers["webhook-timestamp"] == got.headers["Audiary-Timestamp"]
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.standard
    assert got.legacy
    assert sleeps == []


def test_same_payload_same_body_whatever_the_key_order(receiver):
    deliver(receiver.url, {"b": 1, "a": {"d": 2, "c": "é"}}, SECRET)
    deliver(receiver.url, {"a": {"c": "é", "d": 2}, "b": 1}, SECRET)
    first, second = receiver.received
    assert first.body == second.body == '{"a":{"c":"é","d":2},"b":1}'.encode()


def test_tampered_body_is_rejected_by_the_receiver(receiver):
    with httpx.Client(transport=Tampering()) as client:
        result = deliver(receiver.url, PAYLOAD, SECRET, client=client, sleep=Sleeps())

    [got] = receiver.received
    assert b'"failed"' in got.body
    assert not got.verified
    assert (result.delivered, result.attempts, result.last_status) == (False, 1, 401)


def test_wrong_secret_is_rejected_by_the_receiver(receiver):
    result = deliver(receiver.url, PAYLOAD, b"not-the-secret", sleep=Sleeps())

    assert [r.verified for r in receiver.received] == [False]
    assert (result.delivered, result.attempts, result.last_status) == (False, 1, 401)
    assert result.last_error == "HTTP 401"


def test_stale_timestamp_is_rejected_by_the_receiver(receiver):
    ten_minutes_ago = time.time() - 600
    result = deliver(receiver.url, PAYLOAD, SECRET, now=lambda: ten_minutes_ago, sleep=Sleeps())

    assert [r.verified for r in receiver.received] == [False]
    assert result.last_status == 401


# Standard Webhooks: the library itself checks what the receiver got


def test_the_library_verifies_a_real_delivery(receiver):
    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=Sleeps())

    [got] = receiver.received
    assert Webhook(SECRET.decode()).verify(got.body, got.headers) == PAYLOAD
    assert got.headers["webhook-id"] == result.delivery_id
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30


def test_the_library_refuses_a_tampered_body(receiver):
    with httpx.Client(transport=Tampering()) as client:
        deliver(receiver.url, PAYLOAD, SECRET, client=client, sleep=Sleeps())

    [got] = receiver.received
    assert (got.standard, got.legacy) == (False, False)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET.decode()).verify(got.body, got.headers)
    # The body as sent still verifies: only the edit broke it.
    original = got.body.replace(b'"failed"', b'"done"')
    assert Webhook(SECRET.decode()).verify(original, got.headers) == PAYLOAD


def test_the_library_refuses_another_secret(receiver):
    deliver(receiver.url, PAYLOAD, new_webhook_secret().encode(), sleep=Sleeps())

    [got] = receiver.received
    assert (got.standard, got.legacy) == (False, False)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET.decode()).verify(got.body, got.headers)


def test_the_library_refuses_a_stale_timestamp(receiver):
    ten_minutes_ago = time.time() - 600
    result = deliver(receiver.url, PAYLOAD, SECRET, now=lambda: ten_minutes_ago, sleep=Sleeps())

    [got] = receiver.received
    assert (got.standard, got.legacy) == (False, False)
    assert result.last_status == 401
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET.decode()).verify(got.body, got.headers)


def test_retries_carry_one_webhook_id_with_fresh_timestamps_and_signatures(receiver):
    receiver.script = [(500, {}), (503, {})]
    start = int(time.time()) - 60
    clock = itertools.count(start, 20)  # each attempt 20 s after the one before

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=Sleeps(),
                     now=lambda: float(next(clock)))

    assert (result.delivered, result.attempts) == (True, 3)
    assert [r.headers["webhook-id"] for r in receiver.received] == [result.delivery_id] * 3
    assert [int(r.headers["webhook-timestamp"]) for r in receiver.received] == [
        start, start + 20, start + 40]
    assert len({r.headers["webhook-signature"] for r in receiver.received}) == 3
    for got in receiver.received:
        assert Webhook(SECRET.decode()).verify(got.body, got.headers) == PAYLOAD
        assert got.legacy


def test_a_secret_from_before_the_prefix_still_verifies(receiver):
    receiver.secret = LEGACY_SECRET
    result = deliver(receiver.url, PAYLOAD, LEGACY_SECRET, sleep=Sleeps())

    assert result.delivered
    [got] = receiver.received
    assert (got.standard, got.legacy) == (True, True)
    standard_form = whsec_form(LEGACY_SECRET.decode())
    assert standard_webhook_secret(LEGACY_SECRET.decode()) == standard_form
    assert Webhook(standard_form).verify(got.body, got.headers) == PAYLOAD
    # The key is the secret's own bytes...
    assert Webhook(LEGACY_SECRET).verify(got.body, got.headers) == PAYLOAD
    # ...which the library does not take from the bare string: it base64-decodes any string,
    # dropping - and _, into bad base64 (this one: ValueError) or another key (no match).
    with pytest.raises((ValueError, WebhookVerificationError)):
        Webhook(LEGACY_SECRET.decode()).verify(got.body, got.headers)


def test_the_deprecated_headers_are_those_of_the_old_scheme_and_go_with_every_delivery(receiver):
    deliver(receiver.url, PAYLOAD, SECRET, sleep=Sleeps())

    [got] = receiver.received
    assert DEPRECATED_HEADERS == ("Audiary-Timestamp", "Audiary-Signature", "Audiary-Delivery")
    assert all(name in got.headers for name in DEPRECATED_HEADERS)
    timestamp = int(got.headers["Audiary-Timestamp"])
    assert got.headers["Audiary-Signature"] == "v1=" + hmac.new(
        SECRET, f"{timestamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.headers["Audiary-Delivery"] == got.headers["webhook-id"]


# Secrets and the Standard Webhooks signature


def test_new_secrets_are_standard_webhooks_secrets():
    made = {new_webhook_secret() for _ in range(20)}
    assert len(made) == 20
    for secret in made:
        assert secret.startswith("whsec_")
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert 24 <= len(key) <= 64
        assert standard_webhook_secret(secret) == secret
        assert standard_webhook_secret(secret.encode()) == secret


def test_an_old_secret_has_its_own_bytes_as_the_key():
    assert standard_webhook_secret("s3cret") == "whsec_" + base64.b64encode(b"s3cret").decode()
    assert base64.b64decode(standard_webhook_secret(LEGACY_SECRET).removeprefix("whsec_"),
                            validate=True) == LEGACY_SECRET


def test_sign_is_the_specs_hmac_over_id_dot_timestamp_dot_body():
    key = base64.b64decode(SECRET.decode().removeprefix("whsec_"))
    body = '{"a":"é"}'.encode()
    mac = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign(SECRET, "msg_1", 1_700_000_000, body) == "v1," + base64.b64encode(mac).decode()
    mac = hmac.new(LEGACY_SECRET, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign(LEGACY_SECRET, "msg_1", 1_700_000_000, body) == (
        "v1," + base64.b64encode(mac).decode())


def test_verify_checks_the_standard_headers_through_the_library():
    body = b'{"a":1}'
    headers = signed_headers(SECRET, "d-1", int(time.time()), body)
    assert verify(SECRET, headers, body)
    assert Webhook(SECRET.decode()).verify(body, headers) == {"a": 1}
    assert not verify(SECRET, headers, b'{"a":2}')
    assert not verify(new_webhook_secret().encode(), headers, body)
    assert not verify(SECRET, {**headers, "webhook-id": "d-2"}, body)
    stale = signed_headers(SECRET, "d-1", int(time.time()) - 301, body)
    assert not verify(SECRET, stale, body)
    future = signed_headers(SECRET, "d-1", int(time.time()) + 301, body)
    assert not verify(SECRET, future, body)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert not verify(SECRET, {k: v for k, v in headers.items() if k != name}, body)
    for malformed in ("v1", "v1,not base64!", "v2," + headers["webhook-signature"][3:]):
        assert not verify(SECRET, {**headers, "webhook-signature": malformed}, body)
    # Only the deprecated headers, as a receiver of the old scheme would see them: not enough.
    assert not verify(SECRET, {k: v for k, v in headers.items() if k in DEPRECATED_HEADERS},
                      body)


def test_an_empty_secret_is_refused_before_anything_is_sent(receiver):
    with pytest.raises(ValueError, match="secret may not be empty"):
        deliver(receiver.url, PAYLOAD, b"", sleep=Sleeps())
    assert receiver.received == []


# Retries


def test_two_server_errors_then_delivered_on_attempt_three(receiver):
    receiver.script = [(500, {}), (503, {})]
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps)

    assert (result.delivered, result.attempts, result.last_status) == (True, 3, 200)
    assert [r.verified for r in receiver.received] == [True, True, True]
    # Every attempt carries the same delivery id, so the receiver can drop repeats.
    assert {r.headers["Audiary-Delivery"] for r in receiver.received} == {result.delivery_id}
    # Exponential backoff with up to 1 s of jitter: about 1 s, then about 2 s.
    assert len(sleeps) == 2
    assert 1 <= sleeps[0] <= 2
    assert 2 <= sleeps[1] <= 3


def test_gone_is_not_retried(receiver):
    receiver.script = [(410, {})]
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps)

    assert (result.delivered, result.attempts, result.last_status) == (False, 1, 410)
    assert len(receiver.received) == 1
    assert sleeps == []


def test_redirect_is_not_followed(receiver):
    receiver.script = [(302, {"Location": "http://169.254.169.254/"})]

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=Sleeps())

    assert (result.delivered, result.attempts, result.last_status) == (False, 1, 302)


def test_rate_limit_waits_for_retry_after(receiver):
    receiver.script = [(429, {"Retry-After": "7"})]
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps)

    assert (result.delivered, result.attempts) == (True, 2)
    assert sleeps == [7.0]


def test_rate_limit_with_an_http_date(receiver):
    retry_at = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 12))
    receiver.script = [(429, {"Retry-After": retry_at})]
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps)

    assert result.delivered
    [waited] = sleeps
    assert 10 < waited <= 12  # an HTTP date has whole seconds


def test_rate_limit_longer_than_max_wait_gives_up(receiver):
    receiver.script = [(429, {"Retry-After": "3600"})]
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, sleep=sleeps, max_wait_s=60)

    assert (result.delivered, result.attempts, result.last_status) == (False, 1, 429)
    assert result.last_error == "HTTP 429, Retry-After 3600 s"
    assert sleeps == []


def test_always_failing_gives_up_and_is_dead_lettered(receiver):
    receiver.script = [(500, {})] * 10
    sleeps = Sleeps()
    publisher = MemoryPublisher()

    result = deliver(receiver.url, PAYLOAD, SECRET, attempts=4, sleep=sleeps)
    message_id = dead_letter(publisher, TOPIC, receiver.url, PAYLOAD, result)

    assert (result.delivered, result.attempts, result.last_status) == (False, 4, 500)
    assert result.last_error == "HTTP 500"
    assert len(receiver.received) == 4
    assert len(sleeps) == 3
    [message] = publisher.messages(TOPIC)
    assert message.message_id == message_id
    assert json.loads(message.data) == {
        "url": receiver.url,
        "payload": PAYLOAD,
        "reason": "HTTP 500",
        "attempts": 4,
        "last_status": 500,
        "delivery_id": result.delivery_id,
    }
    assert message.attributes == {
        "reason": "HTTP 500",
        "attempts": "4",
        "delivery_id": result.delivery_id,
    }


def test_connection_refused_is_retried_then_dead_lettered():
    gone = Receiver()
    gone.close()  # its port was just free: nothing listens there now
    sleeps = Sleeps()
    publisher = MemoryPublisher()

    result = deliver(gone.url, PAYLOAD, SECRET, attempts=3, sleep=sleeps)
    dead_letter(publisher, TOPIC, gone.url, PAYLOAD, result)

    assert (result.delivered, result.attempts, result.last_status) == (False, 3, None)
    assert result.last_error is not None
    assert result.last_error.startswith("ConnectError")
    assert len(sleeps) == 2
    [(data, attributes)] = publisher.published(TOPIC)
    assert json.loads(data)["reason"] == result.last_error
    assert attributes["attempts"] == "3"


def test_timeout_is_retried(receiver):
    receiver.hold = True
    sleeps = Sleeps()

    result = deliver(receiver.url, PAYLOAD, SECRET, attempts=2, timeout_s=0.3, sleep=sleeps)

    assert (result.delivered, result.attempts, result.last_status) == (False, 2, None)
    assert result.last_error is not None
    assert result.last_error.startswith("ReadTimeout")
    assert len(receiver.received) == 2


def test_invalid_url_is_not_retried():
    sleeps = Sleeps()
    result = deliver("ftp://example.invalid/hook", PAYLOAD, SECRET, sleep=sleeps)
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.last_error is not None
    assert result.last_error.startswith("UnsupportedProtocol")
    assert sleeps == []


def test_dead_letter_refuses_a_delivered_result():
    delivered = DeliveryResult(True, 1, 200, None, "d1")
    with pytest.raises(ValueError, match="was delivered"):
        dead_letter(MemoryPublisher(), TOPIC, "https://example.com/", PAYLOAD, delivered)


# verify_legacy(), the project's check of the deprecated headers, agrees with the receiver's


def test_verify_and_the_documented_snippet_agree():
    body = b'{"a":1}'
    timestamp = int(time.time())
    headers = {
        "Audiary-Timestamp": str(timestamp),
        "Audiary-Signature": f"v1={sign_legacy(SECRET, timestamp, body)}",
    }
    assert verify_legacy(
        SECRET, headers["Audiary-Timestamp"], headers["Audiary-Signature"], body, now=time.time()
    )
    assert verify_audiary_webhook(SECRET, headers, body)


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "now"),
    [
        ("1700000000", "v1={sig}", b'{"a":2}', 1_700_000_000),  # tampered body
        ("1700000001", "v1={sig}", b'{"a":1}', 1_700_000_000),  # tampered timestamp
        ("1700000000", "v1={sig}", b'{"a":1}', 1_700_000_301),  # stale
        ("1700000000", "v1={sig}", b'{"a":1}', 1_699_999_699),  # from the future
        ("1700000000", "{sig}", b'{"a":1}', 1_700_000_000),  # no version prefix
        ("1700000000", "v2={sig}", b'{"a":1}', 1_700_000_000),
        ("", "v1={sig}", b'{"a":1}', 1_700_000_000),
        (None, "v1={sig}", b'{"a":1}', 1_700_000_000),
        ("1700000000", None, b'{"a":1}', 1_700_000_000),
        ("1.7e9", "v1={sig}", b'{"a":1}', 1_700_000_000),
        ("\u0661\u0667" + "\u0660" * 8, "v1={sig}", b'{"a":1}', 1_700_000_000),  # Arabic digits
        ("1700000000", "v1=é", b'{"a":1}', 1_700_000_000),
    ],
)
def test_verify_rejects(timestamp, signature, body, now):
    sig = sign_legacy(SECRET, 1_700_000_000, b'{"a":1}')
    header = None if signature is None else signature.format(sig=sig)
    assert not verify_legacy(SECRET, timestamp, header, body, now=now)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign_legacy(b"k", 1_700_000_000, b"{}") == expected


# notify: the webhooks function's use case, on the in-memory stores with a real receiver -----


def _notify_stores(receiver: Receiver) -> tuple[Stores, str]:
    from datetime import UTC, datetime

    from audiary.domain.jobs import JobError, JobStatus, SourceObject, new_job
    from audiary.domain.keys import Webhook
    from audiary.settings import Settings
    from tests.fakes.stores import memory_stores

    svc = memory_stores(Settings(blob_backend="memory", job_backend="memory",
                                 publisher_backend="memory", allow_private_urls=True,
                                 allow_http_urls=True))
    job, _ = svc.jobs.create_job(new_job("job-9", SourceObject(
        bucket="b", name="inbox/a.wav", generation="1"), owner="key:k1"))
    svc.jobs.advance(job.job_id, JobStatus.FAILED,
                     error=JobError(code="transcription_failed", message="boom", stage="x"))
    svc.keys.put_webhook(Webhook(webhook_id="h1", owner="key:k1", url=receiver.url,
                                 secret=SECRET.decode(), created_at=datetime.now(UTC)))
    return svc, job.job_id


def notify(svc: Stores, finished: JobFinished) -> NotifyOutcome:
    """What the webhooks function does with a `job-finished`: fan out, then each delivery
    message (those this call published) delivered as Pub/Sub would push it."""
    assert isinstance(svc.publisher, MemoryPublisher)
    topic = svc.settings.topic_webhook_delivery
    seen = len(svc.publisher.messages(topic))
    count = fan_out(svc, finished)
    published = svc.publisher.messages(topic)[seen:]
    assert len(published) == count
    outcomes = [deliver_one(svc, parse_webhook_delivery(m.data), message_id=m.message_id)
                for m in published]
    return NotifyOutcome(sum(o.delivered for o in outcomes), sum(o.failed for o in outcomes))


def test_a_failed_job_is_told_once_per_hook_however_often_it_is_announced(receiver):
    svc, job_id = _notify_stores(receiver)
    finished = JobFinished(job_id=job_id, status="FAILED")
    assert notify(svc, finished) == NotifyOutcome(delivered=1, failed=0)
    assert notify(svc, finished) == NotifyOutcome(delivered=0, failed=0)  # a repeat
    assert len(receiver.received) == 1
    body = json.loads(receiver.received[0].body)
    assert (body["status"], body["error"]["code"]) == ("FAILED", "transcription_failed")
    assert receiver.received[0].headers["Audiary-Delivery"] == f"{job_id}-h1-job.finished"
    assert receiver.received[0].headers["webhook-id"] == f"{job_id}-h1-job.finished"
    got = receiver.received[0]
    assert Webhook(SECRET.decode()).verify(got.body, got.headers)["job_id"] == job_id
    # The event as the OpenAPI document describes it (`webhooks`), field for field.
    assert WebhookEvent.model_validate_json(got.body).status == "FAILED"


def test_each_hook_gets_a_message_of_its_own(receiver):
    from datetime import UTC, datetime

    from audiary.domain.keys import Webhook

    svc, job_id = _notify_stores(receiver)
    svc.keys.put_webhook(Webhook(webhook_id="h2", owner="key:k1", url=receiver.url,
                                 secret=SECRET.decode(), created_at=datetime.now(UTC)))
    assert fan_out(svc, JobFinished(job_id=job_id, status="FAILED")) == 2
    tasks = svc.publisher.messages(svc.settings.topic_webhook_delivery)
    assert sorted(parse_webhook_delivery(m.data).webhook_id for m in tasks) == ["h1", "h2"]
    assert {m.attributes["job_id"] for m in tasks} == {job_id}
    assert not receiver.received  # nothing is delivered by the fan-out itself
    # A duplicate of one delivery message while its first copy holds the lease does nothing.
    first = tasks[0]
    assert svc.keys.claim_delivery(f"{job_id}-{parse_webhook_delivery(first.data).webhook_id}"
                                   "-job.finished", first.message_id, lease_s=600,
                                   now=datetime.now(UTC))
    assert deliver_one(svc, parse_webhook_delivery(first.data), message_id="another copy") == (
        NotifyOutcome(0, 0))
    assert deliver_one(svc, parse_webhook_delivery(first.data),
                       message_id=first.message_id) == NotifyOutcome(1, 0)
    assert len(receiver.received) == 1


def test_an_unresolvable_hook_is_dead_lettered_not_raised(receiver):
    from datetime import UTC, datetime

    from audiary.domain.keys import Webhook

    svc, job_id = _notify_stores(receiver)
    svc.keys.put_webhook(Webhook(webhook_id="h2", owner="key:k1",
                                 url="https://no-such-host.invalid/hook", secret="s",
                                 created_at=datetime.now(UTC)))
    outcome = notify(svc, JobFinished(job_id=job_id, status="FAILED"))
    assert outcome == NotifyOutcome(delivered=1, failed=1)
    (dead,) = svc.publisher.messages(TOPIC_DEAD)
    letter = json.loads(dead.data)
    assert letter["url"] == "https://no-such-host.invalid/hook"
    assert letter["attempts"] == 0
    assert "could not be resolved" in letter["reason"]


def test_a_webhook_connects_to_the_address_its_check_found(receiver):
    from audiary.adapters.url_fetcher import SafeUrlFetcher
    from audiary.adapters.webhook_sender import HttpWebhookSender

    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    fetcher = SafeUrlFetcher(allow_http=True, allow_networks=["127.0.0.1/32"], resolve=resolve)
    # A name no DNS server knows: only the checked address can reach the receiver.
    url = receiver.url.replace("127.0.0.1", "hooks.audiary.invalid")
    result = HttpWebhookSender(fetcher, attempts=1).deliver(url, PAYLOAD, SECRET,
                                                            delivery_id="d-pinned")
    assert result.delivered
    (got,) = receiver.received
    assert got.verified
    assert got.headers["Host"] == url.split("/")[2]  # the name, as the receiver serves it
    assert set(asked) == {"hooks.audiary.invalid"}


def test_a_name_that_turns_private_between_checks_gets_no_connection(receiver):
    from audiary.adapters.url_fetcher import SafeUrlFetcher
    from audiary.adapters.webhook_sender import HttpWebhookSender

    answers = iter([["127.0.0.1"], ["10.1.2.3"], ["10.1.2.3"]])
    fetcher = SafeUrlFetcher(allow_http=True, allow_networks=["127.0.0.1/32"],
                             resolve=lambda host, port: next(answers))
    url = receiver.url.replace("127.0.0.1", "rebind.audiary.invalid")
    result = HttpWebhookSender(fetcher, attempts=3).deliver(url, PAYLOAD, SECRET,
                                                            delivery_id="d-rebind")
    assert not result.delivered
    assert result.attempts == 1  # refused, not retried
    assert "10.1.2.3" in (result.last_error or "")
    assert receiver.received == []
