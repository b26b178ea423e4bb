"""What the OpenAI and Anthropic adapters share: names, statuses, error texts, the call."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from audiary.adapters.retry_after import retry_after_s
from audiary.errors import ProviderError
from audiary.ports import Completion, LlmClient

log = logging.getLogger(__name__)

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
MAX_DETAIL_CHARS = 300


def safe_name(name: str) -> str:
    """A schema or tool name both APIs accept: [a-zA-Z0-9_-]{1,64}."""
    return (_NAME_UNSAFE.sub("_", name) or "answer")[:64]


def retryable_status(status: int) -> bool:
    """The statuses the SDKs themselves retry (`BaseClient._should_retry`): once they give up
    on these, trying again later or elsewhere can still work."""
    return status in (408, 409, 429) or status >= 500


def redact(value: object, secret: str) -> str:
    """Server-supplied text, shortened and with the API key blanked out (some servers and
    proxies echo it back)."""
    text = str(value)
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def status_message(
    status: int, detail: str, headers: Mapping[str, str]
) -> tuple[str, float | None]:
    """The error text for an HTTP failure, and the wait the server asked for, if any."""
    wait = retry_after_s(headers)
    asked = f" (the server asks to wait {wait:g} s)" if wait is not None else ""
    return f"HTTP {status}: {detail}{asked}", wait


A = TypeVar("A")


@dataclass(frozen=True)
class SdkErrors:
    """The exception classes of one Stainless-generated SDK (openai, anthropic)."""

    status: type[Exception]  # APIStatusError: the server answered with an error status
    timeout: type[Exception]  # APITimeoutError
    connection: type[Exception]  # APIConnectionError
    validation: type[Exception]  # APIResponseValidationError


class SdkLlmClient(LlmClient):
    """What the OpenAI and Anthropic clients share: one raw-response call with every failure
    turned into a `ProviderError` that says what happened, and the report of an answer.

    Subclasses set `provider`, `model`, `sdk_errors` and `answer_noun`, and say how an error
    status reads (`_status_detail`)."""

    sdk_errors: SdkErrors
    answer_noun: str  # what a good answer is, e.g. "a chat completion"

    def __init__(self, api_key: str, *, timeout_s: float, max_retries: int) -> None:
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_retries = max_retries

    def _status_detail(self, err: Any) -> str:
        """The server's own words for an error status, redacted (`_detail`)."""
        raise NotImplementedError

    def _request(self, create: Callable[[], Any], answer_type: type[A]) -> A:
        """`create()` a raw response and parse it into `answer_type`.

        The raw-response form separates transport (create) from parsing (parse), so a body
        the SDK cannot decode is told apart from a failed request.
        """
        errors = self.sdk_errors
        try:
            raw = create()
        except errors.status as err:
            status = int(getattr(err, "status_code", 0))
            headers = getattr(err, "response").headers  # noqa: B009 - typed per SDK
            message, wait = status_message(status, self._status_detail(err), headers)
            raise self._error(message, retryable=retryable_status(status), status=status,
                              retry_after_s=wait) from None
        except errors.timeout:
            raise self._error(
                f"no answer within {self._timeout_s:g} s (after {self._max_retries} retries)",
                retryable=True,
            ) from None
        except errors.connection as err:
            raise self._error(
                f"cannot reach the server ({getattr(err, 'message', err)}) after "
                f"{self._max_retries} retries; check the base URL and network",
                retryable=True,
            ) from None
        try:
            answer: object = raw.parse()
        except (ValueError, errors.validation) as err:
            raise self._malformed(f"{type(err).__name__}: {err}", raw.status_code) from None
        if not isinstance(answer, answer_type):
            # The SDKs hand back the bare text when the body is not JSON.
            raise self._malformed(
                f"content-type {raw.headers.get('content-type')!r}", raw.status_code
            )
        return answer

    def _answered(self, started: float, text: str, input_tokens: int, output_tokens: int,
                  answer_model: str | None) -> Completion:
        log.debug(
            "%s answered",
            self.provider,
            extra={
                "model": self.model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "duration_s": round(time.monotonic() - started, 3),
            },
        )
        return Completion(text=text, input_tokens=input_tokens, output_tokens=output_tokens,
                          model=answer_model or self.model)

    def _malformed(self, why: str, status: int) -> ProviderError:
        return self._error(
            f"answer could not be read as {self.answer_noun} ({self._detail(why)})",
            retryable=True,
            status=status,
        )

    def _error(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> ProviderError:
        return ProviderError(
            self.provider,
            f"{self.model}: {message}",
            retryable=retryable,
            status=status,
            retry_after_s=retry_after_s,
        )

    def _detail(self, value: object) -> str:
        return redact(value, self._api_key)
