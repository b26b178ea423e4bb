"""The dataset builder on the in-memory adapters: corrected segments become clips with their
text in a manifest per split; the filters turn away silence, empty and unchanged text, clips
over 30 s, implausible speech rates and audio that is gone; splits never share a recording;
`dataset-ready` is published at the threshold, not below."""

from __future__ import annotations

import dataclasses
import io
import json
import wave

import numpy as np
import pytest

from audiary.domain.datasets import (
    Candidate,
    Filters,
    Rejection,
    Split,
    WerSummary,
    rejection,
    split_of,
)
from audiary.domain.transcript import Segment
from audiary.errors import NotFoundError
from audiary.evaluation.datasets import evaluate, rows_of
from audiary.ports import Transcriber
from audiary.services import datasets
from audiary.services import jobs as use_cases
from audiary.wire import messages
from tests.media import DEMO_SAMPLE, decode
from tests.unit.test_deletion import run_pipeline, svc  # noqa: F401 (fixture)

WORDS = "Monday the third of November today started early"


def candidate(seconds: float, text: str = WORDS, machine: str = "monday the third") -> Candidate:
    return Candidate(job_id="j", index=0, start_s=10.0, end_s=10.0 + seconds, text=text,
                     machine_text=machine, source_id="j")


@pytest.mark.parametrize(("made", "snr", "expected"), [
    (candidate(4.0), 30.0, None),
    (candidate(0.5, text="hi"), 30.0, Rejection.TOO_SHORT),
    (candidate(31.0, text=WORDS * 12), 30.0, Rejection.TOO_LONG),
    (candidate(4.0, text="  "), 30.0, Rejection.EMPTY),
    (candidate(4.0, machine=WORDS.lower() + " "), 30.0, Rejection.UNCHANGED),
    (candidate(4.0, text=WORDS * 4), 30.0, Rejection.SPEECH_RATE),
    (candidate(4.0), 3.0, Rejection.NOISY),
    (candidate(4.0), None, Rejection.AUDIO_GONE),
])
def test_each_filter_says_why(made, snr, expected):
    assert rejection(made, snr, Filters()) is expected


def test_splits_follow_the_ratios_and_never_split_a_source():
    ids = [f"recording-{i}" for i in range(10_000)]
    drawn = [split_of(i, (0.92, 0.04, 0.04)) for i in ids]
    assert drawn == [split_of(i, (0.92, 0.04, 0.04)) for i in ids]  # the same every time
    counts = {split: drawn.count(split) for split in Split}
    assert 9000 <= counts[Split.TRAIN] <= 9400
    assert 300 <= counts[Split.VAL] <= 500
    assert 300 <= counts[Split.TEST] <= 500


def corrected_job(svc, tmp_path, samples, name, edits):  # noqa: F811
    job, *_ = run_pipeline(svc, tmp_path, samples=samples, name=name)
    use_cases.store_feedback(svc, svc.jobs.get_job(job.job_id), "key:k",
                             corrected_transcript=None, flagged=False, comment=None,
                             segment_edits=edits)
    return svc.jobs.get_job(job.job_id)


def with_settings(svc, **update):  # noqa: F811
    return dataclasses.replace(svc, settings=svc.settings.model_copy(update=update))


def test_corrections_become_clips_in_a_manifest_and_the_rest_is_counted(svc, tmp_path):  # noqa: F811
    svc.blobs.ensure_bucket(svc.settings.datasets_bucket)
    speech = decode(DEMO_SAMPLE, seconds=12.0)
    good = corrected_job(svc, tmp_path, speech, "good.flac", {0: WORDS, 1: "  "})
    silent = np.concatenate([speech[:8 * 16000], np.zeros(4 * 16000, np.float32)])
    quiet = corrected_job(svc, tmp_path, silent, "quiet.flac",
                          {len(use_cases.load_transcript(svc, good).segments) - 1: WORDS})
    gone = corrected_job(svc, tmp_path, speech, "gone.flac", {0: WORDS})
    bucket, key = gone.audio_uri.split("/", 1)
    svc.blobs.delete(bucket, key)  # the work bucket expired it

    record = datasets.build(svc)
    assert record.version == 1
    rows = [json.loads(line) for split in Split for line in svc.blobs.get(
        record.bucket, record.manifests[split]).decode().splitlines()]
    assert [(r["job_id"], r["segment"], r["text"]) for r in rows] == [(good.job_id, 0, WORDS)]
    (row,) = rows
    assert row["split"] == split_of(good.job_id, record.filters.ratios)
    assert row["snr_db"] > 10
    assert 0 < row["wer"] <= 1
    clip_key = row["audio"].removeprefix(f"gs://{record.bucket}/")
    with wave.open(io.BytesIO(svc.blobs.get(record.bucket, clip_key))) as clip:
        assert clip.getframerate() == 16000
        assert clip.getnframes() / 16000 == pytest.approx(row["duration_s"], abs=1e-3)
    assert record.rejected == {Rejection.EMPTY: 1, Rejection.NOISY: 1, Rejection.AUDIO_GONE: 1}
    assert quiet.job_id not in {r["job_id"] for r in rows}
    assert record.hours[row["split"]] == pytest.approx(row["duration_s"] / 3600, abs=1e-4)
    assert not record.ready  # far below 5 h
    assert svc.publisher.messages(svc.settings.topic_dataset_ready) == []
    assert svc.notes.list_datasets() == [record]

    # Past the threshold: the next version is ready and says so once.
    ready = datasets.build(with_settings(svc, dataset_ready_hours=0.0001))
    assert (ready.version, ready.ready) == (2, True)
    (message,) = svc.publisher.messages(svc.settings.topic_dataset_ready)
    event = messages.parse_dataset_ready(message.data)
    assert (event.version, event.manifests["train"]) == (2, "v2/train.jsonl")
    assert [r.version for r in svc.notes.list_datasets()] == [1, 2]


class Says(Transcriber):
    """A model that always hears `text`."""

    model_name = "says-fixed-words"

    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, samples, *, language=None, word_timestamps=None):
        return [Segment(start=0.0, end=len(samples) / 16_000, text=self.text)]


def test_a_model_is_scored_per_split_and_source_and_missing_clips_are_counted(
        svc, tmp_path):  # noqa: F811
    svc.blobs.ensure_bucket(svc.settings.datasets_bucket)
    speech = decode(DEMO_SAMPLE, seconds=12.0)
    job = corrected_job(svc, tmp_path, speech, "scored.flac", {0: WORDS})
    record = datasets.build(svc)
    (split,) = [s for s in Split if record.rows[s]]
    evaluation = evaluate(svc, Says("monday the third of november today started"),
                          record.version)
    assert evaluation.splits[split] == WerSummary(wer=1 / 8, errors=1, words=8, clips=1)
    assert evaluation.sources == {job.job_id: evaluation.splits[split]}
    assert all(evaluation.splits[s].clips == 0 for s in Split if s is not split)
    assert svc.notes.list_evaluations(dataset_version=record.version) == [evaluation]

    (row,) = rows_of(svc, record, split)
    svc.blobs.delete(record.bucket, row.audio.removeprefix(f"gs://{record.bucket}/"))
    again = evaluate(svc, Says(WORDS), record.version, splits=[split])
    assert (again.missing_clips, again.splits[split].clips) == (1, 0)
    with pytest.raises(NotFoundError, match=r"no dataset v9 \(built: v1\)"):
        evaluate(svc, Says(WORDS), 9)
