from audiary.services.notes.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_and_closes_after_a_good_trial():
    clock = Clock()
    breaker = CircuitBreaker(3, cooldown_s=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()

    clock.now = 29.9
    assert not breaker.allow()
    clock.now = 30
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_opens_again_for_a_full_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(1, cooldown_s=10, clock=clock)
    breaker.record_failure()
    clock.now = 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 19
    assert not breaker.allow()
    clock.now = 20
    assert breaker.allow()


def test_success_resets_the_count():
    breaker = CircuitBreaker(2, cooldown_s=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
