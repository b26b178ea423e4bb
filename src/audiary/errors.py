"""Project exceptions. Every error Audiary raises derives from `AudiaryError`."""

from __future__ import annotations


class AudiaryError(Exception):
    """Base class of all project errors."""


class ConfigError(AudiaryError):
    """Settings are missing or inconsistent."""


class NotFoundError(AudiaryError):
    """A job, object or document does not exist."""


class BadEventError(AudiaryError):
    """An incoming event or push envelope is malformed; retrying will not help."""


class CodedError(AudiaryError):
    """An error a user sees: `code` is a stable machine-readable reason, the message is
    written for the user (what was wrong, what to do)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RejectedInputError(CodedError):
    """Uploaded input is not acceptable audio."""


class StateError(AudiaryError):
    """A job state transition that the state machine does not allow."""


class ReviewDeskError(AudiaryError):
    """The review desk (Label Studio) is not configured, unreachable, or refused a call."""


class ProviderError(AudiaryError):
    """An LLM provider failed after its own retries.

    `retryable` says whether another try later could succeed (rate limit, overload, timeout)
    as opposed to a request that is wrong (bad key, bad model, refused content).
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class FetchError(CodedError):
    """A URL could not be fetched: it failed, answered with an error, too slowly or too much."""


class UnsafeUrlError(FetchError):
    """A URL refused before any request: scheme, credentials, port or a non-public address."""


class InvalidOutputError(AudiaryError):
    """A provider's answer did not validate, even after the repair attempt."""


class RequestError(CodedError):
    """A request a service refuses."""


class InvalidRequestError(RequestError):
    """The request names something unusable: a bad URL, a missing or foreign object."""


class TooLargeError(RequestError):
    """The request is above a size limit."""


class ConflictError(RequestError):
    """The request clashes with the state of a job (someone else's object, audio gone)."""
