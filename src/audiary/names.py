"""Default names of topics, subscriptions, buckets and collections.

One source of truth shared by the settings, the native local stack and the Pulumi program.
"""

from __future__ import annotations

TOPIC_AUDIO_UPLOADED = "audio-uploaded"
TOPIC_TRANSCRIBE_CHUNK = "transcribe-chunk"
TOPIC_TRANSCRIPT_READY = "transcript-ready"
TOPIC_JOB_FINISHED = "job-finished"
# One message per (webhook, event): each hook is delivered on its own (services.notify).
TOPIC_WEBHOOK_DELIVERY = "webhook-delivery"
# A dataset whose train split passed the threshold (services.datasets): training starts on it.
TOPIC_DATASET_READY = "dataset-ready"
# The corrections stream: one message per saved correction that made a transcript version
# (services.jobs.store_feedback); the learning function builds datasets from it.
TOPIC_TRANSCRIPT_CORRECTED = "transcript-corrected"

PIPELINE_TOPICS = (
    TOPIC_AUDIO_UPLOADED,
    TOPIC_TRANSCRIBE_CHUNK,
    TOPIC_TRANSCRIPT_READY,
    TOPIC_JOB_FINISHED,
    TOPIC_WEBHOOK_DELIVERY,
    TOPIC_DATASET_READY,
    TOPIC_TRANSCRIPT_CORRECTED,
)

SUBSCRIPTION_INGEST = "ingest"
SUBSCRIPTION_TRANSCRIBER = "transcriber"
# The learning function's: corrections (transcript-corrected) build datasets; dataset-ready
# starts training.
SUBSCRIPTION_DATASETS = "datasets"
SUBSCRIPTION_TRAINING = "training"


def dead_letter_topic(subscription: str) -> str:
    """Name of the dead-letter topic that belongs to `subscription`."""
    return f"{subscription}-dead-letter"


# The `deadletters` function reads every dead-letter topic through a push subscription of its
# own (the pull subscription named like the topic keeps the letters for inspection).
DEADLETTERS = "deadletters"


def dead_letter_consumer(subscription: str) -> str:
    """Name of the push subscription that feeds `subscription`'s dead letters to `deadletters`."""
    return f"{DEADLETTERS}-{subscription}"


BUCKET_UPLOADS = "audiary-uploads"
BUCKET_WORK = "audiary-work"
BUCKET_TRANSCRIPTS = "audiary-transcripts"
BUCKET_USERFEEDBACK = "audiary-userfeedback"
BUCKET_DATASETS = "audiary-datasets"
# The model registry's weights: one prefix per model, `<name>@<version>/` (services.models).
BUCKET_MODELS = "audiary-models"

PREFIX_INBOX = "inbox/"
# What the uploads bucket lets a browser do from another origin (the web page's PUT to a
# signed URL): infra/buckets.py on Google Cloud, audiary.local.gcs_emulator locally.
UPLOAD_CORS_METHODS = ("PUT",)
UPLOAD_CORS_RESPONSE_HEADERS = ("Content-Type", "ETag", "x-goog-generation")
UPLOAD_CORS_MAX_AGE_S = 3600
PREFIX_QUARANTINE = "quarantine/"

COLLECTION_JOBS = "jobs"
COLLECTION_CHUNKS = "chunks"
COLLECTION_NOTES = "notes"
COLLECTION_FEEDBACK = "feedback"
COLLECTION_REVIEW = "review"
COLLECTION_DATASETS = "datasets"
COLLECTION_EVALUATIONS = "evaluations"
COLLECTION_MODELS = "models"
COLLECTION_LLM_CACHE = "llm-cache"
COLLECTION_API_KEYS = "api-keys"
COLLECTION_WEBHOOKS = "webhooks"
COLLECTION_DELIVERIES = "webhook-deliveries"
COLLECTION_TOMBSTONES = "deleted-jobs"

SUBSCRIPTION_SUMMARIZE = "summarize"
SUBSCRIPTION_WEBHOOKS = "webhooks"
SUBSCRIPTION_WEBHOOK_DELIVERY = "webhook-delivery"
