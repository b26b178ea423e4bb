"""The OpenAI-compatible endpoint through the real `openai` SDK, on the transcriber under gunicorn.

One server (and one model load) for the module; real speech from ../shared/speech (the JFK
clip), scored against its reference transcript.
"""

from __future__ import annotations

import re
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import openai
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from audiary.domain.transcript import Segment
from audiary.entrypoints.transcriber.openai import SyncLimits, openai_blueprint
from audiary.evaluation.longform import Utterance, load_manifest
from audiary.evaluation.wer import wer
from audiary.local.emulators import free_port
from audiary.local.stack import transcriber_process
from audiary.ports import DEFAULT_DECODE, DecodeOptions, Transcriber
from audiary.settings import Settings
from tests.paths import REPO_ROOT
from tests.speech import require_speech
from tests.unit.test_subtitles import expected_cues, read_srt, read_vtt

pytestmark = pytest.mark.integration

MAX_WER = 0.35  # tiny.en on a clean 11 s clip; it usually scores 0
SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


@pytest.fixture(scope="module")
def limits() -> SyncLimits:
    """The limits the server applies: it reads the same environment."""
    return SyncLimits.from_settings(Settings())


@pytest.fixture(scope="module")
def jfk() -> Utterance:
    require_speech()
    return next(u for u in load_manifest() if u.utt_id == "jfk")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("openai-api")
    port = free_port()
    server = transcriber_process(
        REPO_ROOT, port, state / "transcriber.log",
        # The endpoint needs no cloud services; the push route's adapters stay in memory.
        {"AUDIARY_JOB_BACKEND": "memory", "AUDIARY_BLOB_BACKEND": "memory",
         "AUDIARY_PUBLISHER_BACKEND": "memory", "AUDIARY_STATE_DIR": str(state)})
    with server.start():
        server.wait_ready(120)
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    # No retries: a failure here should show at once, not after back-off.
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def _assert_close_to_reference(text: str, utterance: Utterance) -> None:
    score = wer([utterance.reference], [text])
    assert score.wer < MAX_WER, f"WER {score.wer:.2f} for {text!r}"


