"""The review loop: queue what people should check, send it to the review desk (Label
Studio), and turn what comes back into corrections.

- Queued (`queue_flags`, `queue_finished`): what someone flagged (a job or some segments), runs
  of segments the quality signals marked uncertain, and `AUDIARY_REVIEW_AUDIT_PERCENT` of
  confident jobs. An item's id names its job, reason and range: queuing is idempotent.
- Sent (`sync`): each queued item becomes one task, with its audio cut to a clip (a signed,
  expiring URL) and the machine's segments as the prediction the reviewer edits.
- Back (`receive`, from the desk's webhook; `sync`, for webhooks that were missed): each
  annotation becomes feedback with `source: label-studio`, the next transcript version, the
  userfeedback copy and a new note version. One annotation (id, updated_at) is applied once;
  a skipped task is recorded as skipped, one for a deleted job is dropped with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from audiary.domain.audio import SAMPLE_RATE, sample_range_bytes, wav_bytes
from audiary.domain.jobs import Job, utcnow
from audiary.domain.layout import job_prefix
from audiary.domain.review import (
    LABEL_CONFIG,
    AnnotationError,
    ReviewItem,
    ReviewReason,
    ReviewStats,
    ReviewStatus,
    corrections_from,
    in_audit,
    item_id,
    prediction,
    uncertain_runs,
    word_errors,
)
from audiary.domain.transcript import Segment, Transcript
from audiary.errors import ConflictError
from audiary.observability import metrics
from audiary.ports import DeskTask, ReviewDesk, Stores
from audiary.services.jobs import load_transcript, store_feedback, summarize_again

__all__ = ["Applied", "SyncReport", "queue_finished", "queue_flags", "receive", "setup",
           "stats", "sync"]

log = logging.getLogger(__name__)

# Label Studio's webhook events the receiver handles.
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "TASKS_DELETED")
SECRET_HEADER = "X-Audiary-Review-Secret"  # noqa: S105 (a header name)
SEND_LEASE_S = 120.0
APPLY_LEASE_S = 300.0
OPEN = (ReviewStatus.QUEUED, ReviewStatus.SENT)


# --- queuing ------------------------------------------------------------------------------


def _item(job: Job, transcript: Transcript, reason: ReviewReason,
          first: int | None = None, last: int | None = None) -> ReviewItem:
    if first is None:
        start, end = 0.0, transcript.duration_s or (
            transcript.segments[-1].end if transcript.segments else 0.0)
    else:
        last = first if last is None else last
        start, end = transcript.segments[first].start, transcript.segments[last].end
    return ReviewItem(item_id=item_id(job.job_id, reason, first, last), job_id=job.job_id,
                      owner=job.owner, reason=reason, first=first, last=last, start_s=start,
                      end_s=end, model=job.model, transcript_version=job.transcript_version,
                      queued_at=utcnow())


def _queue(svc: Stores, items: Iterable[ReviewItem]) -> list[ReviewItem]:
    added = [item for item in items if svc.notes.add_review_item(item)]
    for item in added:
        metrics.REVIEW_QUEUED.labels(item.reason.value).inc()
        log.info("queued %s for review", item.item_id, extra={"job_id": item.job_id})
    return added


def queue_flags(svc: Stores, job: Job, *, whole: bool, segments: Sequence[int] = ()
                ) -> list[ReviewItem]:
    """Queue the flagged job (`whole`) and/or flagged segments; what was new."""
    transcript = load_transcript(svc, job)
    items = [_item(job, transcript, ReviewReason.FLAGGED)] if whole else []
    items += [_item(job, transcript, ReviewReason.FLAGGED, i, i) for i in sorted(set(segments))]
    return _queue(svc, items)


def queue_finished(svc: Stores, job: Job, transcript: Transcript) -> list[ReviewItem]:
    """At the end of a job: its uncertain runs, or (confident) the audit draw."""
    runs = uncertain_runs(transcript.segments)
    items = [_item(job, transcript, ReviewReason.UNCERTAIN, a, b) for a, b in runs]
    if not runs and transcript.segments and in_audit(job.job_id,
                                                      svc.settings.review_audit_percent):
        items.append(_item(job, transcript, ReviewReason.AUDIT))
    return _queue(svc, items)


# --- sending ------------------------------------------------------------------------------


def _clip_key(item: ReviewItem) -> str:
    """Under the job's prefix of the userfeedback bucket: kept as long as the job (the work
    bucket's audio expires), and deleted with it."""
    return f"{job_prefix(item.job_id)}review/{item.item_id}.wav"


