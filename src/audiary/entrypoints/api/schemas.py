"""Request and response bodies of the API; the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UploadRequest(_Body):
    filename: str = Field(min_length=1, max_length=200, examples=["monday.m4a"])
    content_type: str = Field(min_length=3, max_length=100, pattern=r"^[\w.+-]+/[\w.+-]+$",
                              examples=["audio/mp4"])
    size_bytes: int = Field(gt=0, description="Exact size of the file to upload.")
    speaker: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[\w.@+-]+$",
        description="Who speaks (an id of your choosing): datasets keep one speaker's "
                    "recordings in one split.")


class UploadResponse(BaseModel):
    job_id: str
    upload_url: str
    method: Literal["PUT"]
    headers: dict[str, str] = Field(description="Send exactly these headers with the PUT.")
    expires_at: datetime
    object: str


class JobRequest(_Body):
    audio_url: str | None = Field(default=None, max_length=2048,
                                  description="A public https URL to fetch the audio from.")
    object: str | None = Field(default=None, max_length=1024,
                               description="An object already in the inbox, e.g. inbox/a.wav.")

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        if (self.audio_url is None) == (self.object is None):
            raise ValueError("give exactly one of audio_url and object")
        return self


class Progress(BaseModel):
    chunks_done: int
    chunks_total: int


class ErrorInfo(BaseModel):
    code: str
    message: str
    stage: str | None = None


class JobView(BaseModel):
    job_id: str
    status: str
    source: str
    progress: Progress
    duration_s: float | None
    stage_seconds: dict[str, float]
    timestamps: dict[str, datetime]
    error: ErrorInfo | None
    cost_usd: float | None
    uncertain_segments: int = 0
    transcript_version: int = 1


class JobList(BaseModel):
    jobs: list[JobView]
    next_page_token: str | None


class SegmentEdit(_Body):
    index: int = Field(ge=0, description="Position of the segment in the latest transcript")
    text: str = Field(min_length=1, max_length=10_000)


class FeedbackRequest(_Body):
    corrected_transcript: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    segments: list[SegmentEdit] | None = Field(
        default=None, max_length=10_000,
        description="Per-segment corrections; they make the next transcript version")
    flagged: bool = Field(default=False, description="Flag the whole job for review")
    flagged_segments: list[int] = Field(
        default_factory=list, max_length=10_000,
        description="Indices of segments to flag for review (each becomes a review task)")
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if (self.corrected_transcript is None and not self.segments and not self.flagged
                and not self.flagged_segments):
            raise ValueError("give a corrected_transcript, segments, flagged: true or "
                             "flagged_segments")
        return self


class FeedbackResponse(BaseModel):
    feedback_id: str
    job_id: str
    feedback_object: str
    transcript_version: int | None = None  # the version the corrections made, if any
    review_items: list[str] = Field(
        default_factory=list, description="Review items this flag queued (new ones only)")


class SummarizeAgain(BaseModel):
    """Accepted: the next note version is being written from this transcript version."""

    job_id: str
    transcript_version: int


class WebhookRequest(_Body):
    url: str = Field(min_length=8, max_length=2048, examples=["https://example.com/audiary"])


class WebhookView(BaseModel):
    webhook_id: str
    url: str
    created_at: datetime


class WebhookCreated(WebhookView):
    secret: str = Field(
        description="Signing secret (`whsec_<base64>`, Standard Webhooks); shown only now. "
                    "Give it to any Standard Webhooks verifier.")


class WebhookList(BaseModel):
    webhooks: list[WebhookView]


class WebhookEvent(BaseModel):
    """What a webhook receives when one of your jobs ends."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["job.finished"]
    job_id: str
    status: Literal["DONE", "FAILED", "REJECTED"]
    error: ErrorInfo | None = Field(description="Why the job failed or was rejected.")
    duration_s: float | None
    transcript: str = Field(description="API path of the transcript.",
                            examples=["/v1/jobs/j1/transcript"])
    notes: str = Field(description="API path of the note.", examples=["/v1/jobs/j1/notes"])


class Error(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok"]


class WebConfig(BaseModel):
    """What the web page asks before sign-in (`GET /web/config`, no auth)."""

    google_client_id: str | None = Field(
        description="OAuth client ID for 'Sign in with Google'; null: API keys only")
    google_script_url: str | None
