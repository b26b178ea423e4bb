"""Shutdown of the transcriber: on SIGTERM, finish a chunk within the grace time or give it back.

Cloud Run sends SIGTERM when it scales an instance in and kills it 10 s later. gunicorn stops
taking connections at once and waits for the requests in flight; `post_worker_init` (see
gunicorn_conf) has SIGTERM also call `DRAIN.begin()`, so that each push handler waiting on a
chunk knows how long it has left (`AUDIARY_SHUTDOWN_GRACE_S`). A chunk not done by then is
handed back (services.transcription.hand_back): published again as a new message and this
delivery acknowledged, so the interrupted attempt costs none of the chunk's attempts.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

# How often a handler waiting on its chunk looks whether the process has begun to drain.
_TICK_S = 0.1


class Drain:
    """Whether this process is shutting down, and since when."""

    def __init__(self) -> None:
        self._since: float | None = None

    def begin(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    @property
    def draining(self) -> bool:
        return self._since is not None

    def time_left(self, grace_s: float) -> float:
        """Seconds of the grace time left (infinite while not draining)."""
        if self._since is None:
            return float("inf")
        return grace_s - (time.monotonic() - self._since)

    def wait(self, future: Future[T], grace_s: float) -> T | None:
        """The result of `future` once it is done, or None if the process started draining
        and the grace time ran out first. The future's exception, if any, is raised."""
        while True:
            left = self.time_left(grace_s)  # infinite until the process starts draining
            if left <= 0:
                return future.result() if future.done() else None
            try:
                return future.result(timeout=min(left, _TICK_S))
            except FutureTimeout:
                continue


DRAIN = Drain()


def install_sigterm_hook(drain: Drain = DRAIN) -> None:
    """Have SIGTERM begin `drain`, then do what the handler installed before (gunicorn's)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> Any:
        drain.begin()
        if callable(previous):
            return previous(signum, frame)
        return None

    signal.signal(signal.SIGTERM, on_sigterm)
