"""What the OpenAI and Anthropic adapters share about their HTTP answers."""

from __future__ import annotations

import re
from collections.abc import Mapping

from audiary.adapters.retry_after import retry_after_s

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
