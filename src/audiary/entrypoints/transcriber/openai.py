"""OpenAI's audio API on the transcriber service: transcriptions, translations and models.

Clients written for OpenAI's API work unchanged: the official SDK with
`base_url="http://<host>/v1"`, or curl with a multipart form.

- `GET /v1/models`, `GET /v1/models/{id}`: the model this instance serves (its registry name,
  e.g. `base` or `meetings@3`) and `whisper-1`, an alias of it for clients that hard-code
  OpenAI's name. A request naming another model gets 404 `model_not_found`.
- `POST /v1/audio/transcriptions`: `file`, `model`, `language` (else detected on the first
  window of speech), `prompt` (the decoder's initial prompt: names, spellings, punctuation
  style), `temperature` (0 decodes greedily; above 0 samples), `response_format` (`json`,
  `text`, `srt`, `vtt`, `verbose_json`), `timestamp_granularities[]` (`segment`, `word`),
  `include[]=logprobs` (json and streams), `stream=true` (Server-Sent Events: one
  `transcript.text.delta` per segment as each batch of windows is decoded, then
  `transcript.text.done`).
- `POST /v1/audio/translations`: English text from speech in any language the model knows
  (`file`, `model`, `prompt`, `temperature`, `response_format`); needs a multilingual model.

Responses have OpenAI's shapes and content types: `json` -> `{"text", "usage"}` (and
`logprobs`), `text` -> text/plain, `srt` -> application/x-subrip, `vtt` -> text/vtt,
`verbose_json` -> task, language, duration, text, `segments` with the decoder's own tokens,
average log-probability, compression ratio, no-speech probability and temperature, `words` with
their times. Every error, on any route of the service (unknown paths and wrong methods too), is
`{"error": {message, type, param, code}}` (`install_openai_errors`).

The request is synchronous, so it takes files up to a size and a duration limit
(`sync_max_upload_bytes`, `sync_max_duration_s`); larger ones get a 413 that points to the
bucket flow, which cuts a recording into chunks and transcribes them in parallel. The upload is
decoded and validated by content with the same PyAV path as ingest, with ingest's error codes.

Where it differs from OpenAI, and why:
- A segment's `seek` is the 10 ms frame the segment starts at: segments come from windows
  packed from speech pieces, not from one seek position.
- A segment re-read on its own (a piece the first pass left without text) keeps its text and
  times but not the first pass's tokens: its `tokens` are its text encoded by the model's
  tokenizer and it has no log-probabilities.
- `logprobs` are the decoder's log-probabilities of the text tokens it chose (timestamp
  tokens left out), read from the logits of each step.
- `diarized_json`, `chunking_strategy` and `known_speaker_*` are refused with 400: one voice
  model, no diarization. Streams carry no `usage` (Whisper is billed by duration, which the
  stream's `done` event has no field for).

Access control is the platform's (Cloud Run IAM: an identity token works as the SDK's api_key).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast, get_args

from flask import Blueprint, Flask, Response, jsonify, request, stream_with_context
from numpy.typing import NDArray
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from audiary.domain.audio import SAMPLE_RATE, WAV_HEADER_BYTES, pcm_to_float
from audiary.domain.transcript import Segment, Transcript, render
from audiary.errors import AudiaryError, RejectedInputError
from audiary.observability.telemetry import inference
from audiary.ports import DecodeOptions, Transcriber
from audiary.services.decode import AudioLimits, decode_to_canonical
from audiary.settings import Settings

__all__ = [
    "OPENAI_ALIAS",
    "ApiError",
    "SyncLimits",
    "install_openai_errors",
    "openai_blueprint",
]

log = logging.getLogger(__name__)

Task = Literal["transcribe", "translate"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["word", "segment"]
# The content type of each response format (OpenAI sends text/plain for text).
CONTENT_TYPES: dict[str, str] = {
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
# The name OpenAI's clients send by default; here it means the model this instance serves.
OPENAI_ALIAS = "whisper-1"
# Form fields of OpenAI's API that this server does not do anything with, and why.
_REFUSED_FIELDS = {
    "chunking_strategy": "audio is cut into windows at pauses by the server itself",
    "known_speaker_names[]": "the model does not tell speakers apart (no diarization)",
    "known_speaker_references[]": "the model does not tell speakers apart (no diarization)",
}

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

    @property
    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}

    def response(self) -> Response:
        """`{"error": {...}}` with this error's status."""
        response = jsonify(self.body)
        response.status_code = self.status
        if self.status == 503:
            response.headers["Retry-After"] = str(_RETRY_AFTER_S)
        return response


