"""The decoder's quality signals: which segments are uncertain, and what that changes — the
prompt marks them, the extractive writer takes no action item from them (the job's count of
them: tests/unit/test_transcription.py)."""

from __future__ import annotations

import pytest

from audiary.adapters.extractive import write_extractive
from audiary.domain.transcript import Segment, Transcript, repeats_itself
from audiary.services.notes.prompts import SYSTEM, transcript_lines


@pytest.mark.parametrize(("text", "loops"), [
    ("thank you thank you thank you thank you", True),
    ("the the the the end", True),
    ("I went to the shop, the shop, the shop, the shop.", True),
    ("thank you thank you thank you", False),  # three times is still speech
    ("I need to order the seeds by Friday.", False),
    ("", False),
])
def test_a_loop_is_a_run_said_four_times_in_a_row(text, loops):
    assert repeats_itself(text) is loops


@pytest.mark.parametrize(("fields", "uncertain"), [
    ({"avg_logprob": -0.3, "no_speech_prob": 0.1, "compression_ratio": 1.5}, False),
    ({"avg_logprob": -1.2}, True),
    ({"no_speech_prob": 0.8}, True),
    ({"compression_ratio": 2.6}, True),
    ({"repetition": True}, True),
    ({}, False),  # no signals (another engine): not marked
])
def test_uncertain_follows_whispers_own_thresholds(fields, uncertain):
    segment = Segment(start=0, end=1, text="x", **fields)
    assert segment.uncertain is uncertain
    assert segment.model_dump()["uncertain"] is uncertain  # stored with the transcript
    assert Segment.model_validate(segment.model_dump()) == segment  # and read back


def test_the_prompt_marks_uncertain_lines_and_says_what_that_means():
    lines = transcript_lines([
        Segment(start=0, end=2, text="I need to call Anna."),
        Segment(start=2, end=4, text="buy the the the the", repetition=True),
    ])
    assert lines.splitlines() == ["[0.0-2.0] I need to call Anna.",
                                  "[2.0-4.0] (uncertain) buy the the the the"]
    assert "(uncertain)" in SYSTEM
    assert "never take an action item" in SYSTEM


def test_no_action_item_comes_from_an_uncertain_line_alone():
    said = [Segment(start=0, end=3, text=" I need to order the seeds by Friday."),
            Segment(start=3.5, end=6, text=" I need to call the bank tomorrow.")]
    sure = write_extractive(Transcript(job_id="t", segments=said))
    assert len(sure.action_items) == 2
    garbled = [said[0], said[1].model_copy(update={"avg_logprob": -1.4})]
    unsure = write_extractive(Transcript(job_id="t", segments=garbled))
    assert [a.text.lower() for a in unsure.action_items] == [
        a.text.lower() for a in sure.action_items if "seeds" in a.text.lower()]
