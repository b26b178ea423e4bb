"""Prometheus metrics, one definition per name, shared by every service.

Grafana panels and alerts name these; a test checks that every panel query names a metric
defined here. Real-time factor = rate(inference seconds) / rate(audio seconds).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INFERENCE_SECONDS = Counter(
    "audiary_inference_seconds", "Seconds spent in speech recognition", ["model", "device"]
)
AUDIO_SECONDS = Counter(
    "audiary_audio_seconds", "Seconds of audio recognised", ["model", "device"]
)
REQUESTS = Counter(
    "audiary_http_requests", "HTTP requests handled", ["service", "route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "audiary_http_request_duration_seconds", "HTTP request latency", ["service", "route"]
)
STAGE_SECONDS = Histogram(
    "audiary_job_stage_seconds", "Seconds a job spent in each state", ["stage"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
QUEUE_LAG_SECONDS = Histogram(
    "audiary_queue_lag_seconds", "Seconds from publish to handling of a message",
    ["topic", "service"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 600),
)
DECODE_BATCH_WINDOWS = Histogram(
    "audiary_decode_batch_windows", "Whisper windows in one model call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
DECODE_BATCH_REQUESTS = Histogram(
    "audiary_decode_batch_requests", "Requests whose windows shared one model call",
    buckets=(1, 2, 3, 4, 6, 8, 16),
)
DECODE_SHARED_WINDOWS = Counter(
    "audiary_decode_shared_windows",
    "Windows decoded in one model window together with another request's",
)
CHUNKS_RETRIED = Counter(
    "audiary_chunks_retried", "Chunk deliveries beyond the first attempt"
)
JOBS_FINISHED = Counter("audiary_jobs_finished", "Jobs that reached an end state", ["status"])
SEGMENTS = Counter(
    "audiary_transcript_segments",
    "Transcript segments written, all of them and those the decoder was unsure of", ["kind"]
)
CHUNKS_HANDED_BACK = Counter(
    "audiary_chunks_handed_back", "Chunks a shutting-down transcriber published again"
)
JOBS_SWEPT = Counter(
    "audiary_jobs_swept", "Stalled jobs the sweeper re-drove or failed", ["action"]
)
LLM_TOKENS = Counter(
    "audiary_llm_tokens", "LLM tokens used", ["provider", "model", "direction"]
)
LLM_COST_USD = Counter("audiary_llm_cost_usd", "LLM cost in US dollars", ["provider", "model"])
LLM_FAILURES = Counter("audiary_llm_failures", "Failed LLM attempts", ["provider", "reason"])
BREAKER_STATE = Gauge(
    "audiary_breaker_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
    ["provider"],
)
DEAD_LETTER_MESSAGES = Gauge(
    "audiary_dead_letter_messages", "Messages waiting on a dead-letter subscription",
    ["subscription"],
)
REVIEW_QUEUED = Counter(
    "audiary_review_queued", "Items put in the review queue", ["reason"])
REVIEW_QUEUE_DEPTH = Gauge(
    "audiary_review_queue_depth", "Review items waiting: queued, or sent and not answered",
    ["status"])
REVIEW_CORRECTIONS = Counter(
    "audiary_review_corrections", "Annotations applied from the review desk", ["reason"])
REVIEW_FLAG_TO_CORRECTION_SECONDS = Histogram(
    "audiary_review_flag_to_correction_seconds", "From queuing an item to its correction",
    ["reason"], buckets=(60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600))
# WER of the machine's text against reviewers' corrections, per model: errors / words.
REVIEW_WORD_ERRORS = Counter(
    "audiary_review_word_errors", "The machine's word errors against corrections", ["model"])
REVIEW_REFERENCE_WORDS = Counter(
    "audiary_review_reference_words", "Words in reviewers' corrections", ["model"])
JOBS_IN_STATE = Gauge("audiary_jobs_in_state", "Jobs currently in each state", ["status"])
SERVICE_UP = Gauge("audiary_service_up", "1 when the service is ready", ["service"])

#: Every metric this project exports, by the name Prometheus shows (counters get `_total`).
EXPORTED = {
    "audiary_inference_seconds_total", "audiary_audio_seconds_total",
    "audiary_http_requests_total", "audiary_http_request_duration_seconds",
    "audiary_job_stage_seconds", "audiary_queue_lag_seconds", "audiary_chunks_retried_total",
    "audiary_decode_batch_windows", "audiary_decode_batch_requests",
    "audiary_decode_shared_windows_total",
    "audiary_jobs_finished_total", "audiary_llm_tokens_total", "audiary_llm_cost_usd_total",
    "audiary_llm_failures_total", "audiary_breaker_state", "audiary_dead_letter_messages",
    "audiary_jobs_in_state", "audiary_service_up",
    "audiary_review_queued_total", "audiary_review_queue_depth",
    "audiary_review_corrections_total", "audiary_review_flag_to_correction_seconds",
    "audiary_review_word_errors_total", "audiary_review_reference_words_total",
}
