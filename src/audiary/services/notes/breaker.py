"""A circuit breaker per provider: stop calling a provider that keeps failing, try again
after a cool-down.

closed --N consecutive failures--> open --cool-down--> half-open --success--> closed
                                     ^----------------- failure -----------------'
State lives in the process (one function instance); each instance learns on its own.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


#: The state as a number, for the `audiary_breaker_state` gauge.
LEVELS = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class CircuitBreaker:
    def __init__(
        self, failures_to_open: int, cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def level(self) -> float:
        """The state as a gauge value: 0 closed, 1 half-open, 2 open."""
        return LEVELS[self.state]

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one trial call at a time."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial = 0, None, False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.failures_to_open:
                self._opened_at = self._clock()
            self._trial = False
