"""The offline extractive note writer: the demo diary entry, dates, action items, determinism."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest

from audiary.adapters.extractive import EXTRACTIVE_VERSION, write_extractive
from audiary.domain.notes import DiaryNote
from audiary.domain.transcript import Segment, Transcript, Word

DEMO_TEXT = Path(__file__).resolve().parents[2] / "samples" / "diary-demo.txt"
SECONDS_PER_WORD = 0.4
# The evening of the day the demo entry describes ("Monday, the third of November"; in 2026
# that date is a Tuesday, which the note does not try to reconcile: the day of month wins).
EVENING = datetime(2026, 11, 3, 21, 15)


def _segments(text: str, words_per_segment: int = 12, *, with_words: bool = False) -> list[Segment]:
    """Whisper-like segments: fixed word counts cut across sentences, fake but consistent times."""
    words = text.split()
    segments = []
    t = 0.0
    for i in range(0, len(words), words_per_segment):
        chunk = words[i : i + words_per_segment]
        timed = [
            Word(
                start=t + k * SECONDS_PER_WORD,
                end=t + (k + 0.8) * SECONDS_PER_WORD,
                word=" " + w,
            )
            for k, w in enumerate(chunk)
        ]
        end = t + len(chunk) * SECONDS_PER_WORD
        text = " " + " ".join(chunk)
        segments.append(Segment(start=t, end=end, text=text, words=timed if with_words else None))
        t = end + 0.3
    return segments


def _transcript(text: str, words_per_segment: int = 12, *, with_words: bool = False) -> Transcript:
    return Transcript(
        job_id="t", segments=_segments(text, words_per_segment, with_words=with_words)
    )


def _note(text: str, recorded_at: datetime | None = EVENING) -> DiaryNote:
    return write_extractive(_transcript(text), recorded_at=recorded_at)


@pytest.fixture(scope="module")
def demo_text() -> str:
    return DEMO_TEXT.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def demo(demo_text: str) -> DiaryNote:
    return _note(demo_text)


def _action(note: DiaryNote, words: str):
    found = [a for a in note.action_items if words in a.text.lower()]
    assert len(found) == 1, (words, [a.text for a in note.action_items])
    return found[0]


# --- the demo entry ----------------------------------------------------------------------------


def test_demo_note_validates_against_the_schema(demo):
    assert EXTRACTIVE_VERSION == "extractive-1"
    assert demo.schema_version == "1"
    assert DiaryNote.model_validate(json.loads(demo.model_dump_json())) == demo


def test_demo_people_and_places_in_order_of_first_mention(demo):
    # "Daniel" opens a sentence first ("Daniel presented…"), "March", "November" and
    # "December" are months, "Tomorrow", "First"… are sentence openers: none of them a name.
    assert demo.people == ["Sarah", "Daniel"]
    assert demo.places == ["Elm Street", "Boston"]


def test_demo_date_is_the_day_said_at_the_start(demo, demo_text):
    assert demo.date == "2026-11-03"
    # Recorded the next morning: the said day still wins over the recording date.
    assert _note(demo_text, datetime(2026, 11, 4, 8, 0)).date == "2026-11-03"
    # A year said nowhere and no metadata: no date rather than a guess.
    assert _note(demo_text, None).date is None


def test_demo_action_items_with_due_dates(demo):
    seeds = _action(demo, "order the seeds")
    # "by Friday" said on Tuesday 2026-11-03: that week's Friday.
    assert seeds.due == "2026-11-06"
    assert date.fromisoformat(seeds.due).weekday() == 4
    # "Tomorrow I have to remember three things. First, … Second, … Third, …"
    for words in ("send the invoice", "book a dentist appointment", "call daniel"):
        assert _action(demo, words).due == "2026-11-04"
    # "I promised to visit her next weekend": the coming Saturday.
    assert _action(demo, "visit her").due == "2026-11-07"
    # Due words are not left in the text; "we should plant" (someone else's idea) is no task.
    assert seeds.text == "Order the seeds"
    assert not any("plant" in a.text.lower() for a in demo.action_items)
    assert len(demo.action_items) == 5


def test_demo_due_dates_follow_the_calendar_of_the_recording(demo_text):
    # In 2025 the third of November is the Monday the entry names; Friday is then the 7th.
    note = _note(demo_text, datetime(2025, 11, 3, 22, 0))
    assert note.date == "2025-11-03"
    assert _action(note, "order the seeds").due == "2025-11-07"
    assert _action(note, "call daniel").due == "2025-11-04"


def test_demo_mood_is_what_the_speaker_said_feeling(demo):
    assert demo.mood == "relieved, grateful"


def test_demo_summary_highlights_tags_title(demo, demo_text):
    flat = " ".join(demo_text.split())
    sentences = demo.summary.replace(". ", ".\n").splitlines()
    assert 3 <= len(sentences) <= 5
    assert all(s in flat for s in sentences)
    positions = [flat.index(s) for s in sentences]
    assert positions == sorted(positions)
    assert {h.text for h in demo.highlights} >= set(sentences)
    # Only content word said twice that is no name: the budget.
    assert demo.tags[0] == "budget"
    assert 3 <= len(demo.tags) <= 6
    assert all(t == t.lower() and " " not in t for t in demo.tags)
    assert demo.title.lower().startswith("budget")
    assert len(demo.title) <= 80


def test_every_source_lies_within_the_transcript_and_its_sentence(demo_text):
    transcript = _transcript(demo_text)
    note = write_extractive(transcript, recorded_at=EVENING)
    end = transcript.segments[-1].end
    statements = [*note.highlights, *note.action_items]
    assert statements
    for statement in statements:
        source = statement.source
        assert source is not None
        assert 0.0 <= source.start < source.end <= end + 0.001  # times are rounded to ms
        # The segments the range covers, joined, contain every word of the statement.
        covered = " ".join(
            s.text.lower() for s in transcript.segments
            if s.end > source.start and s.start < source.end
        )
        assert all(w in covered for w in re.findall(r"[a-z]+", statement.text.lower()))


def test_word_timestamps_narrow_sources_to_the_words(demo_text):
    transcript = _transcript(demo_text, with_words=True)
    note = write_extractive(transcript, recorded_at=EVENING)
    seeds = _action(note, "order the seeds")
    words = [w for s in transcript.segments for w in s.words or []]
    said = [w for w in words if w.word.strip() in {"order", "seeds", "by", "Friday."}]
    assert seeds.source is not None
    assert seeds.source.start == pytest.approx(said[0].start)
    # The clause "order the seeds by Friday" and not the whole segment around it.
    assert seeds.source.end - seeds.source.start < 6 * SECONDS_PER_WORD


def test_title_hint_wins_and_is_cut_to_80(demo_text):
    transcript = _transcript(demo_text)
    assert write_extractive(transcript, title_hint="  Garden day ").title == "Garden day"
    long_title = write_extractive(transcript, title_hint="word " * 40).title
    assert len(long_title) <= 80
    assert long_title.endswith("…")


# --- determinism -------------------------------------------------------------------------------

_CHILD = """
import json, sys
from datetime import datetime
from audiary.domain.transcript import Transcript
from audiary.adapters.extractive import write_extractive
t = Transcript.model_validate_json(sys.stdin.read())
sys.stdout.write(write_extractive(t, recorded_at=datetime(2026, 11, 3, 21, 15)).model_dump_json())
"""


def test_same_input_gives_a_byte_identical_note(demo_text):
    transcript = _transcript(demo_text)
    first = write_extractive(transcript, recorded_at=EVENING).model_dump_json()
    assert write_extractive(transcript, recorded_at=EVENING).model_dump_json() == first
    # Other processes with other string hash seeds: set order must not leak into the note.
    for seed in ("1", "4242"):
        child = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=transcript.model_dump_json(),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
        )
        assert child.stdout == first


# --- dates and due dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "expected"),
    [
        ("Monday, the third of November.", "2026-11-03"),
        ("November 3rd.", "2026-11-03"),
        ("3 November 2025.", "2025-11-03"),
        ("2026-10-30.", "2026-10-30"),
        ("The twenty-first of October.", "2026-10-21"),
        ("Today was long.", "2026-11-03"),
        ("Yesterday was long.", "2026-11-02"),
        ("Friday.", "2026-10-30"),  # the latest Friday up to the recording
        ("It rained.", "2026-11-03"),  # nothing said: the recording date
    ],
)
def test_note_date(opening, expected):
    note = _note(f"{opening} I walked to the park and fed the ducks with bread.")
    assert note.date == expected


def test_date_without_a_year_takes_the_year_nearest_the_recording():
    note = _note("The thirtieth of December. We had snow.", datetime(2027, 1, 2, 10, 0))
    assert note.date == "2026-12-30"


@pytest.mark.parametrize(
    ("said", "text", "due"),
    [
        ("I need to order the seeds by Friday.", "Order the seeds", "2026-11-06"),
        ("I have to pay the rent tomorrow.", "Pay the rent", "2026-11-04"),
        ("Remember to water the plants next weekend.", "Water the plants", "2026-11-07"),
        ("I must renew my passport on the fifteenth of December.", "Renew my passport",
         "2026-12-15"),
        ("I should finish the report in two weeks, because the boss asked.", "Finish the report",
         "2026-11-17"),
        ("Don't forget to buy milk.", "Buy milk", None),
        ("Tomorrow I will call the plumber.", "Call the plumber", "2026-11-04"),
        ("I promised to bake a cake for the third of January.", "Bake a cake", "2027-01-03"),
    ],
)
def test_action_items_and_due_dates(said, text, due):
    note = _note(f"Today was quiet. {said}")
    assert [(a.text, a.due) for a in note.action_items] == [(text, due)]


def test_relative_due_dates_need_a_day_to_count_from():
    note = _note("I need to order the seeds by Friday. I must call the bank.", None)
    assert [(a.text, a.due) for a in note.action_items] == [
        ("Order the seeds", None),
        ("Call the bank", None),
    ]


@pytest.mark.parametrize(
    "said",
    [
        "I should have called her earlier.",
        "I will probably sleep well.",  # a plan needs a time: no "tomorrow", no task
        "I have to admit the film was good.",
        "She needs to rest.",
        "We should plant tomatoes in March.",
    ],
)
def test_not_action_items(said):
    assert _note(f"Today was quiet. {said}").action_items == []


def test_enumeration_in_one_sentence():
    note = _note("I need to do three things: first, buy milk; second, email Peter; third, clean "
                 "the garage. Then I slept.")
    assert [a.text for a in note.action_items] == ["Buy milk", "Email Peter", "Clean the garage"]
    assert note.people == ["Peter"]


# --- people, places, mood ----------------------------------------------------------------------


def test_people_and_places_from_the_words_around_them():
    note = _note(
        "Yesterday I had lunch with Tom and Anna in Paris and Rome. Later I talked to Maria "
        "about the trip to Lisbon. We walked along Main Street to the Louvre. The Chinese "
        "delegation and my fellow Americans read the Bible."
    )
    assert note.people == ["Tom", "Anna", "Maria"]
    assert note.places == ["Paris", "Rome", "Lisbon", "Main Street", "Louvre"]


def test_misheard_street_is_no_person():
    # faster-whisper tiny.en on the demo recording hears "on Elm Street" as "on Elm's treat".
    note = _note("I met Sarah at the coffee shop on Elm's treat before work. I ate at Tom's.")
    assert note.people == ["Sarah", "Tom"]
    assert note.places == []


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("I felt so tired after work. The bus was late.", "tired"),
        ("I am not stressed at all. I feel happy and calm.", "happy, calm"),
        ("This is the sick corpus, recorded in a room.", None),  # not about the speaker
        ("We walked to the shop.", None),
    ],
)
def test_mood(text, mood):
    assert _note(text).mood == mood


# --- odd transcripts ---------------------------------------------------------------------------


def test_no_speech_gives_a_valid_note_that_says_so():
    note = write_extractive(
        Transcript(job_id="t", segments=[Segment(start=0, end=1, text="  ")]), recorded_at=EVENING
    )
    assert note.summary
    assert note.highlights == []
    assert note.action_items == []
    assert note.tags == []
    assert note.date == "2026-11-03"
    assert DiaryNote.model_validate(note.model_dump()) == note


def test_unpunctuated_speech_is_cut_at_segment_ends():
    words = ("so i went to the market and bought apples and pears and then i met my neighbour "
             "and we talked about the weather and the garden and the new fence ") * 6
    transcript = _transcript(words, words_per_segment=10)
    note = write_extractive(transcript)
    assert note.date is None
    assert 1 <= len(note.highlights) <= 6
    assert all(len(h.text.split()) <= 60 for h in note.highlights)
    assert {"garden", "market"} & set(note.tags)
