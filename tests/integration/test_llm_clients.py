"""The real openai and anthropic SDKs, through our adapters, against the local fake server:
what goes on the wire, what comes back, and how each failure ends."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from audiary.adapters.llm_anthropic import AnthropicClient
from audiary.adapters.llm_openai import OpenAiClient
from audiary.domain.notes import DiaryNote
from audiary.errors import ConfigError, ProviderError
from audiary.local.emulators import free_port
from audiary.ports import LlmClient
from tests.fakes.llm_server import (
    REDACTED,
    Behaviour,
    FakeLlmServer,
    Protocol,
    error,
    hang,
    malformed,
    off_schema,
    ok,
    overloaded,
    rate_limited,
    server_error,
    unauthorized,
)

pytestmark = pytest.mark.integration

KEYS: dict[Protocol, str] = {
    "openai": "sk-proj-test-4f9c2a7e1b",
    "anthropic": "sk-ant-api03-test-8d3e6b0c5a",
}
MODELS: dict[Protocol, str] = {"openai": "gpt-test-mini", "anthropic": "claude-test-haiku"}
PROTOCOLS: list[Protocol] = ["openai", "anthropic"]
SCHEMA = DiaryNote.model_json_schema()
NOTE: dict[str, Any] = {
    "schema_version": "1",
    "title": "A walk by the river",
    "date": "2024-05-03",
    "summary": "Walked by the river with Ana. We planned the garden. It rained at the end.",
    "mood": "calm",
    "highlights": [{"text": "Saw a heron.", "source": {"start": 12.0, "end": 15.5}}],
    "people": ["Ana"],
    "places": ["the river"],
    "action_items": [{"text": "Buy seeds", "due": "2024-05-10", "source": None}],
    "tags": ["walk", "garden"],
}


@pytest.fixture
def llm_server() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


def make_client(
    protocol: Protocol,
    server: FakeLlmServer,
    *,
    timeout_s: float = 5.0,
    max_retries: int = 2,
) -> LlmClient:
    if protocol == "openai":
        return OpenAiClient(
            KEYS["openai"],
            MODELS["openai"],
            base_url=server.openai_base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
    return AnthropicClient(
        KEYS["anthropic"],
        MODELS["anthropic"],
        base_url=server.anthropic_base_url,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )


def ask(client: LlmClient) -> Any:
    return client.complete_json(
        system="You write diary notes.",
        user="Transcript: I walked by the river with Ana.",
        schema_name="DiaryNote",
        schema=SCHEMA,
    )


def fail(client: LlmClient, protocol: Protocol) -> ProviderError:
    """The ProviderError that `ask` raises, checked to leak no API key."""
    with pytest.raises(ProviderError) as caught:
        ask(client)
    err = caught.value
    assert err.provider == client.provider
    for key in KEYS.values():
        assert key not in str(err)
        assert key not in repr(err.args)
    return err


# Success and what is sent.


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_success_returns_the_json_text_and_token_counts(
    llm_server: FakeLlmServer, protocol: Protocol
) -> None:
    llm_server.enqueue(ok(NOTE, input_tokens=1234, output_tokens=321), protocol=protocol)

    completion = ask(make_client(protocol, llm_server))

    assert json.loads(completion.text) == NOTE
    assert DiaryNote.model_validate_json(completion.text).title == NOTE["title"]
    assert (completion.input_tokens, completion.output_tokens) == (1234, 321)
    assert completion.model == MODELS[protocol]
    assert len(llm_server.requests) == 1
    assert llm_server.unexpected_calls == 0


def test_openai_request_carries_the_strict_schema_and_the_model(
    llm_server: FakeLlmServer,
) -> None:
    llm_server.enqueue(ok(NOTE))

    ask(make_client("openai", llm_server))

    (request,) = llm_server.requests_for("openai")
    assert request.path == "/v1/chat/completions"
    assert request.model == MODELS["openai"]
    assert request.headers["authorization"] == REDACTED
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    assert "river" in request.body["messages"][1]["content"]
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    spec = response_format["json_schema"]
    assert (spec["name"], spec["strict"]) == ("DiaryNote", True)
    sent = spec["schema"]
    assert sent["additionalProperties"] is False
    assert set(sent["required"]) == set(DiaryNote.model_fields)
    assert set(sent["properties"]) == set(DiaryNote.model_fields)
    assert sent["$defs"]["TimeRange"]["additionalProperties"] is False
    assert "minLength" not in json.dumps(sent)
    assert "minLength" in json.dumps(SCHEMA), "the caller's schema is left untouched"


def test_anthropic_request_forces_the_schema_tool(llm_server: FakeLlmServer) -> None:
    llm_server.enqueue(ok(NOTE))

    ask(make_client("anthropic", llm_server))

    (request,) = llm_server.requests_for("anthropic")
    assert request.path == "/v1/messages"
    assert request.model == MODELS["anthropic"]
    assert request.headers.get("authorization", request.headers.get("x-api-key")) == REDACTED
    body = request.body
    assert body["system"] == "You write diary notes."
    assert body["messages"] == [
        {"role": "user", "content": "Transcript: I walked by the river with Ana."}
    ]
    assert body["max_tokens"] == 4096
    (tool,) = body["tools"]
    assert tool["name"] == "DiaryNote"
    assert tool["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "DiaryNote"}


def test_openai_compatible_without_strict_asks_for_a_json_object(
    llm_server: FakeLlmServer,
) -> None:
    llm_server.enqueue(ok(NOTE))
    client = OpenAiClient(
        "",
        "llama-local",
        base_url=llm_server.openai_base_url,
        provider="openai-compatible",
        strict=False,
    )

    completion = ask(client)

    assert json.loads(completion.text) == NOTE
    (request,) = llm_server.requests
    assert request.body["response_format"] == {"type": "json_object"}
    system_prompt = request.body["messages"][0]["content"]
    assert system_prompt.startswith("You write diary notes.")
    assert json.dumps(SCHEMA) in system_prompt


def test_missing_key_or_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="API key"):
        OpenAiClient("", "gpt-test")
    with pytest.raises(ConfigError, match="API key"):
        AnthropicClient("", "claude-test")
    with pytest.raises(ConfigError, match="base URL"):
        OpenAiClient("", "llama-local", provider="openai-compatible")


# Retries inside the SDKs.


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_is_honoured(llm_server: FakeLlmServer, protocol: Protocol) -> None:
    llm_server.enqueue(rate_limited(1), ok(NOTE))

    completion = ask(make_client(protocol, llm_server))

    assert json.loads(completion.text) == NOTE
    first, second = llm_server.requests
    assert 1.0 <= second.at - first.at < 2.5
    assert second.headers["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_retry_after_beyond_two_minutes_fails_fast(
    llm_server: FakeLlmServer, protocol: Protocol
) -> None:
    llm_server.enqueue(rate_limited(3600), ok(NOTE))
    started = time.monotonic()

    err = fail(make_client(protocol, llm_server), protocol)

    assert time.monotonic() - started < 2
    assert (err.retryable, err.status, err.retry_after_s) == (True, 429, 3600)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize(
    ("protocol", "failure"),
    [
        ("openai", server_error(500)),
        ("anthropic", server_error(500)),
        ("anthropic", overloaded()),
    ],
)
def test_transient_failure_then_success(
    llm_server: FakeLlmServer, protocol: Protocol, failure: Behaviour
) -> None:
    llm_server.enqueue(failure, ok(NOTE))

    completion = ask(make_client(protocol, llm_server))

    assert json.loads(completion.text) == NOTE
    assert [r.behaviour for r in llm_server.requests] == [failure.kind, "ok"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("failure", "status"),
    [(server_error(500), 500), (overloaded(), 529), (rate_limited(0.1), 429)],
    ids=["500", "529", "429"],
)
def test_persistent_failure_gives_up_after_every_attempt(
    llm_server: FakeLlmServer, protocol: Protocol, failure: Behaviour, status: int
) -> None:
    max_retries = 2
    llm_server.enqueue(*[failure] * (1 + max_retries))

    err = fail(make_client(protocol, llm_server, max_retries=max_retries), protocol)

    assert (err.retryable, err.status) == (True, status)
    assert len(llm_server.requests) == 1 + max_retries
    assert llm_server.unexpected_calls == 0
    if status == 429:
        assert err.retry_after_s == pytest.approx(0.1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_key_is_not_retried_and_never_repeated(
    llm_server: FakeLlmServer, protocol: Protocol, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm_server.enqueue(unauthorized())

    err = fail(make_client(protocol, llm_server), protocol)

    assert (err.retryable, err.status) == (False, 401)
    assert "Incorrect API key provided: ***" in str(err)
    assert len(llm_server.requests) == 1
    assert KEYS[protocol] not in caplog.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_not_retried(
    llm_server: FakeLlmServer, protocol: Protocol, status: int
) -> None:
    llm_server.enqueue(error(status, "model not found"))

    err = fail(make_client(protocol, llm_server), protocol)

    assert (err.retryable, err.status) == (False, status)
    assert "model not found" in str(err)
    assert len(llm_server.requests) == 1


# Timeouts and unreachable servers.


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hang_past_the_timeout_fails_in_bounded_time(
    llm_server: FakeLlmServer, protocol: Protocol
) -> None:
    llm_server.enqueue(hang(30), hang(30))
    started = time.monotonic()

    err = fail(make_client(protocol, llm_server, timeout_s=0.5, max_retries=1), protocol)

    assert time.monotonic() - started < 4
    assert (err.retryable, err.status) == (True, None)
    assert "0.5 s" in str(err)
    assert len(llm_server.requests) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_slow_answer_within_the_timeout_is_fine(
    llm_server: FakeLlmServer, protocol: Protocol
) -> None:
    llm_server.enqueue(hang(0.2, then=ok(NOTE)))

    completion = ask(make_client(protocol, llm_server, timeout_s=5))

    assert json.loads(completion.text) == NOTE
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_server_is_retryable(protocol: Protocol) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client: LlmClient
    if protocol == "openai":
        client = OpenAiClient(KEYS["openai"], "m", base_url=f"{dead}/v1", max_retries=0)
    else:
        client = AnthropicClient(KEYS["anthropic"], "m", base_url=dead, max_retries=0)

    err = fail(client, protocol)

    assert (err.retryable, err.status) == (True, None)
    assert "cannot reach" in str(err)


# Answers that are not what was asked for.


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "body",
    [
        malformed(),
        malformed(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        malformed(b'{"status": "ok"}'),
    ],
    ids=["cut-off-json", "html", "wrong-shape"],
)
def test_malformed_body_is_a_retryable_provider_error(
    llm_server: FakeLlmServer, protocol: Protocol, body: Behaviour
) -> None:
    llm_server.enqueue(body)

    err = fail(make_client(protocol, llm_server), protocol)

    assert (err.retryable, err.status) == (True, 200)
    assert "could not be read" in str(err)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_off_schema_json_is_returned_not_raised(
    llm_server: FakeLlmServer, protocol: Protocol
) -> None:
    payload = {"title": 42, "summary": "", "invented_field": True}
    llm_server.enqueue(off_schema(payload))

    completion = ask(make_client(protocol, llm_server))

    assert json.loads(completion.text) == payload
    with pytest.raises(pydantic.ValidationError):
        DiaryNote.model_validate_json(completion.text)
