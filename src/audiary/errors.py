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


class RejectedInputError(AudiaryError):
    """Uploaded input is not acceptable audio.

    `code` is a stable machine-readable reason, the message is written for the user.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StateError(AudiaryError):
    """A job state transition that the state machine does not allow."""
