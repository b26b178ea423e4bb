"""A local HTTP server that speaks the OpenAI and Anthropic wire protocols, scripted per test.

The real `openai` and `anthropic` SDKs talk to it unchanged:

    with FakeLlmServer() as server:
        server.enqueue(rate_limited(1), ok({"title": "A walk"}))
        OpenAI(api_key="sk-test", base_url=server.openai_base_url)        # .../v1
        Anthropic(api_key="sk-ant-test", base_url=server.anthropic_base_url)  # no /v1

Routes: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic). Each request
consumes one behaviour: first from its protocol's queue, then from the shared queue, and when
both are empty the default behaviour, which by default is `unexpected()`: a 418 that neither SDK
retries, so a test that makes one call too many fails loudly and `server.unexpected_calls` says
so. Every request is recorded (`server.requests`) with its arrival time, parsed body and headers,
the credential headers redacted.

A test module gets a fresh server per test with a three-line fixture:

    @pytest.fixture
    def llm_server() -> Iterator[FakeLlmServer]:
        with FakeLlmServer() as server:
            yield server
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

log = logging.getLogger(__name__)

Protocol = Literal["openai", "anthropic"]
Kind = Literal[
    "ok", "rate_limited", "server_error", "overloaded", "hang", "malformed", "error", "unauthorized"
]

ROUTES: Mapping[str, Protocol] = {
    "/v1/chat/completions": "openai",
    "/v1/messages": "anthropic",
}
# Credential headers are recorded as present but never with their value.
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one request. Build these with the functions below."""

    kind: Kind
    payload: Mapping[str, Any] | None = None
    status: int = 200
    message: str = ""
    retry_after_s: float | None = None
    seconds: float = 0.0
    then: Behaviour | None = None
    body: bytes = b""
    content_type: str = "application/json"
    input_tokens: int | None = None
    output_tokens: int | None = None
    respond: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None