def _audio_url(svc: Stores, job: Job, item: ReviewItem) -> tuple[str, float]:
    """A signed URL for the item's audio, and the time in the recording where it starts: a
    copy of the canonical audio for a whole-job item, else a clip of the span with some
    padding. Made once; later calls only sign the URL again."""
    s = svc.settings
    key = _clip_key(item)
    start = 0.0 if item.first is None else max(item.start_s - s.review_clip_pad_s, 0.0)
    if svc.blobs.stat(s.feedback_bucket, key) is None:
        if job.audio_uri is None:
            raise ConflictError("audio_gone", f"job {job.job_id} has no canonical audio")
        bucket, canonical = job.audio_uri.split("/", 1)
        if item.first is None:
            svc.blobs.copy(bucket, canonical, s.feedback_bucket, key)
        else:
            end = item.end_s + s.review_clip_pad_s
            if job.duration_s:
                end = min(end, job.duration_s)
            first, last = sample_range_bytes(int(start * SAMPLE_RATE), int(end * SAMPLE_RATE))
            svc.blobs.put(s.feedback_bucket, key,
                          wav_bytes(svc.blobs.read_range(bucket, canonical, first, last)),
                          content_type="audio/wav")
    return svc.blobs.signed_get_url(s.feedback_bucket, key, expires_s=s.review_url_ttl_s), start


def _shown(item: ReviewItem, transcript: Transcript) -> dict[int, Segment]:
    return {i: transcript.segments[i] for i in item.indices(len(transcript.segments))}


def _task_data(svc: Stores, job: Job, item: ReviewItem) -> dict[str, Any]:
    url, offset = _audio_url(svc, job, item)
    span = ("the whole recording" if item.first is None else
            f"segment {item.first}" if item.first == item.last else
            f"segments {item.first}-{item.last}")
    name = PurePosixPath(job.source.name).name
    expires = utcnow() + timedelta(seconds=svc.settings.review_url_ttl_s)
    return {"audio": url, "audio_expires_at": expires.isoformat(), "offset_s": offset,
            "item_id": item.item_id, "job_id": item.job_id, "reason": item.reason.value,
            "first": item.first, "last": item.last, "model": item.model or "",
            "transcript_version": item.transcript_version,
            "context": f"{name} · {item.reason.value} · {span} · model {_short(item.model)}"}


def _short(model: str | None) -> str:
    """A model directory's last two parts (the job keeps the whole location)."""
    if not model:
        return "?"
    return "/".join(PurePosixPath(model).parts[-2:]) if "/" in model else model


def _send(svc: Stores, desk: ReviewDesk, project_id: int, item: ReviewItem) -> int | None:
    """Create the item's task (once: a lease keeps two syncs from both doing it)."""
    job = svc.jobs.get_job(item.job_id)
    if job is None:
        _drop(svc, item, "the job was deleted before review")
        return None
    holder = f"sync-{utcnow().timestamp()}"
    effect = f"review-task-{item.item_id}"
    if not svc.keys.claim_delivery(effect, holder, lease_s=SEND_LEASE_S, now=utcnow()):
        return None
    transcript = load_transcript(svc, job, item.transcript_version)
    data = _task_data(svc, job, item)
    task_id = desk.create_task(project_id, data, prediction(_shown(item, transcript),
                                                           data["offset_s"]),
                               model_version=item.model or "machine")
    svc.notes.update_review_item(item.item_id, {"status": ReviewStatus.SENT, "task_id": task_id,
                                                "sent_at": utcnow()})
    svc.keys.record_delivery(effect, utcnow())
    log.info("review item %s is task %d", item.item_id, task_id, extra={"job_id": item.job_id})
    return task_id


def _drop(svc: Stores, item: ReviewItem, why: str) -> None:
    svc.notes.update_review_item(item.item_id, {"status": ReviewStatus.DROPPED, "note": why})
    log.info("review item %s dropped: %s", item.item_id, why, extra={"job_id": item.job_id})


# --- what comes back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What became of one annotation."""

    outcome: str  # corrected | skipped | duplicate | dropped | invalid | ignored
    detail: str = ""
    transcript_version: int | None = None


