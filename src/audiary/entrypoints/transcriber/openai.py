"""OpenAI-compatible speech to text on the transcriber service: `POST /v1/audio/transcriptions`.

Clients written for OpenAI's API work unchanged: the official SDK with
`base_url="http://<host>/v1"`, or curl with a multipart form (`file`, `model`, `language`,
`prompt`, `temperature`, `response_format`, `timestamp_granularities[]`). Responses and errors
have OpenAI's shapes: `json` -> `{"text", "usage"}`; `text`, `srt`, `vtt` -> plain text;
`verbose_json` -> task, language, duration, text, `segments` (unless only word granularity is
asked for), `words` (when asked for), usage; errors -> `{"error": {message, type, param, code}}`.

The request is synchronous, so it takes files up to a size and a duration limit
(`sync_max_upload_bytes`, `sync_max_duration_s`); larger ones get a 413 that points to the
bucket flow, which cuts a recording into chunks and transcribes them in parallel. The upload is
decoded and validated by content with the same PyAV path as ingest, with ingest's error codes.

Where it differs from OpenAI, and why:
- `model` may say anything: the loaded model transcribes, and nothing echoes the name asked for.
- `prompt` and `temperature` are checked but not used: `WhisperTranscriber` takes no initial
  prompt and always decodes at temperature 0.
- A segment's `tokens` are its text encoded with the model's tokenizer (no timestamp tokens);
  `seek` is the 10 ms frame the segment starts at, since segments come from windows packed from
  speech pieces rather than from one seek position; `temperature` is 0.0.
- `verbose_json`'s `language` is the language decoded in: the one asked for, else the
  configured one, else the one Whisper detects on the first 30 s (then used for the whole file).
- `diarized_json` and `stream=true` are refused with 400.

Access control is the platform's (Cloud Run IAM: an identity token works as the SDK's api_key).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast, get_args

from flask import Blueprint, Response, jsonify, request
from numpy.typing import NDArray
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from audiary.domain.audio import SAMPLE_RATE, WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.transcript import Segment, Transcript, render
from audiary.errors import AudiaryError, RejectedInputError
from audiary.observability.telemetry import inference
from audiary.ports import Transcriber
from audiary.services.decode import AudioLimits, decode_to_canonical
from audiary.settings import Settings

__all__ = [
    "ApiError",
    "SyncLimits",
    "openai_blueprint",
]

log = logging.getLogger(__name__)

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["word", "segment"]

_FORM_OVERHEAD_BYTES = 64 * 1024  # the other form fields and the multipart boundaries
# An over-limit body is read and dropped up to this size before answering 413: clients such
# as httpx send the whole body before reading the answer, and a server that closes on an unread
# body makes them report a broken connection instead of the 413's message.
_DRAIN_MAX_BYTES = 128 * 1024**2
_RETRY_AFTER_S = 5

# Whisper's language codes and the names OpenAI reports them by (openai/whisper tokenizer.py).
_LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}
_LANGUAGE_CODES = {name: code for code, name in _LANGUAGE_NAMES.items()}


class ApiError(AudiaryError):
    """A request that ends in an OpenAI-shaped error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def response(self) -> Response:
        """`{"error": {...}}` with this error's status."""
        response = jsonify(
            error={
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        )
        response.status_code = self.status
        if self.status == 503:
            response.headers["Retry-After"] = str(_RETRY_AFTER_S)
        return response


@dataclass(frozen=True)
class SyncLimits:
    """What one synchronous request may carry, and where larger recordings should go."""

    max_upload_bytes: int
    max_duration_s: float
    uploads_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncLimits:
        """The sync limits, never above ingest's own."""
        return cls(
            max_upload_bytes=min(settings.sync_max_upload_bytes, settings.max_upload_bytes),
            max_duration_s=min(settings.sync_max_duration_s, settings.max_duration_s),
            uploads_url=f"gs://{settings.uploads_bucket}/{settings.inbox_prefix}",
        )

    @property
    def elsewhere(self) -> str:
        """Where a recording too big for this endpoint can go instead."""
        return (
            f"For larger recordings upload to {self.uploads_url} or POST /v1/uploads on the "
            "Audiary API: that flow transcribes them in chunks, in parallel."
        )


@dataclass(frozen=True)
class Options:
    """The form fields of a transcription request, checked."""

    response_format: ResponseFormat
    granularities: frozenset[Granularity]
    language: str | None
    prompt: str | None
    temperature: float

    @property
    def words(self) -> bool:
        return "word" in self.granularities


def openai_blueprint(
    get_model: Callable[[float], Transcriber],
    get_settings: Callable[[], Settings],
    *,
    model_wait_s: float = 10.0,
) -> Blueprint:
    """The `/v1` routes; `get_model(timeout_s)` returns the loaded transcriber.

    `get_model` raises `TimeoutError` while the model is still loading and `RuntimeError` when
    it failed to load (as `ModelHolder.get` does); a request waits up to `model_wait_s` for it,
    then gets a 503 with Retry-After, which the SDK retries.
    """
    blueprint = Blueprint("openai", __name__, url_prefix="/v1")

    @blueprint.post("/audio/transcriptions")
    def create_transcription() -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            response = _transcribe_request(get_model, get_settings(), model_wait_s)
        except ApiError as exc:
            log.info("transcription request %s refused: %s", request_id, exc.message)
            response = exc.response()
        except HTTPException as exc:
            response = ApiError(exc.code or 400, exc.description or exc.name).response()
        except Exception:
            log.exception("transcription request %s failed", request_id)
            response = ApiError(
                500,
                f"The transcription failed on the server (request {request_id}). "
                "Try again; if it keeps failing, report the request id.",
                error_type="server_error",
            ).response()
        response.headers["x-request-id"] = request_id
        return response

    return blueprint


def _transcribe_request(
    get_model: Callable[[float], Transcriber], settings: Settings, model_wait_s: float
) -> Response:
    limits = SyncLimits.from_settings(settings)
    if (request.content_length or 0) > limits.max_upload_bytes + _FORM_OVERHEAD_BYTES:
        _drain()
        raise _too_large(limits)
    # Also bounds a body sent without Content-Length, as werkzeug reads it.
    request.max_content_length = limits.max_upload_bytes + _FORM_OVERHEAD_BYTES
    if not request.mimetype.startswith("multipart/form-data"):
        raise ApiError(
            400,
            "Send the request as multipart/form-data with the audio in the 'file' field.",
        )
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge as exc:
        if request.content_length is not None:
            # The body as a whole was within the limit: a text field is over Flask's cap.
            raise ApiError(
                413, "A form field other than 'file' is too large (prompt is meant to be short)."
            ) from exc
        _drain()  # sent without Content-Length and ran past the limit
        raise _too_large(limits) from exc
    options = _parse_options(form)
    upload = files.get("file")
    if upload is None:
        raise ApiError(
            400,
            "No file was uploaded: send the audio as the multipart form field 'file'.",
            param="file",
        )
    if options.prompt or options.temperature:
        log.debug("prompt and temperature are accepted but not used by this transcriber")
    started = time.monotonic()
    samples, duration_s = _decode_upload(upload, limits, settings)
    transcriber = _loaded(get_model, model_wait_s)
    language = _resolve_language(options.language, transcriber, samples)
    segments = _run(transcriber, samples, language, words=options.words)
    log.info(
        "transcribed %.1f s of audio in %.1f s (%s, %d segments, %s)",
        duration_s,
        time.monotonic() - started,
        transcriber.model_name,
        len(segments),
        options.response_format,
    )
    return _render(options, segments, language, duration_s, transcriber.tokenize)


def _parse_options(form: MultiDict[str, str]) -> Options:
    response_format = form.get("response_format") or "json"
    if response_format not in get_args(ResponseFormat):
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported; use one of "
            f"{', '.join(get_args(ResponseFormat))}.",
            param="response_format",
            code="unsupported_value",
        )
    granularities = [
        value
        for key in ("timestamp_granularities[]", "timestamp_granularities")
        for value in form.getlist(key)
    ]
    if unknown := sorted(set(granularities) - set(get_args(Granularity))):
        raise ApiError(
            400,
            f"timestamp_granularities {unknown} are not supported; use 'word' and/or 'segment'.",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            "timestamp_granularities needs response_format 'verbose_json'.",
            param="timestamp_granularities",
        )
    if form.get("stream", "false").lower() == "true":
        raise ApiError(
            400, "Streaming is not supported; leave 'stream' unset.", param="stream"
        )
    return Options(
        response_format=cast(ResponseFormat, response_format),
        granularities=frozenset(cast(list[Granularity], granularities)) or frozenset({"segment"}),
        language=_parse_language(form.get("language")),
        prompt=form.get("prompt") or None,
        temperature=_parse_temperature(form.get("temperature")),
    )


