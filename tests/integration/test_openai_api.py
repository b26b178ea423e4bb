"""OpenAI's audio API as its SDK drives it: models, translations, prompt, temperature,
language detection, streams, logprobs, content types and the error shape on every route.

Two real servers: the transcriber app under gunicorn with the packaged tiny.en (English only),
and the same routes on the packaged multilingual base in a thread of this process (for
translation and detection). Real speech: the JFK clip from ../shared/speech, and German and
Spanish spoken by espeak-ng.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from flask import Flask
from werkzeug.serving import make_server

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.transcript import Segment
from audiary.entrypoints.transcriber.openai import install_openai_errors, openai_blueprint
from audiary.evaluation.diaries import speak
from audiary.evaluation.longform import Utterance, load_manifest
from audiary.evaluation.wer import wer
from audiary.local.emulators import free_port
from audiary.local.stack import transcriber_process
from audiary.ports import DEFAULT_DECODE, DecodeOptions, Transcriber
from audiary.settings import Settings
from tests.integration.test_language import SPOKEN
from tests.paths import REPO_ROOT
from tests.speech import require_speech

pytestmark = pytest.mark.integration

MAX_WER = 0.35  # tiny.en on the clean 11 s clip
# What base makes of the German and Spanish recordings when asked for English: content words
# of the English meaning, and words of the spoken language that must not be left.
TRANSLATED = {"de": ({"today", "sister", "market"}, {"heute", "mit", "markt", "schwester"}),
              "es": ({"today", "market", "bread"}, {"hoy", "mercado", "con", "pan"})}


@pytest.fixture(scope="module")
def jfk() -> Utterance:
    require_speech()
    return next(u for u in load_manifest() if u.utt_id == "jfk")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The transcriber service as deployed (gunicorn, the whole app), serving tiny.en."""
    state = tmp_path_factory.mktemp("openai-api")
    port = free_port()
    server = transcriber_process(
        REPO_ROOT, port, state / "transcriber.log",
        {"AUDIARY_JOB_BACKEND": "memory", "AUDIARY_BLOB_BACKEND": "memory",
         "AUDIARY_PUBLISHER_BACKEND": "memory", "AUDIARY_STATE_DIR": str(state),
         "AUDIARY_MODEL": "tiny.en"})
    with server.start():
        server.wait_ready(120)
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def _serve(transcriber: Transcriber) -> Iterator[openai.OpenAI]:
    """The `/v1` routes on `transcriber`, on a real HTTP server in a thread of this process."""
    app = Flask("openai-api-test")
    app.register_blueprint(openai_blueprint(lambda _: transcriber, Settings, model_wait_s=1))
    install_openai_errors(app)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused",
                            max_retries=0, timeout=120)
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def multilingual() -> Iterator[openai.OpenAI]:
    yield from _serve(WhisperTranscriber("base", device="cpu"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("foreign")
    return {language: speak(text, folder / f"{language}.wav", voice=language, rate=140)
            for language, text in SPOKEN.items()}


def _words(text: str) -> set[str]:
    return {w.strip(".,!?;:").lower() for w in text.split()}


# Models


def test_models_lists_the_served_model_and_its_openai_alias(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny.en", "whisper-1"]
    assert {(m.object, m.owned_by) for m in models.data} == {("model", "audiary")}
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    assert client.models.retrieve("whisper-1").created == models.data[0].created


def test_an_unknown_model_is_not_found_on_both_routes(client: openai.OpenAI,
                                                      jfk: Utterance) -> None:
    with pytest.raises(openai.NotFoundError) as listing:
        client.models.retrieve("gpt-4o-transcribe")
    with pytest.raises(openai.NotFoundError) as transcribing:
        client.audio.transcriptions.create(file=jfk.audio, model="gpt-4o-transcribe")
    for caught in (listing, transcribing):
        assert caught.value.code == "model_not_found"
        assert "'tiny.en' and 'whisper-1'" in caught.value.message


# The error shape everywhere


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/files", 404, "unknown_url"),
    ("POST", "/v1/chat/completions", 404, "unknown_url"),
    ("GET", "/nowhere", 404, "unknown_url"),
    ("GET", "/v1/audio/transcriptions", 405, "method_not_allowed"),
    ("DELETE", "/v1/models", 405, "method_not_allowed"),
])
def test_unknown_routes_and_wrong_methods_answer_in_openai_shape(
        base_url: str, method: str, path: str, status: int, code: str) -> None:
    response = httpx.request(method, base_url.removesuffix("/v1") + path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert path in error["message"]
    if status == 405:
        assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]


def test_the_sdk_reads_an_unknown_route_as_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.list()
    assert "/v1/files" in caught.value.message


# Content types, prompt, temperature


@pytest.mark.parametrize(("response_format", "content_type"), [
    ("json", "application/json"), ("verbose_json", "application/json"),
    ("text", "text/plain; charset=utf-8"), ("srt", "application/x-subrip; charset=utf-8"),
    ("vtt", "text/vtt; charset=utf-8"),
])
def test_each_format_has_its_content_type(client: openai.OpenAI, jfk: Utterance,
                                          response_format: Any, content_type: str) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        file=jfk.audio, model="whisper-1", response_format=response_format)
    assert raw.headers["content-type"] == content_type