def _apply(svc: Stores, data: Mapping[str, Any], annotation: Mapping[str, Any]) -> Applied:
    item = svc.notes.get_review_item(str(data.get("item_id") or ""))
    if item is None:
        log.warning("annotation %s is for no review item (task data %s): dropped",
                    annotation.get("id"), dict(data))
        return Applied("dropped", "no such review item")
    extra = {"job_id": item.job_id}
    job = svc.jobs.get_job(item.job_id)
    if job is None:
        if item.status is not ReviewStatus.DROPPED:
            _drop(svc, item, "the job was deleted; its annotation is not applied")
        log.info("annotation %s is for deleted job %s: dropped", annotation.get("id"),
                 item.job_id, extra=extra)
        return Applied("dropped", f"job {item.job_id} was deleted")
    effect = f"review-{item.item_id}-{annotation.get('id')}-{annotation.get('updated_at')}"
    if svc.keys.delivery_outcome(effect):
        return Applied("duplicate", f"annotation {annotation.get('id')} was applied already")
    if annotation.get("was_cancelled"):
        if item.status is not ReviewStatus.CORRECTED:
            svc.notes.update_review_item(item.item_id, {"status": ReviewStatus.SKIPPED,
                                                        "note": "skipped in Label Studio"})
        svc.keys.record_delivery(effect, utcnow())
        log.info("review item %s was skipped", item.item_id, extra=extra)
        return Applied("skipped")
    shown = load_transcript(svc, job, item.transcript_version)
    segments = _shown(item, shown)
    try:
        edits = corrections_from(annotation.get("result") or [], segments,
                                 float(data.get("offset_s") or 0.0))
    except AnnotationError as exc:
        log.warning("annotation %s not applied: %s", annotation.get("id"), exc, extra=extra)
        return Applied("invalid", str(exc))
    if not svc.keys.claim_delivery(effect, f"apply-{utcnow().timestamp()}",
                                   lease_s=APPLY_LEASE_S, now=utcnow()):
        return Applied("duplicate", f"annotation {annotation.get('id')} is being applied")
    stored = store_feedback(
        svc, job, f"label-studio:{annotation.get('completed_by')}", corrected_transcript=None,
        flagged=False, comment=None, segment_edits=edits, source="label-studio",
        feedback_id=f"ls-{item.item_id}-{annotation.get('id')}-"
                    f"{str(annotation.get('updated_at')).replace(':', '')}")
    _measure(svc, job, item, segments, edits)
    version = stored.feedback.transcript_version
    if version is not None:
        try:
            summarize_again(svc, svc.jobs.get_job(job.job_id) or job)
        except ConflictError as exc:  # not DONE yet, or the note is current
            log.info("no new note for %s: %s", job.job_id, exc.message, extra=extra)
    svc.keys.record_delivery(effect, utcnow())
    log.info("annotation %s applied to %s: %d segments corrected", annotation.get("id"),
             item.item_id, len(stored.feedback.corrections), extra=extra)
    return Applied("corrected", transcript_version=version)


def _measure(svc: Stores, job: Job, item: ReviewItem, shown: Mapping[int, Segment],
             edits: Mapping[int, str]) -> None:
    """The machine's WER on the item against the reviewer's text, and the time it took."""
    indices = sorted(shown)
    if not indices:
        return
    machine = load_transcript(svc, job, 1)
    hypothesis = " ".join(machine.segments[i].text for i in indices
                          if i < len(machine.segments))
    reference = " ".join(edits.get(i, shown[i].text) for i in indices)
    errors, count = word_errors(reference, hypothesis)
    now = utcnow()
    if item.status is not ReviewStatus.CORRECTED:  # a later edit is not a new correction
        model = item.model or "unknown"
        metrics.REVIEW_CORRECTIONS.labels(item.reason.value).inc()
        metrics.REVIEW_FLAG_TO_CORRECTION_SECONDS.labels(item.reason.value).observe(
            (now - item.queued_at).total_seconds())
        metrics.REVIEW_WORD_ERRORS.labels(model).inc(errors)
        metrics.REVIEW_REFERENCE_WORDS.labels(model).inc(count)
    svc.notes.update_review_item(item.item_id, {
        "status": ReviewStatus.CORRECTED, "corrected_at": now, "machine_text": hypothesis,
        "corrected_text": reference, "errors": errors, "reference_words": count})