def _parse_language(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    language = value.strip().lower()
    code = language if language in _LANGUAGE_NAMES else _LANGUAGE_CODES.get(language)
    if code is None:
        raise ApiError(
            400,
            f"language {value!r} is not a language Whisper knows; give an ISO-639-1 code "
            "such as 'en', 'de' or 'fr'.",
            param="language",
            code="unsupported_value",
        )
    return code


def _parse_temperature(value: str | None) -> float:
    if value is None or not value.strip():
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        temperature = math.nan
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(
            400, f"temperature {value!r} must be a number from 0 to 1.", param="temperature"
        )
    return temperature


def _decode_upload(
    upload: FileStorage, limits: SyncLimits, settings: Settings
) -> tuple[NDArray[Any], float]:
    """The upload as 16 kHz mono float32 samples and its duration, validated by content."""
    audio_limits = AudioLimits(
        max_duration_s=limits.max_duration_s,
        min_duration_s=settings.min_duration_s,
        silence_dbfs=settings.silence_dbfs,
    )
    with tempfile.TemporaryDirectory(prefix="audiary-openai-") as tmp:
        # No suffix from the client's file name: decoding goes by content only.
        source = Path(tmp) / "upload"
        upload.save(source)
        if source.stat().st_size > limits.max_upload_bytes:
            raise _too_large(limits, source.stat().st_size)
        try:
            audio = decode_to_canonical(source, Path(tmp) / "audio.wav", audio_limits)
        except RejectedInputError as exc:
            if exc.code == "too_long":
                raise ApiError(
                    413,
                    f"The audio is longer than {limits.max_duration_s / 60:g} min, the most "
                    f"this endpoint transcribes in one request. {limits.elsewhere}",
                    param="file",
                    code="audio_too_long",
                ) from exc
            raise ApiError(400, exc.message, param="file", code=exc.code) from exc
        samples = pcm_to_float(audio.path.read_bytes()[WAV_HEADER_BYTES:])
    return samples, audio.duration_s


def _too_large(limits: SyncLimits, size: int | None = None) -> ApiError:
    size = size if size is not None else request.content_length
    actual = f"The upload is {size / 1024**2:.1f} MiB; " if size else "The upload is too large; "
    return ApiError(
        413,
        f"{actual}this endpoint takes files of up to {limits.max_upload_bytes / 1024**2:g} MiB. "
        f"{limits.elsewhere}",
        param="file",
        code="file_too_large",
    )


def _drain() -> None:
    """Read and drop what is left of the request body, up to `_DRAIN_MAX_BYTES`."""
    stream = cast(IO[bytes], request.environ["wsgi.input"])
    remaining = request.content_length
    left = min(remaining, _DRAIN_MAX_BYTES) if remaining is not None else _DRAIN_MAX_BYTES
    try:
        while left > 0:
            block = stream.read(min(left, 1024**2))
            if not block:
                return
            left -= len(block)
    except OSError:
        log.debug("client went away while its oversized body was drained")


def _loaded(get_model: Callable[[float], Transcriber], wait_s: float) -> Transcriber:
    try:
        return get_model(wait_s)
    except TimeoutError as exc:
        raise ApiError(
            503,
            "The speech model is still loading; try again in a few seconds.",
            error_type="server_error",
            code="model_loading",
        ) from exc
    except RuntimeError as exc:
        raise ApiError(
            503,
            "The speech model failed to load on this instance; see the service log.",
            error_type="server_error",
            code="model_unavailable",
        ) from exc


def _resolve_language(
    requested: str | None, transcriber: Transcriber, samples: NDArray[Any]
) -> str | None:
    """The language to decode in: asked for, configured, English-only, else detected."""
    supported = transcriber.supported_languages
    if requested is not None:
        if supported is not None and requested not in supported:
            raise ApiError(
                400,
                f"The loaded model transcribes only {', '.join(supported)}; "
                f"language {requested!r} is not one of them.",
                param="language",
                code="unsupported_value",
            )
        return requested
    if transcriber.language:
        return transcriber.language
    if supported is not None and len(supported) == 1:
        return supported[0]
    # Detected once, here, so that every window is decoded in the language reported.
    detected = transcriber.detect_language(samples)
    if detected is None:
        return None
    language, probability = detected
    log.info("detected language %s (p=%.2f)", language, probability)
    return language


def _run(
    transcriber: Transcriber, samples: NDArray[Any], language: str | None, *, words: bool
) -> list[Segment]:
    if words and not transcriber.word_timestamps_supported:
        raise ApiError(
            400,
            "The loaded model does not give word timestamps; ask for 'segment' only.",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    with inference(transcriber, samples.size / SAMPLE_RATE):
        return transcriber.transcribe(samples, language=language, word_timestamps=words)


def _render(
    options: Options,
    segments: list[Segment],
    language: str | None,
    duration_s: float,
    tokenize: Callable[[str], list[int]],
) -> Response:
    transcript = Transcript(job_id="sync", language=language, segments=segments)
    usage = {"type": "duration", "seconds": math.ceil(duration_s)}
    if options.response_format == "json":
        return jsonify(text=transcript.text, usage=usage)
    if options.response_format == "verbose_json":
        body: dict[str, object] = {
            "task": "transcribe",
            "language": _LANGUAGE_NAMES.get(language or "", language or "unknown"),
            "duration": round(duration_s, 3),
            "text": transcript.text,
            "usage": usage,
        }
        if "segment" in options.granularities:
            body["segments"] = [
                _segment_body(index, segment, tokenize) for index, segment in enumerate(segments)
            ]
        if options.words:
            body["words"] = [
                {"word": word.word.strip(), "start": word.start, "end": word.end}
                for segment in segments
                for word in segment.words or []
            ]
        return jsonify(body)
    fmt = "txt" if options.response_format == "text" else options.response_format
    return Response(render(transcript, fmt), mimetype="text/plain")


def _segment_body(
    index: int, segment: Segment, tokens: Callable[[str], list[int]]
) -> dict[str, object]:
    text = " " + segment.text.strip()  # Whisper's segments keep their leading space
    return {
        "id": index,
        "seek": round(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": text,
        "tokens": tokens(text),
        "temperature": 0.0,
        "avg_logprob": segment.avg_logprob if segment.avg_logprob is not None else 0.0,
        "compression_ratio": _compression_ratio(text),
        "no_speech_prob": segment.no_speech_prob if segment.no_speech_prob is not None else 0.0,
    }


def _compression_ratio(text: str) -> float:
    """Whisper's measure: text bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