def test_the_prompt_is_the_decoders_initial_prompt(client: openai.OpenAI,
                                                   jfk: Utterance) -> None:
    """tiny.en writes this clip without punctuation; a punctuated prompt sets the style."""
    plain = client.audio.transcriptions.create(file=jfk.audio, model="whisper-1").text
    prompted = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", prompt="Ask not, my fellow Americans.").text
    assert "." not in plain
    assert "," not in plain
    assert "you. Ask" in prompted
    assert prompted.endswith(".")
    assert wer([jfk.reference], [prompted]).wer < MAX_WER


def test_temperature_above_zero_samples(client: openai.OpenAI, jfk: Utterance) -> None:
    """Greedy decoding gives one answer; sampling at 1.0 gives others. Each sample matching
    the greedy tokens and timestamps has a probability near e^-9, so three cannot all."""
    def decode(temperature: float) -> tuple[list[Any], list[float]]:
        result = client.audio.transcriptions.create(
            file=jfk.audio, model="whisper-1", response_format="verbose_json",
            temperature=temperature)
        assert result.segments
        assert {s.temperature for s in result.segments} == {temperature}
        return ([(s.start, s.end, s.tokens) for s in result.segments],
                [s.avg_logprob for s in result.segments])

    greedy = decode(0.0)
    assert decode(0.0) == greedy
    samples = [decode(1.0) for _ in range(3)]
    assert any(sample != greedy for sample in samples)


# verbose_json and logprobs


def test_verbose_json_has_the_decoders_values(client: openai.OpenAI, jfk: Utterance) -> None:
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["segment", "word"])
    assert result.segments
    assert result.words
    for segment in result.segments:
        assert segment.avg_logprob < 0.0  # a real mean log-probability, not a 0 filler
        assert 0.0 < segment.no_speech_prob < 0.6
        assert 0.5 < segment.compression_ratio < 2.4
        assert segment.tokens
        assert all(0 <= t < 50257 for t in segment.tokens)
    words = " ".join(w.word for w in result.words)
    assert _words(words) == _words(result.text)
    assert all(w.start <= w.end for w in result.words)


def test_logprobs_are_one_per_decoded_token(client: openai.OpenAI, jfk: Utterance) -> None:
    result = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", include=["logprobs"])
    assert result.logprobs
    # The SDK types a json response's bytes as floats (OpenAI's spec); they are byte values.
    spelled = b"".join(bytes(int(b) for b in item.bytes or []) for item in result.logprobs)
    assert spelled.decode().split() == result.text.split()
    assert all(item.logprob is not None and item.logprob <= 0.0 for item in result.logprobs)
    assert any(item.logprob is not None and item.logprob < -0.01 for item in result.logprobs)
    assert "".join(item.token or "" for item in result.logprobs).split() == result.text.split()