def ok(
    payload: Mapping[str, Any],
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> Behaviour:
    """The model answers `payload`: message content (OpenAI) or the forced tool's input
    (Anthropic). Token counts default to a rough 4-characters-per-token estimate."""
    return Behaviour("ok", payload=payload, input_tokens=input_tokens, output_tokens=output_tokens)


def answer_with(respond: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> Behaviour:
    """Like `ok`, with the payload computed from the request body (e.g. from the prompt)."""
    return Behaviour("ok", respond=respond)


def off_schema(payload: Mapping[str, Any] | None = None) -> Behaviour:
    """A well-formed 200 whose JSON does not fit the DiaryNote schema."""
    if payload is None:
        payload = {"title": 42, "summary": "", "invented_field": True}
    return Behaviour("ok", payload=payload)


def rate_limited(retry_after_s: float | None = 1.0) -> Behaviour:
    """429 with `Retry-After` (omitted when None) and the provider's rate-limit headers."""
    return Behaviour(
        "rate_limited", status=429, retry_after_s=retry_after_s, message="Rate limit reached."
    )


def server_error(status: int = 500) -> Behaviour:
    """A 5xx with the provider's error body."""
    return Behaviour("server_error", status=status, message="The server had an error.")


def overloaded() -> Behaviour:
    """529 with Anthropic's `overloaded_error` body (the same status on the OpenAI route)."""
    return Behaviour("overloaded", status=529, message="Overloaded")


def error(status: int, message: str = "Request rejected by the fake server.") -> Behaviour:
    """Any status with the provider's error body, e.g. `error(404, "model not found")`."""
    return Behaviour("error", status=status, message=message)


def unauthorized() -> Behaviour:
    """401 whose message echoes the API key it received in full, as a careless proxy might,
    so tests can prove the client never repeats it."""
    return Behaviour("unauthorized", status=401)


def unexpected() -> Behaviour:
    """The default when the queues are empty: a 418 that neither SDK retries."""
    message = "fake LLM server: unexpected call, the behaviour queue is empty"
    return Behaviour("error", status=418, message=message)


def hang(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Send nothing for `seconds` (cut short when the server stops), then answer with `then`,
    or close the connection without an answer when `then` is None."""
    return Behaviour("hang", seconds=seconds, then=then)


def malformed(
    body: bytes = b'{"id": "chatcmpl-cut-off", "choices": [{"mess',
    content_type: str = "application/json",
) -> Behaviour:
    """200 with a body the SDK cannot parse (by default JSON cut off mid-way)."""
    return Behaviour("malformed", body=body, content_type=content_type)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    protocol: Protocol | None
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at: float  # time.monotonic() at arrival
    behaviour: Kind

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]


class FakeLlmServer:
    """Both wire protocols on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, default: Behaviour | None = None) -> None:
        self.default = default or unexpected()
        self._lock = threading.Lock()
        self._queues: dict[Protocol | None, deque[Behaviour]] = {
            None: deque(),
            "openai": deque(),
            "anthropic": deque(),
        }
        self._requests: list[RecordedRequest] = []
        self._unexpected = 0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle.

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Httpd(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-llm-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.debug("fake LLM server on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; requests that hang are released at once."""
        self._stopping.set()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses.

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake LLM server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """`base_url` for the openai SDK, which appends `chat/completions`."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """`base_url` for the anthropic SDK, which appends `/v1/messages` itself."""
        return self.url

    # Scripting and inspection.

    def enqueue(self, *behaviours: Behaviour, protocol: Protocol | None = None) -> None:
        """Queue behaviours for one protocol, or (protocol None) for whichever asks first."""
        with self._lock:
            self._queues[protocol].extend(behaviours)

    def pending(self) -> int:
        """Behaviours queued and not yet consumed, over all queues."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, protocol: Protocol) -> list[RecordedRequest]:
        return [r for r in self.requests if r.protocol == protocol]

    @property
    def unexpected_calls(self) -> int:
        """Requests answered by the default behaviour because nothing was queued."""
        with self._lock:
            return self._unexpected

    def reset(self) -> None:
        """Forget queued behaviours and recorded requests."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._requests.clear()
            self._unexpected = 0

    # Serving (called from handler threads).

    def _next_behaviour(self, protocol: Protocol) -> Behaviour:
        with self._lock:
            for queue in (self._queues[protocol], self._queues[None]):
                if queue:
                    return queue.popleft()
            self._unexpected += 1
            return self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _wait(self, seconds: float) -> bool:
        """Block up to `seconds`; True if the server is stopping."""
        return self._stopping.wait(seconds)

    def _next_id(self) -> int:
        return next(self._ids)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], fake: FakeLlmServer
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive between retries, as the SDKs' pools expect.
    protocol_version = "HTTP/1.1"
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake LLM server: " + format, *args)

    def do_GET(self) -> None:
        self._not_found()

    def do_POST(self) -> None:
        arrived = time.monotonic()
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        protocol = ROUTES.get(path)
        headers = {
            k.lower(): (REDACTED if k.lower() in SECRET_HEADERS else v)
            for k, v in self.headers.items()
        }
        fake = self.server.fake
        if protocol is None:
            fake._record(RecordedRequest(None, "POST", path, headers, body, arrived, "error"))
            self._not_found()
            return
        behaviour = fake._next_behaviour(protocol)
        fake._record(
            RecordedRequest(protocol, "POST", path, headers, body, arrived, behaviour.kind)
        )
        self._act(behaviour, protocol, body if isinstance(body, dict) else {})

    def _act(self, behaviour: Behaviour, protocol: Protocol, body: dict[str, Any]) -> None:
        fake = self.server.fake
        if behaviour.kind == "hang":
            stopping = fake._wait(behaviour.seconds)
            if stopping or behaviour.then is None:
                self.close_connection = True
                return
            behaviour = behaviour.then
        if behaviour.kind == "malformed":
            self._send(_Reply(200, behaviour.body, {"content-type": behaviour.content_type}))
            return
        if behaviour.kind == "ok":
            if behaviour.respond is not None:
                behaviour = replace(behaviour, payload=behaviour.respond(body))
            reply = (
                _openai_ok(behaviour, body, fake._next_id())
                if protocol == "openai"
                else _anthropic_ok(behaviour, body, fake._next_id())
            )
        else:
            message = behaviour.message
            if behaviour.kind == "unauthorized":
                key = self._credential()
                message = f"Incorrect API key provided: {key}."
            reply = _error_reply(behaviour, protocol, message)
        self._send(reply)

    def _credential(self) -> str:
        # Anthropic has used both `x-api-key` and `Authorization: Bearer` across SDK versions.
        bearer = self.headers.get("authorization", "").removeprefix("Bearer ")
        return self.headers.get("x-api-key") or bearer

    def _not_found(self) -> None:
        body = json.dumps({"error": {"message": f"no route for {self.path}"}}).encode()
        self._send(_Reply(404, body, {"content-type": "application/json"}))

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired); nothing to answer.
            self.close_connection = True


def _tokens(text: str) -> int:
    # About four characters per token, as in English for both providers' tokenizers.
    return max(1, len(text) // 4)


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    prompt = {k: body.get(k) for k in ("system", "messages", "tools", "response_format")}
    return _tokens(json.dumps(prompt))


def _json_reply(status: int, data: Mapping[str, Any], headers: Mapping[str, str]) -> _Reply:
    return _Reply(
        status, json.dumps(data).encode(), {"content-type": "application/json", **headers}
    )


def _openai_ok(behaviour: Behaviour, body: Mapping[str, Any], n: int) -> _Reply:
    content = json.dumps(behaviour.payload)
    prompt_tokens = behaviour.input_tokens or _prompt_tokens(body)
    completion_tokens = behaviour.output_tokens or _tokens(content)
    data = {
        "id": f"chatcmpl-fake{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return _json_reply(200, data, {"x-request-id": f"req_fake{n}"})


def _anthropic_ok(behaviour: Behaviour, body: Mapping[str, Any], n: int) -> _Reply:
    payload = dict(behaviour.payload or {})
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    tool_name = choice.get("name") or (tools[0].get("name") if tools else None)
    content: list[dict[str, Any]]
    if tool_name:
        block = {"type": "tool_use", "id": f"toolu_fake{n}", "name": tool_name, "input": payload}
        content = [block]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": json.dumps(payload)}]
        stop_reason = "end_turn"
    data = {
        "id": f"msg_fake{n}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "unknown"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": behaviour.input_tokens or _prompt_tokens(body),
            "output_tokens": behaviour.output_tokens or _tokens(json.dumps(payload)),
        },
    }
    return _json_reply(200, data, {"request-id": f"req_fake{n}"})


_OPENAI_ERROR_TYPES = {401: "invalid_request_error", 429: "requests"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_reply(behaviour: Behaviour, protocol: Protocol, message: str) -> _Reply:
    status = behaviour.status
    headers: dict[str, str] = {}
    if behaviour.kind == "rate_limited":
        headers.update(_rate_limit_headers(protocol, behaviour.retry_after_s))
    if protocol == "openai":
        error_type = _OPENAI_ERROR_TYPES.get(status) or (
            "server_error" if status >= 500 else "invalid_request_error"
        )
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
        data: dict[str, Any] = {
            "error": {"message": message, "type": error_type, "param": None, "code": code}
        }
        headers["x-request-id"] = "req_fake_error"
    else:
        error_type = _ANTHROPIC_ERROR_TYPES.get(status) or (
            "api_error" if status >= 500 else "invalid_request_error"
        )
        data = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_fake_error",
        }
        headers["request-id"] = "req_fake_error"
    return _json_reply(status, data, headers)


def _rate_limit_headers(protocol: Protocol, retry_after_s: float | None) -> dict[str, str]:
    reset_s = retry_after_s if retry_after_s is not None else 1.0
    if protocol == "openai":
        headers = {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{reset_s:g}s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2ms",
        }
    else:
        reset_at = datetime.now(UTC) + timedelta(seconds=reset_s)
        headers = {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset_at.isoformat(timespec="seconds"),
        }
    if retry_after_s is not None:
        headers["retry-after"] = f"{retry_after_s:g}"
    return headers
