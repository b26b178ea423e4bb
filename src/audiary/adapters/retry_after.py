"""`Retry-After` as the OpenAI and Anthropic SDKs read it, shared by every HTTP adapter."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

__all__ = ["parse_retry_after", "retry_after_s"]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (seconds or an HTTP date), None if absent or
    unreadable; a date in the past is 0."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the server asked to wait: `retry-after-ms`, else `retry-after`."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            millis = float(value)
        except ValueError:
            millis = math.nan
        if math.isfinite(millis) and millis >= 0:
            return millis / 1000
    return parse_retry_after(headers.get("retry-after"), time.time() if now is None else now)