def test_logprobs_need_json(client: openai.OpenAI, jfk: Utterance) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=jfk.audio, model="whisper-1",
                                           response_format="text", include=["logprobs"])
    assert caught.value.param == "include"


def test_token_logprobs_add_up_to_the_decoders_score(jfk: Utterance) -> None:
    """The log-probabilities read from each step's logits sum (with the end token's) to the
    score CTranslate2 reports for the sequence, which it computes on its own."""
    import ctranslate2  # noqa: F401  (the engine's runtime)
    from faster_whisper.tokenizer import Tokenizer

    from audiary.adapters.whisper.engine import token_logprobs
    from tests.media import decode

    engine = WhisperTranscriber("tiny.en", device="cpu", workers=1)
    model = engine.model
    features = model.feature_extractor(decode(jfk.audio))[:, :3000]
    features = np.pad(features, ((0, 0), (0, 3000 - features.shape[1])))
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    encoded = model.encode(features[None])
    (result,) = model.model.generate(encoded, [tokenizer.sot_sequence], beam_size=1,
                                      return_scores=True, return_logits_vocab=True)
    logprobs = token_logprobs(result)
    assert len(logprobs) == len(result.sequences_ids[0]) > 10
    last = np.asarray(result.logits[0][-1], dtype=np.float64)
    allowed = last[last > -1e30]
    end = last[tokenizer.eot] - allowed.max() - np.log(np.exp(allowed - allowed.max()).sum())
    total = sum(logprobs) + end
    assert total / len(logprobs) == pytest.approx(result.scores[0], abs=2e-3)


# Streams


def test_a_stream_is_deltas_then_done(client: openai.OpenAI, jfk: Utterance) -> None:
    stream = client.audio.transcriptions.create(
        file=jfk.audio, model="whisper-1", stream=True, include=["logprobs"])
    events = list(stream)
    assert [e.type for e in events] == (
        ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"])
    deltas, done = events[:-1], events[-1]
    assert len(deltas) >= 2  # one per segment
    assert "".join(e.delta for e in deltas) == done.text
    assert wer([jfk.reference], [done.text]).wer < MAX_WER
    assert [p.logprob for e in deltas for p in e.logprobs or []] == [
        p.logprob for p in done.logprobs or []]


def test_the_streaming_response_helper_reads_server_sent_events(
        client: openai.OpenAI, jfk: Utterance) -> None:
    with client.audio.transcriptions.with_streaming_response.create(
            file=jfk.audio, model="whisper-1", stream=True) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert '"type": "transcript.text.done"' in lines[-1]


class _Gated(Transcriber):
    """Yields its first segment, then waits until the client has read it."""

    model_name = "gated"

    def __init__(self) -> None:
        self.read = threading.Event()

    def transcribe(self, samples: Any, *, language: str | None = None,
                   word_timestamps: bool | None = None,
                   options: DecodeOptions = DEFAULT_DECODE) -> list[Segment]:
        raise AssertionError("a stream must not wait for the whole transcript")

    def transcribe_stream(self, samples: Any, *, language: str | None = None,
                          word_timestamps: bool | None = None,
                          options: DecodeOptions = DEFAULT_DECODE) -> Iterator[list[Segment]]:
        yield [Segment(start=0.0, end=1.0, text="first part")]
        if not self.read.wait(30):
            raise RuntimeError("the client never saw the first part")
        yield [Segment(start=1.0, end=2.0, text="second part")]
        raise ValueError("the rest of the audio is damaged")


def test_deltas_reach_the_client_as_they_are_decoded_and_failures_end_the_stream(
        jfk: Utterance) -> None:
    gated = _Gated()
    for sdk in _serve(gated):
        stream = sdk.audio.transcriptions.create(file=jfk.audio, model="gated", stream=True)
        events = iter(stream)
        first = next(events)
        assert first.delta == "first part"
        gated.read.set()
        assert next(events).delta == " second part"
        with pytest.raises(openai.APIError) as caught:
            next(events)
        assert "damaged" in caught.value.message


def test_a_stream_takes_json_or_text_only(client: openai.OpenAI, jfk: Utterance) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=jfk.audio, model="whisper-1", stream=True,
                                           response_format="srt")  # type: ignore[call-overload]
    assert caught.value.param == "stream"


