"""Ports: the interfaces the services depend on, and `Stores`, the bundle they receive.

Adapters (`audiary.adapters`) implement them for GCS, S3, Pub/Sub, Firestore, faster-whisper,
the LLM SDKs, HTTP, and in memory for unit tests; `audiary.wiring` picks them from settings.
The same contract tests (tests/integration/test_contracts.py) run against every adapter of a
storage port, so the in-memory fakes can be trusted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from numpy.typing import NDArray

from audiary.domain.datasets import DatasetRecord, EvaluationRecord
from audiary.domain.jobs import Chunk, FanIn, Job, JobError, JobStatus, Tombstone
from audiary.domain.keys import ApiKey, Webhook
from audiary.domain.models import ModelRecord
from audiary.domain.notes import DiaryNote, Feedback, NoteRecord
from audiary.domain.review import ReviewItem
from audiary.domain.transcript import Segment, Transcript
from audiary.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class BlobInfo:
    bucket: str
    key: str
    size: int
    generation: str
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SignedUpload:
    """A URL that lets its holder PUT one object, with the headers that must be sent."""

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: datetime


class BlobStore(ABC):
    """Object storage: buckets of keys (GCS, S3/MinIO, memory)."""

    @abstractmethod
    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` if it does not exist (local stacks and tests)."""

    @abstractmethod
    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write `data` to `bucket/key`, replacing what was there."""

    @abstractmethod
    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Stream a local file to `bucket/key`."""

    @abstractmethod
    def upload_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Stream a file-like object to `bucket/key`, a few MiB at a time, never whole in memory.

        The object appears only once the stream ended; if reading it raises, nothing is left.
        """

    @abstractmethod
    def get(self, bucket: str, key: str) -> bytes:
        """The whole object; `NotFoundError` if absent."""

    @abstractmethod
    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Stream the object into a local file; `NotFoundError` if absent."""

    @abstractmethod
    def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, without reading the rest."""

    @abstractmethod
    def stat(self, bucket: str, key: str) -> BlobInfo | None:
        """Size, generation, content type and metadata, or None if absent."""

    @abstractmethod
    def copy(self, bucket: str, key: str, dest_bucket: str, dest_key: str) -> BlobInfo:
        """Server-side copy; the source stays."""

    @abstractmethod
    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Remove the object; absent objects are not an error."""

    @abstractmethod
    def update_metadata(self, bucket: str, key: str, metadata: Mapping[str, str]) -> BlobInfo:
        """Merge `metadata` into the object's metadata; `NotFoundError` if absent."""

    @abstractmethod
    def signed_put_url(
        self, bucket: str, key: str, *, content_type: str, size: int, expires_s: int
    ) -> SignedUpload:
        """A URL to upload exactly one object of `size` bytes and `content_type`."""

    @abstractmethod
    def signed_get_url(self, bucket: str, key: str, *, expires_s: int) -> str:
        """A URL that reads the object, without credentials, for `expires_s` seconds."""


