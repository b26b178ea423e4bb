import json

from audiary.domain.transcript import Segment, Transcript, Word, assemble, render


def _t():
    return Transcript(
        job_id="j",
        segments=[
            Segment(start=0.0, end=2.5, text=" Hello there."),
            Segment(start=3661.2345, end=3663.0, text=" An hour later. "),
        ],
    )


def test_srt():
    assert render(_t(), "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n01:01:01,234 --> 01:01:03,000\nAn hour later.\n\n"
    )


def test_vtt():
    assert render(_t(), "vtt") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.234 --> 01:01:03.000\nAn hour later.\n"
    )


def test_txt_and_json():
    assert render(_t(), "txt") == "Hello there. An hour later.\n"
    doc = json.loads(render(_t(), "json"))
    assert doc["segments"][1]["start"] == 3661.2345
    assert Transcript.model_validate(doc) == _t()


def test_assemble_orders_chunks_and_offsets_times():
    words = [Word(start=0.1, end=0.4, word=" two")]
    transcript = assemble(
        "j",
        [
            (30.0, [Segment(start=1.0, end=2.0, text=" two", words=words)]),
            (0.0, [Segment(start=0.5, end=1.5, text=" one")]),
        ],
    )
    assert [s.text for s in transcript.segments] == [" one", " two"]
    assert transcript.segments[1].start == 31.0
    assert transcript.segments[1].words[0].start == 30.1
    assert transcript.text == "one two"