def _seconds(match: tuple[str, ...]) -> float:
    hours, minutes, secs, millis = (int(part) for part in match)
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def _cues(body: str, time_pattern: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue, checking that every cue has a timing line and text."""
    cues = []
    for block in [b for b in body.strip().split("\n\n") if b.strip()]:
        lines = block.splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        times = re.fullmatch(f"{time_pattern} --> {time_pattern}", lines[timing])
        assert times, f"bad timing line {lines[timing]!r}"
        text = " ".join(lines[timing + 1 :]).strip()
        assert text, f"cue without text: {block!r}"
        cues.append((_seconds(times.groups()[:4]), _seconds(times.groups()[4:]), text))
    return cues


def _assert_timeline(spans: list[tuple[float, float]], duration: float) -> None:
    assert spans
    for start, end in spans:
        assert 0.0 <= start <= end <= duration + 0.01
    starts = [start for start, _ in spans]
    assert starts == sorted(starts)


def test_json(client: openai.OpenAI, jfk: Utterance) -> None:
    with jfk.audio.open("rb") as fh:
        result = client.audio.transcriptions.create(file=fh, model="whisper-1")
    _assert_close_to_reference(result.text, jfk)


def test_text_with_model_language_and_prompt(client: openai.OpenAI, jfk: Utterance) -> None:
    """The served model by its own name; language and prompt are taken."""
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="tiny.en", response_format="text", language="en",
        prompt="Inaugural address, 1961.", temperature=0.0,
    )
    assert isinstance(result, str)
    _assert_close_to_reference(result, jfk)


def test_srt(client: openai.OpenAI, jfk: Utterance) -> None:
    body = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="srt"
    )
    blocks = [b for b in body.strip().split("\n\n") if b.strip()]
    assert [int(b.splitlines()[0]) for b in blocks] == list(range(1, len(blocks) + 1))
    cues = _cues(body, SRT_TIME)
    _assert_timeline([(start, end) for start, end, _ in cues], jfk.duration_s)
    _assert_close_to_reference(" ".join(text for _, _, text in cues), jfk)


def test_vtt(client: openai.OpenAI, jfk: Utterance) -> None:
    body = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="vtt"
    )
    assert body.startswith("WEBVTT\n\n")
    cues = _cues(body.removeprefix("WEBVTT"), VTT_TIME)
    _assert_timeline([(start, end) for start, end, _ in cues], jfk.duration_s)
    _assert_close_to_reference(" ".join(text for _, _, text in cues), jfk)


def test_srt_and_vtt_read_back_as_the_segments(client: openai.OpenAI, jfk: Utterance) -> None:
    """Independent parsers (`srt`, webvtt-py) find one cue per segment with its times and text.

    The three requests decode the same audio the same way (greedy, one model), so the segments
    of verbose_json are the ones the subtitles were written from.
    """
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert result.segments
    segments = [Segment(start=s.start, end=s.end, text=s.text) for s in result.segments]
    expected = expected_cues(segments)
    assert expected
    srt_body = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="srt"
    )
    vtt_body = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="vtt"
    )
    assert read_srt(srt_body) == expected
    assert read_vtt(vtt_body) == expected


def test_verbose_json_with_words_and_segments(client: openai.OpenAI, jfk: Utterance) -> None:
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english"
    assert result.duration == pytest.approx(jfk.duration_s, abs=0.1)
    _assert_close_to_reference(result.text, jfk)
    assert result.segments
    assert result.words
    _assert_timeline([(s.start, s.end) for s in result.segments], result.duration)
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        assert segment.text.strip()
        assert segment.tokens
        assert segment.avg_logprob <= 0.0
        assert 0.0 <= segment.no_speech_prob <= 1.0
        assert segment.compression_ratio > 0.0
        assert segment.temperature == 0.0
    _assert_timeline([(w.start, w.end) for w in result.words], result.duration)
    _assert_close_to_reference(" ".join(w.word for w in result.words), jfk)
    assert all(w.word == w.word.strip() for w in result.words)
    assert result.model_extra is not None
    assert "task" in result.model_extra


@pytest.mark.parametrize(
    ("granularities", "segments", "words"),
    [(None, True, False), (["word"], False, True)],
)
def test_verbose_json_granularities(
    client: openai.OpenAI,
    jfk: Utterance,
    granularities: list[Literal["word", "segment"]] | None,
    segments: bool,
    words: bool,
) -> None:
    """Segments by default; word granularity alone gives words only, as OpenAI does."""
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=granularities or openai.omit,
    )
    assert (result.segments is not None, result.words is not None) == (segments, words)
    _assert_close_to_reference(result.text, jfk)


def test_file_that_is_not_audio_is_a_bad_request(client: openai.OpenAI, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp3"  # the name says audio; the content decides
    fake.write_text("Dear diary, this is text, not a recording.\n" * 50)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=fake, model="whisper-1")
    assert "not a recognisable audio" in caught.value.message
    assert (caught.value.code, caught.value.param, caught.value.type) == (
        "not_audio", "file", "invalid_request_error",
    )


@pytest.mark.parametrize("response_format", ["diarized_json", "xml"])
def test_unsupported_response_format_is_a_bad_request(
    client: openai.OpenAI, jfk: Utterance, response_format: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            file=jfk.audio, model="whisper-1", response_format=response_format,  # type: ignore[call-overload]
        )
    assert caught.value.param == "response_format"
    assert f"response_format {response_format!r} is not supported" in caught.value.message


def test_upload_over_the_size_limit_points_to_the_bucket_flow(
    client: openai.OpenAI, limits: SyncLimits, tmp_path: Path
) -> None:
    big = tmp_path / "big.flac"
    with big.open("wb") as fh:
        fh.truncate(limits.max_upload_bytes + 1024**2)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(file=big, model="whisper-1")
    assert caught.value.status_code == 413
    assert caught.value.code == "file_too_large"
    assert limits.uploads_url in caught.value.message
    assert "POST /v1/uploads" in caught.value.message


def test_audio_over_the_duration_limit_points_to_the_bucket_flow(
    client: openai.OpenAI, limits: SyncLimits, tmp_path: Path
) -> None:
    """Small in bytes (8 kHz, 8 bit) but longer than the limit: refused before decoding."""
    long = tmp_path / "long.wav"
    with wave.open(str(long), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80" * int(8000 * (limits.max_duration_s + 60)))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(file=long, model="whisper-1")
    assert caught.value.status_code == 413
    assert caught.value.code == "audio_too_long"
    assert limits.uploads_url in caught.value.message
    assert "POST /v1/uploads" in caught.value.message


def test_request_without_a_file_gets_an_openai_error_body(base_url: str) -> None:
    response = httpx.post(f"{base_url}/audio/transcriptions",
                          data={"model": "whisper-1"}, files={"other": ("x", b"x")})
    assert response.status_code == 400
    assert response.json() == {"error": {
        "message": "No file was uploaded: send the audio as the multipart form field 'file'.",
        "type": "invalid_request_error", "param": "file", "code": None,
    }}


class _SegmentsOnly(Transcriber):
    """A transcriber without word timestamps, or one that breaks."""

    model_name = "fake"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def transcribe(self, samples: np.ndarray, *, language: str | None = None,
                   word_timestamps: bool | None = None,
                   options: DecodeOptions = DEFAULT_DECODE) -> list[Segment]:
        if self.error:
            raise self.error
        return [Segment(start=0.0, end=1.0, text="hello")]


def _app(get_model: Callable[[float], Transcriber]) -> FlaskClient:
    app = Flask("openai-api-test")
    app.register_blueprint(openai_blueprint(get_model, Settings, model_wait_s=0.01))
    return app.test_client()


def _post(client: FlaskClient, audio: Path, **fields: object) -> TestResponse:
    with audio.open("rb") as fh:
        return client.post("/v1/audio/transcriptions", content_type="multipart/form-data",
                           data={"file": (fh, "clip"), "model": "whisper-1", **fields})


def test_model_still_loading_is_a_503_to_retry(jfk: Utterance) -> None:
    def loading(timeout: float) -> Transcriber:
        raise TimeoutError("the model is still loading")

    response = _post(_app(loading), jfk.audio)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json is not None
    assert response.json["error"]["code"] == "model_loading"


def test_server_failure_is_an_openai_500_naming_the_request(jfk: Utterance) -> None:
    broken = _SegmentsOnly(RuntimeError("CUDA out of memory"))
    response = _post(_app(lambda _: broken), jfk.audio)
    assert response.status_code == 500
    assert response.json is not None
    error = response.json["error"]
    assert error["type"] == "server_error"
    assert response.headers["x-request-id"] in error["message"]
    assert "CUDA" not in error["message"]  # internals stay in the log


def test_word_timestamps_from_a_model_without_them_are_refused(jfk: Utterance) -> None:
    client = _app(lambda _: _SegmentsOnly())
    plain = _post(client, jfk.audio, response_format="verbose_json")
    assert plain.status_code == 200
    assert plain.json is not None
    assert plain.json["segments"][0]["text"] == " hello"
    words = _post(client, jfk.audio, response_format="verbose_json",
                  **{"timestamp_granularities[]": "word"})
    assert words.status_code == 400
    assert words.json is not None
    assert words.json["error"]["param"] == "timestamp_granularities"
