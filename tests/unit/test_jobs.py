from datetime import UTC, datetime, timedelta

import pytest

from audiary.domain.jobs import (
    Job,
    JobStatus,
    SourceObject,
    can_advance,
    check_advance,
    job_id_for,
)
from audiary.errors import StateError

S = JobStatus
PIPELINE = [S.RECEIVED, S.QUEUED, S.TRANSCRIBING, S.TRANSCRIBED, S.SUMMARIZING, S.DONE]


@pytest.mark.parametrize("i", range(len(PIPELINE) - 1))
def test_forward_moves_are_allowed(i):
    for later in PIPELINE[i + 1 :]:
        assert can_advance(PIPELINE[i], later)


@pytest.mark.parametrize("i", range(len(PIPELINE)))
def test_never_backwards_or_in_place(i):
    for earlier in PIPELINE[: i + 1]:
        assert not can_advance(PIPELINE[i], earlier)


def test_end_states_are_final():
    for end in (S.DONE, S.FAILED, S.REJECTED):
        for target in S:
            assert not can_advance(end, target)


def test_failed_from_any_live_state_rejected_only_at_ingest():
    for live in PIPELINE[:-1]:
        assert can_advance(live, S.FAILED)
    assert can_advance(S.RECEIVED, S.REJECTED)
    for later in PIPELINE[1:]:
        assert not can_advance(later, S.REJECTED)


def test_check_advance_names_both_states():
    with pytest.raises(StateError, match="TRANSCRIBED to QUEUED"):
        check_advance(S.TRANSCRIBED, S.QUEUED)


def test_job_id_is_stable_and_distinguishes_generations():
    a = job_id_for("b", "inbox/x.wav", "1")
    assert a == job_id_for("b", "inbox/x.wav", "1")
    assert a != job_id_for("b", "inbox/x.wav", "2")
    assert a != job_id_for("b2", "inbox/x.wav", "1")
    assert len(a) == 24


def test_stage_seconds_from_timestamps():
    t0 = datetime(2026, 11, 3, tzinfo=UTC)
    job = Job(
        job_id="j",
        source=SourceObject(bucket="b", name="n", generation="1"),
        timestamps={
            "QUEUED": t0 + timedelta(seconds=2),
            "RECEIVED": t0,
            "TRANSCRIBING": t0 + timedelta(seconds=2.5),
            "TRANSCRIBED": t0 + timedelta(seconds=10),
        },
    )
    assert job.stage_seconds() == {"RECEIVED": 2.0, "QUEUED": 0.5, "TRANSCRIBING": 7.5}