def receive(svc: Stores, payload: Mapping[str, Any]) -> Applied:
    """One Label Studio webhook (the JSON it POSTs)."""
    action = payload.get("action")
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        task, annotation = payload.get("task") or {}, payload.get("annotation") or {}
        if not isinstance(task, Mapping) or not isinstance(annotation, Mapping):
            return Applied("invalid", "the webhook carries no task or annotation")
        return _apply(svc, task.get("data") or {}, annotation)
    if action == "TASKS_DELETED":
        gone = {int(t["id"]) for t in payload.get("tasks") or [] if "id" in t}
        for item in svc.notes.list_review_items(status=ReviewStatus.SENT):
            if item.task_id in gone:
                _drop(svc, item, "its task was deleted in Label Studio")
        return Applied("dropped", f"{len(gone)} tasks deleted")
    return Applied("ignored", f"action {action} is not one the receiver handles")


# --- the periodic sync ----------------------------------------------------------------------


@dataclass
class SyncReport:
    sent: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    resigned: int = 0
    queue_depth: int = 0


def _by_item(tasks: Iterable[DeskTask]) -> dict[str, DeskTask]:
    return {str(t.data["item_id"]): t for t in tasks if t.data.get("item_id")}


def sync(svc: Stores, desk: ReviewDesk, now: datetime | None = None) -> SyncReport:
    """Send queued items, apply annotations the webhook missed, drop items whose task is
    gone, sign audio URLs again before they expire. Safe to run twice, or twice at once."""
    now = now or utcnow()
    s = svc.settings
    report = SyncReport()
    project_id, _ = desk.ensure_project(s.review_project_title, LABEL_CONFIG)
    tasks = _by_item(desk.tasks(project_id))
    for open_task in tasks.values():
        for annotation in sorted(open_task.annotations, key=lambda a: str(a.get("updated_at"))):
            outcome = _apply(svc, open_task.data, annotation).outcome
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    for item in svc.notes.list_review_items(status=ReviewStatus.QUEUED):
        if item.item_id in tasks:  # made by a sync that stopped before recording it
            svc.notes.update_review_item(item.item_id, {
                "status": ReviewStatus.SENT, "task_id": tasks[item.item_id].task_id,
                "sent_at": now})
        elif _send(svc, desk, project_id, item) is not None:
            report.sent.append(item.item_id)
    for item in svc.notes.list_review_items(status=ReviewStatus.SENT):
        if item.item_id in report.sent:  # made just now, after the tasks were listed
            continue
        task = tasks.get(item.item_id)
        if task is None:
            _drop(svc, item, "its task is no longer in Label Studio")
            report.dropped.append(item.item_id)
        elif _expiring(task, now, s.review_url_ttl_s) and (job := svc.jobs.get_job(item.job_id)):
            desk.update_task_data(task.task_id, {**task.data, **_task_data(svc, job, item)})
            report.resigned += 1
    depth = {status: len(svc.notes.list_review_items(status=status)) for status in OPEN}
    for status, count in depth.items():
        metrics.REVIEW_QUEUE_DEPTH.labels(status.value).set(count)
    report.queue_depth = sum(depth.values())
    return report


def _expiring(task: DeskTask, now: datetime, ttl_s: int) -> bool:
    raw = task.data.get("audio_expires_at")
    if not raw:
        return True
    return datetime.fromisoformat(str(raw)) - now < timedelta(seconds=ttl_s / 2)


def setup(svc: Stores, desk: ReviewDesk) -> tuple[int, bool, bool | None]:
    """The project (created or brought up to date) and, when `AUDIARY_REVIEW_URL` is set, the
    webhook to the receiver: (project id, project created, webhook created or None)."""
    s = svc.settings
    project_id, created = desk.ensure_project(s.review_project_title, LABEL_CONFIG)
    hook = None
    if s.review_url:
        if s.review_secret is None:
            raise ConflictError("no_secret", "set AUDIARY_REVIEW_SECRET: the receiver refuses "
                                "webhooks without it")
        hook = desk.ensure_webhook(project_id, f"{s.review_url.rstrip('/')}/label-studio",
                                   {SECRET_HEADER: s.review_secret.get_secret_value()},
                                   WEBHOOK_ACTIONS)
    return project_id, created, hook


def stats(svc: Stores) -> ReviewStats:
    """The queue by status, and the machine's WER against corrections per model."""
    result = ReviewStats()
    errors: dict[str, int] = {}
    for item in svc.notes.list_review_items():
        setattr(result, item.status.value, getattr(result, item.status.value) + 1)
        if item.status is ReviewStatus.CORRECTED and item.reference_words:
            model = item.model or "unknown"
            errors[model] = errors.get(model, 0) + (item.errors or 0)
            result.words_by_model[model] = (result.words_by_model.get(model, 0)
                                            + item.reference_words)
    result.wer_by_model = {m: errors[m] / w for m, w in result.words_by_model.items() if w}
    return result

