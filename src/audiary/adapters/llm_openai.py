"""`LlmClient` on the OpenAI Chat Completions API, and on any server that speaks it
(vLLM, Ollama, LM Studio, llama.cpp) through `base_url`.

Structured output: `response_format={"type": "json_schema", ..., "strict": True}` with the
schema made strict-compatible here (see `strict_json_schema`). The SDK's public helpers for this
(`client.chat.completions.parse(response_format=Model)`, `openai.pydantic_function_tool`) take a
pydantic class, while the port hands us a JSON Schema dict, so the conversion is ours.

Retries are the SDK's, not ours: `max_retries` attempts after the first, on 408/409/429/5xx,
timeouts and connection errors, with exponential backoff (0.5 s doubling, at most 8 s, minus up
to 25 % jitter) unless the server says how long to wait. In openai 3.51.0 see
`openai/_base_client.py`:
- `SyncAPIClient.request`: the retry loop (timeouts, connection errors, `_should_retry`);
- `BaseClient._should_retry`: which statuses retry, and no retry at all when `Retry-After`
  exceeds `MAX_RETRY_AFTER_DELAY` (120 s, `openai/_constants.py`): the error comes back at once;
- `BaseClient._parse_retry_after_header`: `retry-after-ms`, then `retry-after` in seconds or as
  an HTTP date;
- `BaseClient._calculate_retry_timeout`: waits exactly that long when 0 < wait <= 120 s,
  otherwise backoff with jitter (`INITIAL_RETRY_DELAY`, `MAX_RETRY_DELAY` in `_constants.py`).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from audiary.adapters.llm_http import SdkErrors, SdkLlmClient, safe_name
from audiary.errors import ConfigError
from audiary.ports import Completion

log = logging.getLogger(__name__)

# Keywords OpenAI's strict mode does not accept. Dropping them only loosens the schema; the
# router validates every answer against the full pydantic model anyway.
_UNSUPPORTED_STRICT_KEYWORDS = frozenset({"minLength", "maxLength"})
# Local OpenAI-compatible servers ignore the key, but the SDK refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"


class OpenAiClient(SdkLlmClient):
    """Chat Completions with a JSON Schema answer format.

    `strict=True` (the default) sends the schema as strict `json_schema`: OpenAI enforces it
    while decoding, and vLLM, Ollama and LM Studio accept the same request (they constrain
    decoding with their own grammars). `strict=False` is for OpenAI-compatible servers that
    reject `json_schema` or choke on the schema: it asks for `json_object` (any JSON object) and
    puts the schema in the system prompt, so conformance rests on the model and the router's
    validation.
    """

    sdk_errors = SdkErrors(openai.APIStatusError, openai.APITimeoutError,
                           openai.APIConnectionError, openai.APIResponseValidationError)
    answer_noun = "a chat completion"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        provider: str = "openai",
        strict: bool = True,
    ) -> None:
        if not api_key and provider == "openai":
            raise ConfigError("the OpenAI provider needs an API key; none was configured")
        if base_url is None and provider != "openai":
            # Without a base URL the SDK would send this provider's requests to OpenAI.
            raise ConfigError(f"provider {provider!r} needs the base URL of its server")
        super().__init__(api_key, timeout_s=timeout_s, max_retries=max_retries)
        self.provider = provider
        self.model = model
        self.strict = strict
        self._client = openai.OpenAI(
            api_key=api_key or _PLACEHOLDER_KEY,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
        )

    def complete_json(
        self, *, system: str, user: str, schema_name: str, schema: dict[str, Any]
    ) -> Completion:
        """Ask for one JSON object following `schema`; its text comes back unvalidated."""
        name = safe_name(schema_name)
        response_format: ResponseFormat
        if self.strict:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": strict_json_schema(schema), "strict": True},
            }
        else:
            response_format = {"type": "json_object"}
            system = (
                f"{system}\n\nAnswer with one JSON object and nothing else. It must follow this "
                f"JSON Schema (named {name}):\n{json.dumps(schema)}"
            )
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        started = time.monotonic()
        completion = self._request(
            lambda: self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, response_format=response_format),
            ChatCompletion,
        )
        text, input_tokens, output_tokens = self._read(completion)
        return self._answered(started, text, input_tokens, output_tokens,
                              getattr(completion, "model", None))

    def _read(self, completion: ChatCompletion) -> tuple[str, int, int]:
        # The SDK builds response models without validation, so a JSON body of the wrong
        # shape surfaces here as missing attributes.
        try:
            choice = completion.choices[0]
            message = choice.message
            usage = completion.usage
        except (AttributeError, IndexError, TypeError) as err:
            raise self._malformed(f"no choices in the answer ({err})", 200) from None
        if message.refusal:
            raise self._error(
                f"the model refused: {self._detail(message.refusal)}", retryable=False
            )
        if not message.content:
            raise self._error(
                f"empty answer (finish_reason={choice.finish_reason})", retryable=True
            )
        if choice.finish_reason == "length":
            log.warning(
                "%s answer cut off at the token limit; it will likely fail validation",
                self.provider,
                extra={"model": self.model},
            )
        input_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
        return message.content, input_tokens or 0, output_tokens or 0

    def _status_detail(self, err: openai.APIStatusError) -> str:
        body = err.body
        detail = body.get("message") if isinstance(body, dict) else body
        return self._detail(detail or err.message)


def strict_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `schema` that OpenAI's strict mode accepts.

    Same rules as the SDK applies to pydantic models (`openai.lib._pydantic`, private): objects
    get `additionalProperties: false` and list every property as required, `$ref`s with
    sibling keys are inlined, null defaults dropped; in addition the string-length keywords
    strict mode rejects are removed.
    """
    root = copy.deepcopy(dict(schema))
    return _make_strict(root, root)


def _make_strict(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if isinstance(defs, dict):
            for sub in defs.values():
                if isinstance(sub, dict):
                    _make_strict(sub, root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        for sub in properties.values():
            if isinstance(sub, dict):
                _make_strict(sub, root)
    items = node.get("items")
    if isinstance(items, dict):
        _make_strict(items, root)
    for key in ("anyOf", "allOf"):
        variants = node.get(key)
        if isinstance(variants, list):
            for sub in variants:
                if isinstance(sub, dict):
                    _make_strict(sub, root)
    if "default" in node and node["default"] is None:
        del node["default"]
    for keyword in _UNSUPPORTED_STRICT_KEYWORDS & node.keys():
        del node[keyword]
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        # Strict mode rejects a $ref with siblings (e.g. a description): inline the target.
        target = _resolve_ref(root, ref)
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        node.clear()
        node.update(merged)
        return _make_strict(node, root)
    return node


def _resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    if not isinstance(target, dict):
        raise ValueError(f"$ref {ref!r} does not point at a schema object")
    return target
