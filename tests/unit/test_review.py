"""The review queue and what comes back from the desk, on the in-memory adapters: what is
queued (flags, uncertain runs, the audit draw), how a prediction and an annotation map to
segments, and how webhooks are applied (once), skipped, dropped or refused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from audiary.domain.review import (
    FROM_TEXT,
    AnnotationError,
    ReviewReason,
    ReviewStatus,
    corrections_from,
    in_audit,
    item_id,
    prediction,
    uncertain_runs,
    word_errors,
)
from audiary.domain.transcript import Segment, Transcript
from audiary.services import jobs as use_cases
from audiary.services import review
from tests.unit.test_deletion import everything, run_pipeline, svc  # noqa: F401 (fixture)


def seg(start: float, end: float, text: str, *, logprob: float = -0.2) -> Segment:
    return Segment(start=start, end=end, text=text, avg_logprob=logprob)


def test_item_ids_name_job_reason_and_range():
    assert item_id("j1", ReviewReason.FLAGGED) == "j1.flagged.all"
    assert item_id("j1", ReviewReason.FLAGGED, 3, 3) == "j1.flagged.s3"
    assert item_id("j1", ReviewReason.UNCERTAIN, 2, 5) == "j1.uncertain.s2-5"


def test_adjacent_uncertain_segments_make_one_run():
    segments = [seg(0, 1, "a"), seg(1, 2, "b", logprob=-2), seg(2, 3, "c", logprob=-2),
                seg(3, 4, "d"), seg(4, 5, "e", logprob=-3)]
    assert [s.uncertain for s in segments] == [False, True, True, False, True]
    assert uncertain_runs(segments) == [(1, 2), (4, 4)]


def test_the_audit_draw_is_the_same_every_time_and_about_the_percentage():
    ids = [f"job-{i}" for i in range(10_000)]
    drawn = [i for i in ids if in_audit(i, 5.0)]
    assert drawn == [i for i in ids if in_audit(i, 5.0)]
    assert 400 <= len(drawn) <= 600
    assert not any(in_audit(i, 0.0) for i in ids[:500])
    assert all(in_audit(i, 100.0) for i in ids[:500])


SEGMENTS = {2: seg(10.0, 12.5, "we talked about the garden"),
            3: seg(12.5, 15.0, "for almost an hour")}


def annotated(text_by_region: dict[str, str], offset: float = 9.5) -> list[dict]:
    result = prediction(SEGMENTS, offset)
    for entry in result:
        if entry["from_name"] == FROM_TEXT and entry["id"] in text_by_region:
            entry["value"]["text"] = [text_by_region[entry["id"]]]
    return result


def test_the_prediction_has_a_region_and_a_text_per_segment_relative_to_the_clip():
    result = prediction(SEGMENTS, 9.5)
    assert [(e["id"], e["from_name"]) for e in result] == [
        ("s2", "speech"), ("s2", "transcription"), ("s3", "speech"), ("s3", "transcription")]
    assert result[1]["value"] == {"start": 0.5, "end": 3.0, "channel": 0,
                                  "text": ["we talked about the garden"]}


def test_an_annotation_maps_back_to_segments_by_region_and_by_time():
    edits = corrections_from(annotated({"s3": "for almost an hour!"}), SEGMENTS, 9.5)
    assert edits == {2: "we talked about the garden", 3: "for almost an hour!"}
    drawn = {"id": "new1", "from_name": FROM_TEXT, "type": "textarea",
             "value": {"start": 0.6, "end": 2.9, "text": ["we walked about the garden"]}}
    kept = [e for e in annotated({}) if e["id"] != "s2"] + [drawn]
    assert corrections_from(kept, SEGMENTS, 9.5)[2] == "we walked about the garden"
    nowhere = {**drawn, "value": {"start": 40.0, "end": 41.0, "text": ["noise"]}}
    assert corrections_from([nowhere], SEGMENTS, 9.5) == {}


def test_an_empty_region_is_refused_with_where_it_is():
    with pytest.raises(AnnotationError, match=r"region s3 \(segment 3\) is empty"):
        corrections_from(annotated({"s3": "   "}), SEGMENTS, 9.5)


@pytest.mark.parametrize(("reference", "hypothesis", "expected"), [
    ("Sarah met me", "sarah met me", (0, 3)),
    ("Sarah met me today", "Sara met me", (2, 4)),
    ("hello", "hello hello there", (2, 1)),
    ("", "anything", (1, 0)),
])
def test_word_errors_count_substitutions_deletions_and_insertions(reference, hypothesis,
                                                                   expected):
    assert word_errors(reference, hypothesis) == expected


def test_a_finished_job_queues_its_uncertain_runs_or_its_audit_draw(svc):  # noqa: F811
    job = _job(svc)
    transcript = Transcript(job_id=job.job_id, segments=[
        seg(0, 1, "a"), seg(1, 2, "b", logprob=-2), seg(2, 3, "c")], duration_s=3.0)
    (item,) = review.queue_finished(svc, job, transcript)
    assert (item.item_id, item.start_s, item.end_s) == (f"{job.job_id}.uncertain.s1", 1.0, 2.0)
    assert review.queue_finished(svc, job, transcript) == []  # queued once
    confident = transcript.model_copy(update={"segments": [seg(0, 1, "a")]})
    audited = review.queue_finished(with_audit(svc, 100.0), job, confident)
    assert [(i.reason, i.first, i.end_s) for i in audited] == [(ReviewReason.AUDIT, None, 3.0)]
    other = job.model_copy(update={"job_id": "other"})
    assert review.queue_finished(with_audit(svc, 0.0), other, confident) == []


def with_audit(svc, percent: float):  # noqa: F811
    return dataclasses.replace(svc, settings=svc.settings.model_copy(
        update={"review_audit_percent": percent}))


def _job(svc, tmp_path=None):  # noqa: F811
    import tempfile
    from pathlib import Path

    job, *_ = run_pipeline(svc, Path(tmp_path or tempfile.mkdtemp()))
    return svc.jobs.get_job(job.job_id)


def webhook(svc, job, item, text: str, *, annotation_id: int = 7,  # noqa: F811
            updated: str = "2026-12-01T10:00:00Z", cancelled: bool = False) -> dict:
    transcript = use_cases.load_transcript(svc, job)
    shown = {i: transcript.segments[i] for i in item.indices(len(transcript.segments))}
    result = prediction(shown, 0.0)
    for entry in result:
        if entry["from_name"] == FROM_TEXT:
            entry["value"]["text"] = [text]
    return {"action": "ANNOTATION_UPDATED" if annotation_id > 7 else "ANNOTATION_CREATED",
            "task": {"id": 11, "data": {"item_id": item.item_id, "offset_s": 0.0}},
            "annotation": {"id": annotation_id, "result": [] if cancelled else result,
                           "was_cancelled": cancelled, "updated_at": updated,
                           "completed_by": 2}}


def test_an_annotation_becomes_a_correction_once(svc):  # noqa: F811
    job = _job(svc)
    (item,) = review.queue_flags(svc, job, whole=False, segments=[1])
    svc.notes.update_review_item(item.item_id, {"status": ReviewStatus.SENT, "task_id": 11})
    payload = webhook(svc, job, item, "Sarah said so")
    applied = review.receive(svc, payload)
    assert (applied.outcome, applied.transcript_version) == ("corrected", 2)
    (feedback,) = [f for f in svc.notes.list_feedback(job.job_id) if f.source == "label-studio"]
    assert feedback.owner == "label-studio:2"
    assert [(c.index, c.after) for c in feedback.corrections] == [(1, "Sarah said so")]
    again = [m for m in svc.publisher.messages("transcript-ready")
             if json.loads(m.data).get("transcript_version") == 2]
    assert len(again) == 1  # a new note version is asked for
    stored = svc.notes.get_review_item(item.item_id)
    assert stored.status is ReviewStatus.CORRECTED
    assert stored.corrected_text == "Sarah said so"
    assert (stored.errors, stored.reference_words) == word_errors(
        "Sarah said so", use_cases.load_transcript(svc, job, 1).segments[1].text)
    assert review.receive(svc, payload).outcome == "duplicate"
    assert svc.jobs.get_job(job.job_id).transcript_version == 2
    edited = webhook(svc, job, item, "Sarah said no", annotation_id=8)
    assert review.receive(svc, edited).transcript_version == 3
    assert review.stats(svc).corrected == 1


def test_skips_deleted_tasks_unknown_items_and_deleted_jobs(svc):  # noqa: F811
    job = _job(svc)
    first, second = review.queue_flags(svc, job, whole=False, segments=[0, 1])
    for number, item in enumerate((first, second)):
        svc.notes.update_review_item(item.item_id, {"status": ReviewStatus.SENT,
                                                    "task_id": 20 + number})
    assert review.receive(svc, webhook(svc, job, first, "", cancelled=True)).outcome == "skipped"
    assert svc.notes.get_review_item(first.item_id).status is ReviewStatus.SKIPPED
    gone = review.receive(svc, {"action": "TASKS_DELETED", "tasks": [{"id": 21}]})
    assert gone.outcome == "dropped"
    assert svc.notes.get_review_item(second.item_id).status is ReviewStatus.DROPPED
    unknown = webhook(svc, job, first, "x")
    unknown["task"]["data"]["item_id"] = "nobody.flagged.s0"
    assert review.receive(svc, unknown).outcome == "dropped"
    empty = review.receive(svc, webhook(svc, job, first, " ", annotation_id=9))
    assert (empty.outcome, "is empty" in empty.detail) == ("invalid", True)
    assert review.receive(svc, {"action": "PROJECT_UPDATED"}).outcome == "ignored"
    use_cases.delete_job(svc, job)
    assert everything(svc, job.job_id) == {}  # review items go with the job
    late = review.receive(svc, {"action": "ANNOTATION_CREATED",
                                "task": {"id": 20, "data": {"item_id": first.item_id}},
                                "annotation": {"id": 30, "result": [], "updated_at": "t"}})
    assert late.outcome == "dropped"
    assert [f for f in svc.notes.list_feedback(job.job_id) if f.source == "label-studio"] == []
