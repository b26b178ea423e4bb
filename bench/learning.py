"""`learning`: one turn of the learning loop, and what each candidate buys.

On the in-memory adapters, the pipeline's own services do what the cloud does: the spoken
diaries (evaluation.diaries: eight speakers, names and places tiny.en gets wrong) are dropped,
ingested and transcribed by the packaged tiny.en; each transcript is corrected to what was
said; the dataset builder makes clips and splits by speaker; `learning.loop.run` makes the
vocabulary candidate and the fine-tuned one and gates each against the promoted model.

The real speech of ../shared/speech (none of it in the dataset) is the gate's guard set
(AUDIARY_PROMOTE_GUARD): a candidate that learned the names at the cost of ordinary speech is
refused. Reported, all measured in this run: WER on the dataset's test split and on the guard
set of the model served before the loop (the packaged tiny.en), of each candidate, and of the
model promoted after the loop (value: its test WER over the one before); training time per
audio hour on this machine. On paper (estimate, see
docs/capacity.md for the prices): the cost of the same run on the Cloud Run L4 training job.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from audiary.domain.audio import SAMPLE_RATE
from audiary.domain.datasets import Split
from audiary.domain.models import ModelRecord
from audiary.evaluation.diaries import ENTRIES, correct_in_memory
from audiary.evaluation.longform import speech_dir
from audiary.learning import loop
from audiary.services import datasets, models
from audiary.settings import Settings
from audiary.wiring import transcriber
from bench.results import write_result
from tests.fakes.stores import memory_stores

# Cloud Run list prices (docs/capacity.md): the training job is 1 L4 + 8 vCPU + 32 GiB.
L4_JOB_USD_PER_S = 0.0001867 + 8 * 0.000018 + 32 * 0.000002
# ESTIMATE: an L4 in float16 against these two CPU cores in float32, for a 39 M-parameter
# Whisper: ~120 TFLOPS of fp16 tensor throughput against well under 1 TFLOPS here, less what a
# model this small wastes of a GPU (small batches, feature extraction on the CPU): 30x.
L4_SPEEDUP_ESTIMATE = 30.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    state = Path(tempfile.mkdtemp(prefix="audiary-bench-learning-"))
    settings = Settings(
        model="tiny.en",  # the weak model the diaries' names defeat, whatever AUDIARY_MODEL says
        state_dir=state, blob_backend="memory", job_backend="memory", publisher_backend="memory",
        dataset_splits=(0.6, 0.0, 0.4), dataset_ready_hours=0.01, train_steps=args.steps,
        train_batch_size=4, train_grad_accum=1, train_learning_rate=1e-4,
        train_warmup_steps=2, promote_min_words=20,
        promote_guard=speech_dir() / "manifest.jsonl")
    svc = memory_stores(settings)
    correct_in_memory(svc, transcriber(settings, svc=svc), ENTRIES, state)
    dataset = datasets.build(svc)
    before = loop.baseline(svc)
    started = time.monotonic()
    outcomes = loop.run(svc, dataset, say=lambda line: print(line, flush=True))
    loop_s = time.monotonic() - started
    after = models.promoted(svc)
    assert after is not None
    records = {r.model_id: r for r in svc.notes.list_models()}
    version = dataset.version

    def row(record: ModelRecord) -> dict[str, object]:
        current = records[record.model_id]
        return {"model": current.model_id, "origin": current.origin.kind.value,
                "hotwords": current.hotwords, "state": current.state.value,
                "test_wer": current.wer_on(version, Split.TEST.value),
                "real_speech_wer": current.wer_on(loop.GUARD, loop.GUARD_SPLIT),
                "decision": current.decision}

    table = [row(before), *(row(o.candidate) for o in outcomes)]
    report = next(o.report for o in outcomes if o.report is not None)
    before_wer = records[before.model_id].wer_on(version, "test") or 0.0
    after_wer = records[after.model_id].wer_on(version, "test") or 0.0
    train_audio_h = dataset.hours[Split.TRAIN]
    seen_audio_h = report.audio_s / 3600
    write_result(
        "learning", round(after_wer / before_wer, 4), "x (test WER after / before)",
        "< 1 (the promoted model is better)", {
            "target_met": after_wer < before_wer,
            "dataset": {"version": version, "rows": {k.value: v for k, v in
                                                     dataset.rows.items()},
                        "hours": {k.value: v for k, v in dataset.hours.items()}},
            "promoted_before": before.model_id, "promoted_after": after.model_id,
            "test_wer_before": before_wer, "test_wer_after": after_wer,
            "models": table,
            "training": {
                "steps": report.steps, "clips": report.examples,
                "examples_per_step": settings.train_batch_size * settings.train_grad_accum,
                "seconds": round(report.seconds, 1), "device": report.device,
                "audio_hours_seen": round(seen_audio_h, 4),
                "train_split_hours": train_audio_h,
                "seconds_per_audio_hour_seen": round(report.seconds_per_audio_hour, 1),
                "loss_first": report.losses[0], "loss_last": report.losses[-1]},
            "loop_seconds": round(loop_s, 1),
            "l4_cost_estimate": {
                "usd_per_s": round(L4_JOB_USD_PER_S, 7),
                "assumed_speedup_over_this_cpu": L4_SPEEDUP_ESTIMATE,
                "usd_this_run": round(report.seconds / L4_SPEEDUP_ESTIMATE
                                      * L4_JOB_USD_PER_S, 5),
                "usd_per_audio_hour_seen": round(report.seconds_per_audio_hour
                                                 / L4_SPEEDUP_ESTIMATE * L4_JOB_USD_PER_S, 4),
                "note": "ESTIMATE: list prices; the L4's speed over this CPU is assumed"},
            "sample_rate": SAMPLE_RATE,
        })
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