class Publisher(ABC):
    """Message publishing (Pub/Sub, memory)."""

    @abstractmethod
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish and wait until the broker has it; returns the message id."""


class JobStore(ABC):
    """Job and chunk documents (Firestore, memory). Every method is safe to repeat."""

    @abstractmethod
    def create_job(self, job: Job) -> tuple[Job, bool]:
        """Create `job` unless one with its id exists; returns (stored job, created)."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """The job, or None."""

    @abstractmethod
    def update_job(self, job_id: str, fields: Mapping[str, object]) -> None:
        """Set plain fields (not the status) on an existing job."""

    @abstractmethod
    def advance(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: JobError | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> bool:
        """Move the job to `status` in one transaction if the state machine allows it.

        Records the transition time under `timestamps.<status>` and sets `fields` with it.
        Returns False (and changes nothing) for a backward or repeated move.
        """

    @abstractmethod
    def claim(self, job_id: str, stage: str, holder: str, *, lease_s: float,
              now: datetime) -> bool:
        """Take `stage`'s lease on the job for `holder` until `now + lease_s`, in one
        transaction, unless another holder's lease runs past `now` (`lease_free`).

        Returns whether `holder` holds it now; `NotFoundError` if there is no such job.
        """

    @abstractmethod
    def put_chunks(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        """Write the chunk plan and set `chunks_total`; existing chunk results are kept."""

    @abstractmethod
    def get_chunks(self, job_id: str) -> list[Chunk]:
        """All chunks of the job, by index."""

    @abstractmethod
    def start_chunk(self, job_id: str, index: int) -> Chunk:
        """Count one more attempt on the chunk and return it; `NotFoundError` if absent."""

    @abstractmethod
    def abandon_chunk(self, job_id: str, index: int) -> None:
        """Take back the attempt `start_chunk` counted on a chunk not yet done (its process
        gave it up on shutdown); `NotFoundError` if absent."""

    @abstractmethod
    def complete_chunk(
        self,
        job_id: str,
        index: int,
        *,
        text: str,
        segments: list[dict[str, object]] | None,
        segments_uri: str | None,
        language: str | None = None,
        claim: str | None = None,
    ) -> FanIn:
        """Store a chunk result (with the language it was decoded as) and count it toward the
        job, atomically.

        A chunk counts once: a repeat delivery returns `counted=False` and changes nothing.
        `claim` is the `Chunk.claim` that `start_chunk` returned: where the chunk is unchanged
        since, a store may write without reading it first (no other delivery can have finished
        it); where it changed, the result is checked against the chunk as it is now.
        """

    @abstractmethod
    def list_jobs(
        self, limit: int = 50, *, owner: str | None = None,
        received_before: datetime | None = None,
    ) -> list[Job]:
        """Most recently received jobs first, optionally one owner's, older than a time."""

    @abstractmethod
    def list_stalled(self, before: datetime, limit: int = 100) -> list[Job]:
        """Jobs not yet ended whose last progress (`progress_at`) is older than `before`,
        longest stalled first."""

    @abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Remove the job and its chunks, leaving a `Tombstone`; False if there was no job."""

    @abstractmethod
    def deleted(self, job_id: str) -> Tombstone | None:
        """The tombstone of a deleted job, or None."""

    @abstractmethod
    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each state; every state is present, 0 when none is in it."""


class NoteStore(ABC):
    """Diary notes by job, the LLM result cache by content key, and what people make of them:
    feedback, the review queue, the datasets built from corrections (Firestore, memory)."""

    @abstractmethod
    def get_note(self, job_id: str) -> NoteRecord | None:
        """The job's note, or None."""

    @abstractmethod
    def put_note(self, record: NoteRecord) -> None:
        """Write (or replace) the job's note."""

    @abstractmethod
    def get_cached(self, cache_key: str) -> NoteRecord | None:
        """A note already paid for with this content key, or None."""

    @abstractmethod
    def put_cached(self, record: NoteRecord) -> None:
        """Remember a note under its `cache_key`."""

    @abstractmethod
    def delete_note(self, job_id: str) -> None:
        """Remove the job's note (absent is fine); cached notes stay."""

    @abstractmethod
    def delete_cached(self, cache_key: str) -> None:
        """Forget the note cached under `cache_key` (absent is fine)."""

    @abstractmethod
    def put_feedback(self, feedback: Feedback) -> None:
        """Store one piece of feedback on a transcript."""

    @abstractmethod
    def list_feedback(self, job_id: str) -> list[Feedback]:
        """Feedback on the job, oldest first."""

    @abstractmethod
    def delete_feedback(self, job_id: str) -> int:
        """Remove all feedback on the job; how many pieces there were."""

    @abstractmethod
    def add_review_item(self, item: ReviewItem) -> bool:
        """Queue `item` unless one with its id exists; whether it was added."""

    @abstractmethod
    def get_review_item(self, item_id: str) -> ReviewItem | None:
        """The review item, or None."""

    @abstractmethod
    def update_review_item(self, item_id: str, fields: Mapping[str, Any]) -> None:
        """Set `fields` on an existing review item."""

    @abstractmethod
    def list_review_items(self, *, status: str | None = None,
                          job_id: str | None = None) -> list[ReviewItem]:
        """Review items (of one status, or one job), oldest queued first."""

    @abstractmethod
    def delete_review_items(self, job_id: str) -> int:
        """Remove the job's review items; how many there were."""

    @abstractmethod
    def corrected_job_ids(self) -> list[str]:
        """Jobs with feedback that made a transcript version (their corrections), sorted."""

    @abstractmethod
    def put_dataset(self, record: DatasetRecord) -> None:
        """Store a dataset record (under its version)."""

    @abstractmethod
    def list_datasets(self) -> list[DatasetRecord]:
        """Every dataset record, oldest version first."""

    @abstractmethod
    def put_evaluation(self, record: EvaluationRecord) -> None:
        """Store an evaluation record (under its id)."""

    @abstractmethod
    def list_evaluations(self, *, dataset_version: int | None = None
                         ) -> list[EvaluationRecord]:
        """Evaluation records (of one dataset version), oldest first."""

    @abstractmethod
    def put_model(self, record: ModelRecord) -> None:
        """Store a model record (under name@version), replacing an earlier one."""

    @abstractmethod
    def get_model(self, model_id: str) -> ModelRecord | None:
        """The record of `name@version`, or None."""

    @abstractmethod
    def list_models(self) -> list[ModelRecord]:
        """Every model record, oldest first."""