# Translation and detection (base)


@pytest.mark.parametrize("language", sorted(SPOKEN))
def test_translation_gives_english(multilingual: openai.OpenAI, foreign: dict[str, Path],
                                   language: str) -> None:
    english, spoken = TRANSLATED[language]
    result = multilingual.audio.translations.create(
        file=foreign[language], model="whisper-1", response_format="verbose_json")
    words = _words(result.text)
    assert english <= words, result.text
    assert not spoken & words, result.text
    assert (result.language, result.model_extra and result.model_extra["task"]) == (
        "english", "translate")
    assert result.segments
    assert all(s.avg_logprob < 0 for s in result.segments)


@pytest.mark.parametrize("language", sorted(SPOKEN))
def test_a_transcription_without_language_is_decoded_in_the_one_detected(
        multilingual: openai.OpenAI, foreign: dict[str, Path], language: str) -> None:
    result = multilingual.audio.transcriptions.create(
        file=foreign[language], model="base", response_format="verbose_json")
    assert result.language == {"de": "german", "es": "spanish"}[language]
    assert wer([SPOKEN[language]], [result.text]).wer < 0.5


def test_translation_formats_and_prompt(multilingual: openai.OpenAI,
                                        foreign: dict[str, Path]) -> None:
    text = multilingual.audio.translations.create(
        file=foreign["de"], model="whisper-1", response_format="text")
    assert isinstance(text, str)
    assert "sister" in text.lower()
    srt = multilingual.audio.translations.create(
        file=foreign["de"], model="whisper-1", response_format="srt")
    assert "-->" in srt
    assert "sister" in srt.lower()


def test_an_english_only_model_does_not_translate(client: openai.OpenAI,
                                                  foreign: dict[str, Path]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(file=foreign["de"], model="whisper-1")
    assert caught.value.code == "model_cannot_translate"
    assert "multilingual" in caught.value.message


def test_the_engine_streams_its_windows_in_groups_in_order() -> None:
    """Two windows first, then a batch at a time; each group's words lie in its windows, and
    the groups together say what one whole decode says."""
    from audiary.adapters.whisper.engine import STREAM_FIRST_WINDOWS
    from audiary.domain.audio import SAMPLE_RATE
    from tests.media import DEMO_SAMPLE, decode

    engine = WhisperTranscriber("tiny.en", device="cpu", workers=1, batch_size=3,
                                max_window_s=10.0)
    samples = decode(DEMO_SAMPLE)
    windows = engine.plan(samples)
    assert len(windows) > STREAM_FIRST_WINDOWS + 3
    groups = list(engine.transcribe_stream(samples))
    bounds = [0, STREAM_FIRST_WINDOWS, *range(STREAM_FIRST_WINDOWS + 3, len(windows), 3),
              len(windows)]
    assert len(groups) == len(bounds) - 1
    for group, (lo, hi) in zip(groups, itertools.pairwise(bounds), strict=True):
        first = windows[lo].pieces[0].start / SAMPLE_RATE
        last = windows[hi - 1].pieces[-1].end / SAMPLE_RATE
        assert group
        assert all(first - 0.05 <= s.start <= s.end <= last + 0.05 for s in group)
    streamed = [s for group in groups for s in group]
    assert [s.start for s in streamed] == sorted(s.start for s in streamed)
    whole = " ".join(s.text for s in engine.transcribe(samples))
    assert wer([whole], [" ".join(s.text for s in streamed)]).wer < 0.05