def install_openai_errors(app: Flask) -> None:
    """Every HTTP error of `app` (unknown route, wrong method, body too large...) answers in
    OpenAI's error shape, as its SDK expects: `{"error": {message, type, param, code}}`."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        allowed = ", ".join(sorted(exc.valid_methods or [])) if isinstance(
            exc, MethodNotAllowed) else ""
        if status == 404:
            message = (f"Unknown route {request.method} {request.path}. This server offers "
                       "GET /v1/models, GET /v1/models/{model}, POST /v1/audio/transcriptions "
                       "and POST /v1/audio/translations.")
        elif status == 405:
            message = (f"{request.method} is not allowed on {request.path}"
                       + (f"; use {allowed}." if allowed else "."))
        else:
            message = exc.description or exc.name
        response = ApiError(
            status, message, error_type="server_error" if status >= 500 else
            "invalid_request_error", code={404: "unknown_url", 405: "method_not_allowed"}.get(
                status)).response()
        if allowed:
            response.headers["Allow"] = allowed
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
    """The form fields of a transcription or translation request, checked."""

    task: Task
    model: str | None
    response_format: ResponseFormat
    granularities: frozenset[Granularity]
    language: str | None
    prompt: str | None
    temperature: float
    logprobs: bool
    stream: bool

    @property
    def words(self) -> bool:
        return "word" in self.granularities

    @property
    def decode(self) -> DecodeOptions:
        return DecodeOptions(task=self.task, prompt=self.prompt, temperature=self.temperature,
                             logprobs=self.logprobs)


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
    loaded_at: list[int] = []  # when this server first had its model: the models' `created`

    def served() -> Transcriber:
        transcriber = _loaded(get_model, model_wait_s)
        if not loaded_at:
            loaded_at.append(int(time.time()))
        return transcriber

    def model_objects(transcriber: Transcriber) -> list[dict[str, object]]:
        return [{"id": name, "object": "model", "created": loaded_at[0], "owned_by": "audiary"}
                for name in _model_ids(transcriber)]

    @blueprint.get("/models")
    def list_models() -> Response:
        return _answering(lambda: jsonify(object="list", data=model_objects(served())))

    @blueprint.get("/models/<path:model_id>")
    def retrieve_model(model_id: str) -> Response:
        def answer() -> Response:
            found = [m for m in model_objects(served()) if m["id"] == model_id]
            if not found:
                raise _unknown_model(model_id, served())
            return jsonify(found[0])

        return _answering(answer)

    @blueprint.post("/audio/transcriptions")
    def create_transcription() -> Response:
        return _answering(lambda: _audio_request("transcribe", served, get_settings()))

    @blueprint.post("/audio/translations")
    def create_translation() -> Response:
        return _answering(lambda: _audio_request("translate", served, get_settings()))

    return blueprint


def _answering(handle: Callable[[], Response]) -> Response:
    """Run a route, turning whatever it raises into an OpenAI error with a request id."""
    request_id = f"req_{uuid.uuid4().hex}"
    try:
        response = handle()
    except ApiError as exc:
        log.info("request %s refused: %s", request_id, exc.message)
        response = exc.response()
    except HTTPException as exc:
        response = ApiError(exc.code or 400, exc.description or exc.name).response()
    except Exception:
        log.exception("request %s failed", request_id)
        response = _server_error(request_id).response()
    response.headers["x-request-id"] = request_id
    return response


def _server_error(request_id: str) -> ApiError:
    return ApiError(
        500,
        f"The transcription failed on the server (request {request_id}). "
        "Try again; if it keeps failing, report the request id.",
        error_type="server_error",
    )


def _model_ids(transcriber: Transcriber) -> list[str]:
    return [transcriber.model_name, OPENAI_ALIAS]


def _unknown_model(model_id: str, transcriber: Transcriber) -> ApiError:
    return ApiError(
        404,
        f"The model {model_id!r} does not exist on this server; it serves "
        f"{' and '.join(repr(m) for m in _model_ids(transcriber))} (GET /v1/models).",
        param="model",
        code="model_not_found",
    )


def _audio_request(
    task: Task, served: Callable[[], Transcriber], settings: Settings
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
    options = _parse_options(form, task)
    upload = files.get("file")
    if upload is None:
        raise ApiError(
            400,
            "No file was uploaded: send the audio as the multipart form field 'file'.",
            param="file",
        )
    started = time.monotonic()
    samples, duration_s = _decode_upload(upload, limits, settings)
    transcriber = served()
    if options.model is not None and options.model not in _model_ids(transcriber):
        raise _unknown_model(options.model, transcriber)
    if task == "translate" and _english_only(transcriber):
        raise ApiError(
            400,
            f"The model {transcriber.model_name!r} is English-only and cannot translate; "
            "translations need a multilingual model (set AUDIARY_MODEL, e.g. to base).",
            param="model",
            code="model_cannot_translate",
        )
    if options.words and not transcriber.word_timestamps_supported:
        raise ApiError(
            400,
            "The loaded model does not give word timestamps; ask for 'segment' only.",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    language = _resolve_language(options.language, transcriber, samples)
    if options.stream:
        return _stream(transcriber, samples, language, options)
    segments = _run(transcriber, samples, language, options)
    log.info(
        "%s %.1f s of audio in %.1f s (%s, %d segments, %s)",
        "translated" if task == "translate" else "transcribed",
        duration_s,
        time.monotonic() - started,
        transcriber.model_name,
        len(segments),
        options.response_format,
    )
    return _render(options, segments, language, duration_s, transcriber)


def _english_only(transcriber: Transcriber) -> bool:
    supported = transcriber.supported_languages
    return supported is not None and list(supported) == ["en"]


def _parse_options(form: MultiDict[str, str], task: Task) -> Options:
    for field, why in _REFUSED_FIELDS.items():
        if field in form or field.removesuffix("[]") in form:
            raise ApiError(400, f"{field.removesuffix('[]')} is not supported: {why}.",
                           param=field.removesuffix("[]"), code="unsupported_parameter")
    response_format = form.get("response_format") or "json"
    if response_format not in get_args(ResponseFormat):
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported; use one of "
            f"{', '.join(get_args(ResponseFormat))}.",
            param="response_format",
            code="unsupported_value",
        )
    granularities = _list_field(form, "timestamp_granularities")
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
    include = _list_field(form, "include")
    if unknown := sorted(set(include) - {"logprobs"}):
        raise ApiError(400, f"include {unknown} is not supported; the one choice is 'logprobs'.",
                       param="include", code="unsupported_value")
    logprobs = "logprobs" in include
    stream = _parse_bool(form.get("stream"), "stream")
    if task == "translate":
        for field in ("language", "include", "timestamp_granularities"):
            if _list_field(form, field):
                raise ApiError(400, f"{field} is not a parameter of translations (the output "
                               "is English, the input language is detected).", param=field)
        if stream:
            raise ApiError(400, "Translations do not stream; leave 'stream' unset.",
                           param="stream")
    if logprobs and response_format != "json":
        raise ApiError(400, "include[]=logprobs needs response_format 'json' (or a stream).",
                       param="include")
    if stream and response_format not in ("json", "text"):
        raise ApiError(400, "stream=true answers with text events: use response_format "
                       "'json' or 'text'.", param="stream")
    return Options(
        task=task,
        model=(form.get("model") or "").strip() or None,
        response_format=cast(ResponseFormat, response_format),
        granularities=frozenset(cast(list[Granularity], granularities)) or frozenset({"segment"}),
        language=_parse_language(form.get("language")),
        prompt=form.get("prompt") or None,
        temperature=_parse_temperature(form.get("temperature")),
        logprobs=logprobs,
        stream=stream,
    )


def _list_field(form: MultiDict[str, str], name: str) -> list[str]:
    """A list form field, sent as `name[]` (OpenAI's SDK) or `name` (repeated)."""
    return [value for key in (f"{name}[]", name) for value in form.getlist(key)]


def _parse_bool(value: str | None, name: str) -> bool:
    if value is None or value.strip().lower() in ("", "false", "0"):
        return False
    if value.strip().lower() in ("true", "1"):
        return True
    raise ApiError(400, f"{name} {value!r} must be true or false.", param=name)


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


def _run(transcriber: Transcriber, samples: NDArray[Any], language: str | None,
         options: Options) -> list[Segment]:
    with inference(transcriber, samples.size / SAMPLE_RATE):
        return transcriber.transcribe(samples, language=language, word_timestamps=options.words,
                                      options=options.decode)


def _stream(transcriber: Transcriber, samples: NDArray[Any], language: str | None,
            options: Options) -> Response:
    """Server-Sent Events as OpenAI sends them: a `transcript.text.delta` per segment, as each
    batch of windows is decoded, then `transcript.text.done` with the whole text. A failure
    after the first byte is an event `{"error": {...}}`, which the SDK raises as APIError."""
    request_id = f"req_{uuid.uuid4().hex}"

    def events() -> Iterator[str]:
        texts: list[str] = []
        logprobs: list[dict[str, object]] = []
        try:
            with inference(transcriber, samples.size / SAMPLE_RATE):
                for group in transcriber.transcribe_stream(
                        samples, language=language, options=options.decode):
                    for segment in group:
                        text = segment.text.strip()
                        if not text:
                            continue
                        event: dict[str, object] = {
                            "type": "transcript.text.delta",
                            "delta": text if not texts else " " + text}
                        texts.append(text)
                        if options.logprobs:
                            items = _logprobs(transcriber, [segment])
                            event["logprobs"] = items
                            logprobs.extend(items)
                        yield _sse(event)
            done: dict[str, object] = {"type": "transcript.text.done", "text": " ".join(texts)}
            if options.logprobs:
                done["logprobs"] = logprobs
            yield _sse(done)
        except Exception as exc:
            log.exception("streamed request %s failed", request_id)
            error = (ApiError(400, str(exc), param="file") if isinstance(exc, ValueError)
                     else _server_error(request_id))
            yield _sse(error.body)

    response = Response(stream_with_context(events()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["x-request-id"] = request_id
    return response


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _logprobs(transcriber: Transcriber, segments: Sequence[Segment]) -> list[dict[str, object]]:
    """OpenAI's logprobs items (token, logprob, bytes) for the segments' decoded tokens."""
    items: list[dict[str, object]] = []
    for segment in segments:
        if not segment.tokens or segment.token_logprobs is None:
            continue  # a piece read again on its own: see the module docstring
        for raw, logprob in zip(transcriber.token_bytes(segment.tokens), segment.token_logprobs,
                                strict=True):
            items.append({"token": raw.decode("utf-8", errors="replace"),
                          "logprob": logprob, "bytes": list(raw)})
    return items


def _render(
    options: Options,
    segments: list[Segment],
    language: str | None,
    duration_s: float,
    transcriber: Transcriber,
) -> Response:
    transcript = Transcript(job_id="sync", language=language, segments=segments)
    usage = {"type": "duration", "seconds": math.ceil(duration_s)}
    if options.response_format == "json":
        if options.logprobs:
            return jsonify(text=transcript.text, logprobs=_logprobs(transcriber, segments),
                           usage=usage)
        return jsonify(text=transcript.text, usage=usage)
    if options.response_format == "verbose_json":
        body: dict[str, object] = {
            "task": options.task,
            # A translation's language is its output's (OpenAI says "english").
            "language": "english" if options.task == "translate"
            else _LANGUAGE_NAMES.get(language or "", language or "unknown"),
            "duration": round(duration_s, 3),
            "text": transcript.text,
            "usage": usage,
        }
        if "segment" in options.granularities:
            body["segments"] = [
                _segment_body(index, segment, transcriber, options.temperature)
                for index, segment in enumerate(s for s in segments if s.text.strip())
            ]
        if options.words:
            body["words"] = [
                {"word": word.word.strip(), "start": word.start, "end": word.end}
                for segment in segments
                for word in segment.words or []
            ]
        return jsonify(body)
    fmt = "txt" if options.response_format == "text" else options.response_format
    return Response(render(transcript, fmt), content_type=CONTENT_TYPES[options.response_format])


def _segment_body(
    index: int, segment: Segment, transcriber: Transcriber, temperature: float
) -> dict[str, object]:
    text = " " + segment.text.strip()  # Whisper's segments keep their leading space
    return {
        "id": index,
        "seek": round(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": text,
        "tokens": segment.tokens if segment.tokens is not None else transcriber.tokenize(text),
        "temperature": segment.temperature if segment.temperature is not None else temperature,
        "avg_logprob": segment.avg_logprob if segment.avg_logprob is not None else 0.0,
        "compression_ratio": (segment.compression_ratio if segment.compression_ratio is not None
                              else _compression_ratio(text)),
        "no_speech_prob": segment.no_speech_prob if segment.no_speech_prob is not None else 0.0,
    }


def _compression_ratio(text: str) -> float:
    """Whisper's measure: text bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
