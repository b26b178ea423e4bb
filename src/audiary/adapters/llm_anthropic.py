"""`LlmClient` on Anthropic's Messages API.

Structured output by forced tool use: the schema is the input schema of one tool, and
`tool_choice` makes the model call it, so the tool call's `input` is the JSON answer.

Retries are the SDK's: `max_retries` attempts after the first, on 408/409/429/5xx (529
"overloaded" included), timeouts and connection errors, exponential backoff (0.5 s doubling,
at most 8 s, minus up to 25 % jitter) unless the server says how long to wait. In anthropic
2.10.0 see `anthropic/_base_client.py`:
- `SyncAPIClient._request`: the retry loop (`_should_retry_exception`, `_should_retry`);
- `BaseClient._parse_retry_after_header`: `retry-after-ms`, then `retry-after` in seconds or as
  an HTTP date;
- `BaseClient._calculate_retry_timeout`: any positive `Retry-After` is obeyed as is, up to
  about 50 days. Unlike the openai SDK (which gives up at once beyond 120 s), it would sleep an
  hour inside a Cloud Function if told to; `_RetryAfterLimit` below restores the openai
  behaviour so both adapters fail fast alike and leave long waits to the router.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anthropic
from anthropic.types import Message, MessageParam, ToolChoiceToolParam, ToolParam

from audiary.adapters.llm_http import SdkErrors, SdkLlmClient, retryable_status, safe_name
from audiary.adapters.retry_after import retry_after_s
from audiary.errors import ConfigError, ProviderError
from audiary.ports import Completion

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
# Longest server-requested wait the SDK may sleep through inside one call; the same limit as
# the openai SDK's MAX_RETRY_AFTER_DELAY.
MAX_RETRY_AFTER_S = 120.0


class AnthropicClient(SdkLlmClient):
    """Messages API with the answer forced through a single tool whose input schema is the
    requested schema."""

    sdk_errors = SdkErrors(anthropic.APIStatusError, anthropic.APITimeoutError,
                           anthropic.APIConnectionError, anthropic.APIResponseValidationError)
    answer_noun = "a message"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_tokens: int = 4096,
    ) -> None:
        if not api_key:
            raise ConfigError("the Anthropic provider needs an API key; none was configured")
        super().__init__(api_key, timeout_s=timeout_s, max_retries=max_retries)
        self.provider = PROVIDER
        self.model = model
        self._max_tokens = max_tokens
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            # An explicit timeout also stops the SDK from deriving one from max_tokens.
            timeout=timeout_s,
            max_retries=max_retries,
            middleware=[_RetryAfterLimit(model)],
        )

    def complete_json(
        self, *, system: str, user: str, schema_name: str, schema: dict[str, Any]
    ) -> Completion:
        """Ask for one JSON object following `schema`; its text comes back unvalidated."""
        name = safe_name(schema_name)
        tool: ToolParam = {
            "name": name,
            "description": f"Record the answer as one {schema_name} object. "
            "Call this tool exactly once with the complete answer.",
            "input_schema": schema,
        }
        tool_choice: ToolChoiceToolParam = {"type": "tool", "name": name}
        messages: list[MessageParam] = [{"role": "user", "content": user}]
        started = time.monotonic()
        message = self._request(
            lambda: self._client.messages.with_raw_response.create(
                model=self.model, max_tokens=self._max_tokens, system=system,
                messages=messages, tools=[tool], tool_choice=tool_choice),
            Message,
        )
        text, input_tokens, output_tokens = self._read(message, name)
        return self._answered(started, text, input_tokens, output_tokens,
                              getattr(message, "model", None))

    def _read(self, message: Message, name: str) -> tuple[str, int, int]:
        # The SDK builds response models without validation, so a JSON body of the wrong
        # shape surfaces here as missing attributes.
        try:
            blocks = list(message.content)
            stop_reason = message.stop_reason
            usage = message.usage
            tool_input = next(
                (b.input for b in blocks if b.type == "tool_use" and b.name == name), None
            )
        except (AttributeError, TypeError) as err:
            raise self._malformed(f"no content in the answer ({err})", 200) from None
        if tool_input is None:
            if stop_reason == "refusal":
                raise self._error("the model refused to answer", retryable=False)
            raise self._error(
                f"the answer did not call the {name} tool (stop_reason={stop_reason})",
                retryable=True,
            )
        if stop_reason == "max_tokens":
            log.warning(
                "%s answer cut off at max_tokens=%d; it will likely fail validation",
                self.provider,
                self._max_tokens,
                extra={"model": self.model},
            )
        # Cached prompt tokens are reported apart from input_tokens; all of them were read.
        input_tokens = (
            (usage.input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return json.dumps(tool_input, ensure_ascii=False), input_tokens, usage.output_tokens or 0

    def _status_detail(self, err: anthropic.APIStatusError) -> str:
        kind = f"{err.type}: " if err.type else ""
        return kind + self._detail(err.api_message or err.message)


class _RetryAfterLimit(anthropic.Middleware):
    """Fail at once, instead of sleeping, when the server asks for a wait over
    `MAX_RETRY_AFTER_S` before a retry.

    Middleware runs inside the SDK's retry loop, once per attempt; an exception it raises that
    is not an SDK error propagates to the caller unretried (`_should_retry_exception`).
    """

    def __init__(self, model: str) -> None:
        self._model = model

    def handle(
        self, request: anthropic.APIRequest, call_next: anthropic.CallNext
    ) -> anthropic.APIResponse[Any]:
        response = call_next(request)
        if retryable_status(response.status_code):
            wait = retry_after_s(response.headers)
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                response.http_response.close()
                raise ProviderError(
                    PROVIDER,
                    f"{self._model}: HTTP {response.status_code}: the server asks to wait "
                    f"{wait:g} s, more than the {MAX_RETRY_AFTER_S:g} s a call may wait; "
                    "not retried",
                    retryable=True,
                    status=response.status_code,
                    retry_after_s=wait,
                )
        return response