# How a webhook delivery ended (KeyStore.record_delivery).
DELIVERED = "delivered"
DEAD_LETTERED = "dead-lettered"


class KeyStore(ABC):
    """API keys (only hashes) and their webhook registrations (Firestore, memory)."""

    @abstractmethod
    def put_key(self, key: ApiKey) -> None:
        """Store a new key."""

    @abstractmethod
    def get_key(self, key_id: str) -> ApiKey | None:
        """The key, revoked or not, or None."""

    @abstractmethod
    def list_keys(self) -> list[ApiKey]:
        """All keys, oldest first."""

    @abstractmethod
    def revoke_key(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked; False if there is no such key."""

    @abstractmethod
    def put_webhook(self, webhook: Webhook) -> None:
        """Store a webhook registration."""

    @abstractmethod
    def list_webhooks(self, owner: str) -> list[Webhook]:
        """The owner's webhooks, oldest first."""

    @abstractmethod
    def delete_webhook(self, owner: str, webhook_id: str) -> bool:
        """Remove one of the owner's webhooks; False if it has none by that id."""

    @abstractmethod
    def claim_delivery(self, delivery_id: str, holder: str, *, lease_s: float,
                       now: datetime) -> bool:
        """Take the delivery with this id for `holder` until `now + lease_s`, in one
        transaction, unless it has an outcome or another holder's lease runs past `now`."""

    @abstractmethod
    def record_delivery(self, delivery_id: str, at: datetime,
                        outcome: str = DELIVERED) -> None:
        """Record how the delivery ended (`DELIVERED`, `DEAD_LETTERED`); the first one stays."""

    @abstractmethod
    def delivery_outcome(self, delivery_id: str) -> str | None:
        """What `record_delivery` recorded for this id, or None."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode, beyond the language: what a caller of the OpenAI-compatible API may ask.

    The pipeline decodes with the defaults (transcribe, no prompt, greedy)."""

    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None  # text the decoder reads before the audio: names, spellings, style
    temperature: float = 0.0  # 0 decodes greedily; above 0 samples, more freely the higher
    logprobs: bool = False  # each segment keeps its tokens' log-probabilities (`token_logprobs`)

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 1.0:
            raise ValueError(f"temperature {self.temperature} is not between 0 and 1")


DEFAULT_DECODE = DecodeOptions()


class Transcriber(ABC):
    """Speech recognition on 16 kHz mono float32 samples."""

    model_name: str
    language: str | None = None  # the configured language; None means detect or English-only
    word_timestamps_supported: bool = False

    @abstractmethod
    def transcribe(
        self, samples: NDArray[Any], *, language: str | None = None,
        word_timestamps: bool | None = None, options: DecodeOptions = DEFAULT_DECODE,
    ) -> list[Segment]:
        """Segments with times relative to the first sample (word times if asked and supported).

        With `options.task == "translate"` the text is English whatever language is spoken."""

    def transcribe_stream(
        self, samples: NDArray[Any], *, language: str | None = None,
        word_timestamps: bool | None = None, options: DecodeOptions = DEFAULT_DECODE,
    ) -> Iterator[list[Segment]]:
        """`transcribe`'s segments in order, a group at a time as they are decoded (here: all
        at once; an engine that decodes in parts yields each part when it is done)."""
        yield self.transcribe(samples, language=language, word_timestamps=word_timestamps,
                              options=options)

    @property
    def supported_languages(self) -> Sequence[str] | None:
        """Language codes the model knows, or None when it does not say."""
        return None

    def detect_language(self, samples: NDArray[Any]) -> tuple[str, float] | None:
        """(language code, probability) heard in `samples`, or None without a detector."""
        return None

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for `text` (empty for a model without a tokenizer)."""
        return []

    def token_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes each token stands for (a token may hold part of a UTF-8 character)."""
        return [b"" for _ in tokens]


@dataclass(frozen=True)
class Completion:
    """A model's answer: JSON text (not yet validated) and what it cost in tokens."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str


class LlmClient(ABC):
    """A chat model that answers with JSON for a given schema (OpenAI, Anthropic, compatible).

    Transport retries (429 with Retry-After, 5xx, 529, timeouts) happen inside, with the SDK's
    exponential backoff and jitter; what still fails raises `ProviderError`.
    """

    provider: str
    model: str

    @abstractmethod
    def complete_json(
        self, *, system: str, user: str, schema_name: str, schema: dict[str, Any]
    ) -> Completion:
        """Ask for one JSON object following `schema`."""


@dataclass
class Usage:
    """Tokens and calls spent on one note, failed attempts included (they are paid for too)."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.calls += 1


class NoteWriter(ABC):
    """Writes a diary note from a transcript: an LLM behind `LlmClient`, or the offline
    extractive writer. Raises `ProviderError` (or `InvalidOutputError`) when it cannot."""

    provider: str  # the name in the provider order
    model: str
    version: str  # prompt (or writer) version: part of the note's cache key
    extractive: bool = False  # True for a writer that needs no model, costs nothing, never fails

    @abstractmethod
    def write(
        self, transcript: Transcript, *, recorded_at: datetime | None, usage: Usage
    ) -> DiaryNote:
        """The note; tokens spent are added to `usage` as they are spent."""


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    last_status: int | None
    last_error: str | None  # why the last attempt failed; None once delivered
    delivery_id: str


class WebhookSender(ABC):
    """Signed POSTs of an event to a user's URL, with retries."""

    @abstractmethod
    def deliver(
        self, url: str, payload: Mapping[str, Any], secret: bytes, *, delivery_id: str
    ) -> DeliveryResult:
        """Deliver once it succeeds or retries run out; never raises for a failed delivery
        (an unsafe or unresolvable URL is a failed delivery with 0 attempts)."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    content_type: str | None
    final_url: str


class UrlFetcher(ABC):
    """Fetches user-supplied URLs without reaching into private networks (SSRF)."""

    @abstractmethod
    def check(self, url: str) -> None:
        """`UnsafeUrlError` if `url` may not be fetched (scheme, address, port)."""

    @abstractmethod
    def fetch(self, url: str, dest: Path, *, max_bytes: int) -> FetchResult:
        """Download `url` to `dest`; `UnsafeUrlError` or `FetchError` when it cannot."""

    @abstractmethod
    def stream(self, url: str, consume: Callable[[IO[bytes], str | None], T], *,
               max_bytes: int) -> T:
        """Hand `url`'s body, as a stream that raises `FetchError` past `max_bytes` or the
        timeout, to `consume(stream, content_type)` and return what it returns."""


@dataclass(frozen=True)
class DeskTask:
    """A review task as the desk holds it, with its annotations (each a dict with at least
    `id`, `result`, `was_cancelled`, `updated_at`)."""

    task_id: int
    data: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


class ReviewDesk(ABC):
    """Where people review transcripts: Label Studio (adapters.label_studio)."""

    @abstractmethod
    def ensure_project(self, title: str, label_config: str) -> tuple[int, bool]:
        """The project with this title, created or its labeling config brought up to date;
        (id, whether it was created)."""

    @abstractmethod
    def ensure_webhook(self, project_id: int, url: str, headers: Mapping[str, str],
                       actions: Sequence[str]) -> bool:
        """A webhook of the project to `url` with these headers and actions, created or
        updated; whether it was created."""

    @abstractmethod
    def create_task(self, project_id: int, data: Mapping[str, Any],
                    prediction: list[dict[str, Any]], model_version: str) -> int:
        """A new task with the machine's prediction; its id."""

    @abstractmethod
    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        """Replace the task's data (a fresh audio URL)."""

    @abstractmethod
    def tasks(self, project_id: int) -> list[DeskTask]:
        """Every task of the project, with its annotations."""

    @abstractmethod
    def project_url(self, project_id: int) -> str:
        """Where a person opens the project."""


class TrainingLauncher(ABC):
    """Starts a training run (`audiary train --dataset N`) somewhere else and returns at once:
    a Cloud Run job execution on Google Cloud, a process locally."""

    @abstractmethod
    def start(self, dataset_version: int) -> str:
        """Start training on `dataset_version`; a name for the run (execution, log file)."""


@dataclass(frozen=True)
class Stores:
    """What a service works with, typed by port; `audiary.wiring.stores` builds it."""

    settings: Settings
    blobs: BlobStore
    publisher: Publisher
    jobs: JobStore
    notes: NoteStore
    keys: KeyStore
    webhooks: WebhookSender
    urls: UrlFetcher
