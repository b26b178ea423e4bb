"""Per-segment corrections make transcript versions: the machine's stays version 1, each saved
correction is the next one, times are kept, nothing is overwritten (in-memory adapters)."""

from __future__ import annotations

import pytest

from audiary.domain.jobs import JobStatus
from audiary.domain.layout import transcript_version_key
from audiary.errors import ConflictError, InvalidRequestError
from audiary.services import jobs as use_cases
from tests.unit.test_deletion import everything, run_pipeline, svc  # noqa: F401 (fixture)


def test_a_correction_makes_version_2_and_keeps_version_1(svc, tmp_path):  # noqa: F811
    job, *_ = run_pipeline(svc, tmp_path)
    machine = use_cases.load_transcript(svc, job)
    stored = use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None,
                                      flagged=False, comment=None,
                                      segment_edits={0: "Tuesday, not Monday"})
    job = svc.jobs.get_job(job.job_id)
    assert job.transcript_version == 2
    v1 = use_cases.load_transcript(svc, job, 1)
    v2 = use_cases.load_transcript(svc, job)
    assert v1 == machine
    assert v2.segments[0].text == "Tuesday, not Monday"
    assert (v2.segments[0].start, v2.segments[0].end) == (machine.segments[0].start,
                                                          machine.segments[0].end)
    assert v2.segments[1:] == machine.segments[1:]
    (correction,) = stored.feedback.corrections
    assert (correction.before, correction.after) == (machine.segments[0].text,
                                                     "Tuesday, not Monday")
    assert stored.feedback.transcript_version == 2
    assert stored.feedback.corrected_transcript == v2.text


def test_each_correction_is_a_new_version_and_unchanged_text_makes_none(svc, tmp_path):  # noqa: F811
    job, *_ = run_pipeline(svc, tmp_path)
    first = use_cases.load_transcript(svc, job).segments[1].text
    use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None, flagged=False,
                             comment=None, segment_edits={1: "one"})
    job = svc.jobs.get_job(job.job_id)
    use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None, flagged=False,
                             comment=None, segment_edits={1: "two"})
    job = svc.jobs.get_job(job.job_id)
    assert [use_cases.load_transcript(svc, job, v).segments[1].text for v in (1, 2, 3)] == [
        first, "one", "two"]
    same = use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None,
                                    flagged=True, comment=None, segment_edits={1: " two "})
    assert same.feedback.transcript_version is None  # nothing changed: no version 4
    assert svc.jobs.get_job(job.job_id).transcript_version == 3
    with pytest.raises(InvalidRequestError, match="no version 4"):
        use_cases.load_transcript(svc, svc.jobs.get_job(job.job_id), 4)


def test_a_segment_that_does_not_exist_is_refused_and_nothing_is_saved(svc, tmp_path):  # noqa: F811
    job, *_ = run_pipeline(svc, tmp_path)
    count = len(svc.notes.list_feedback(job.job_id))
    with pytest.raises(InvalidRequestError, match="no segment 99"):
        use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None, flagged=False,
                                 comment=None, segment_edits={99: "x"})
    assert len(svc.notes.list_feedback(job.job_id)) == count
    assert svc.jobs.get_job(job.job_id).transcript_version == 1


def test_deleting_the_job_removes_every_version(svc, tmp_path):  # noqa: F811
    job, *_ = run_pipeline(svc, tmp_path)
    use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None, flagged=False,
                             comment=None, segment_edits={0: "fixed"})
    bucket = svc.settings.transcripts_bucket
    assert svc.blobs.stat(bucket, transcript_version_key(job.job_id, 2)) is not None
    use_cases.delete_job(svc, svc.jobs.get_job(job.job_id))
    assert everything(svc, job.job_id) == {}


def test_a_corrected_transcript_is_summarized_again_into_note_version_2(svc, tmp_path):  # noqa: F811
    from audiary.services.summarize import summarize
    from audiary.wire import messages
    from tests.unit.test_deletion import router

    job, *_ = run_pipeline(svc, tmp_path)
    first = svc.notes.get_note(job.job_id)
    with pytest.raises(ConflictError, match="already from transcript version 1"):
        use_cases.summarize_again(svc, job)  # nothing corrected yet
    use_cases.store_feedback(svc, job, "key:k", corrected_transcript=None, flagged=False,
                             comment=None, segment_edits={0: "I need to call Anna tomorrow."})
    job = svc.jobs.get_job(job.job_id)
    finished_before = len(svc.publisher.messages("job-finished"))
    assert use_cases.summarize_again(svc, job) == 2
    ready = messages.parse_transcript_ready(svc.publisher.messages("transcript-ready")[-1].data)
    assert (ready.transcript_version, ready.transcript_key) == (2, f"{job.job_id}/v2.json")
    outcome = summarize(svc, router(svc), ready, message_id="again-1")
    assert outcome.detail.startswith("note version 2")
    note = svc.notes.get_note(job.job_id)
    assert (note.version, note.transcript_version) == (2, 2)
    assert note.history == [first]
    assert "Anna" in " ".join(a.text for a in note.note.action_items)
    # A repeat of the message, or another request, changes nothing; the job stays DONE, quiet.
    assert "nothing to do" in summarize(svc, router(svc), ready, message_id="again-2").detail
    assert svc.notes.get_note(job.job_id) == note
    assert svc.jobs.get_job(job.job_id).status is JobStatus.DONE
    assert len(svc.publisher.messages("job-finished")) == finished_before
    with pytest.raises(ConflictError, match="already from transcript version 2"):
        use_cases.summarize_again(svc, svc.jobs.get_job(job.job_id))
