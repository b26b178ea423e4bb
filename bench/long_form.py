"""`long_form`: WhisperTranscriber's windowed, batched decoding vs plain faster-whisper.

A >= 10-minute file is built from the shared real speech (utterances with varied silences).
In one run it measures WER and time of: sequential `WhisperModel.transcribe` on the whole file
(beam 5), with one thread as each of the strategy's workers has (`sequential`) and with a
thread per core (`sequential_all_cores`), the faster of the two being the baseline (on 2 cores
one thread is the faster: two cost more in handing work between them than they gain); the
same greedy (beam 1, for context); `BatchedInferencePipeline` (batch 8, its default VAD); each
utterance alone (the quality reference) and `WhisperTranscriber.transcribe`.

Targets: the strategy >= 2x faster than sequential, and its WER <= 1.2 x one-by-one WER.
Speed is wall time, the fastest of `--repeats` alternating runs of the two (the machine may be
shared); CPU time is reported too, since the strategy keeps more cores busy.

`--hour` measures accuracy at length instead: a 1-hour file built the same way, decoded whole
by the strategy twice (the two WERs must be identical) and as the pipeline does it, in ingest's
chunks (`plan_chunks`, 300 s) assembled into one transcript; against one by one (each distinct
utterance decoded once: the same audio gives the same text). Its target is the WER ratio.

`--busy N` measures on a busy machine: N other processes, each keeping one core busy with
arithmetic, run beside every method for the whole measurement and stop with it, so the two
decoders compete for the cores as they would beside other work on the host.

    .venv/bin/python -m bench.long_form --minutes 10 [--repeats 3] [--model base] [--busy 1]
    .venv/bin/python -m bench.long_form --hour [--model base]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.domain.audio import SAMPLE_RATE, frame_db
from audiary.domain.chunking import FRAME, plan_chunks
from audiary.domain.transcript import Segment, assemble
from audiary.evaluation.longform import LongForm, build_longform
from audiary.evaluation.wer import WerResult, wer
from audiary.settings import Settings
from bench.results import print_results, write_result

logger = logging.getLogger(__name__)

SPEEDUP_TARGET = 2.0
WER_RATIO_TARGET = 1.2


@dataclass(frozen=True)
class Measurement:
    """One method's quality and cost on the long-form file."""

    name: str
    wer: WerResult
    wall_s: float  # the fastest of `runs_wall_s`
    cpu_s: float  # of that run
    runs_wall_s: tuple[float, ...]
    identical: bool = True  # every run gave the same text

    def as_dict(self, baseline_wall_s: float) -> dict[str, Any]:
        return {
            "wer": round(self.wer.wer, 4),
            "errors": self.wer.errors,
            "words": self.wer.words,
            "substitutions": self.wer.substitutions,
            "deletions": self.wer.deletions,
            "insertions": self.wer.insertions,
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "runs_wall_s": [round(t, 2) for t in self.runs_wall_s],
            "speedup_vs_sequential": round(baseline_wall_s / self.wall_s, 3),
        }


def _spin(stop: Any) -> None:
    """Keep one core busy until `stop` is set (the load of `--busy`)."""
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x = (x + i * i) % 1_000_003


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` other processes each keep a core busy while the block runs."""
    if processes <= 0:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [context.Process(target=_spin, args=(stop,), daemon=True)
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()


def _timed(fn: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    texts = fn()
    return texts, time.perf_counter() - wall, time.process_time() - cpu


def _text(segments: list[Segment]) -> str:
    return " ".join(s.text for s in segments)


def measure(
    transcriber: WhisperTranscriber, longform: LongForm, language: str, repeats: int = 1,
    wide: WhisperTranscriber | None = None,
) -> list[Measurement]:
    """Run every method on `longform`; those compared for speed `repeats` times each.

    Those repeats alternate, and the fastest run of each counts, so that a burst of load from
    other processes does not decide the ratio. WER is from the first run. `wide`, the same
    model on a thread per core, runs sequential decoding as `sequential_all_cores`.
    """
    from faster_whisper import BatchedInferencePipeline

    samples = longform.samples
    # One batched call at a time: it runs best with every core's thread, as `wide` has.
    batched = BatchedInferencePipeline((wide or transcriber).model)

    def sequential(beam_size: int, engine: WhisperTranscriber = transcriber
                   ) -> Callable[[], list[str]]:
        def run() -> list[str]:
            segments = engine.transcribe_sequential(
                samples, language=language, beam_size=beam_size
            )
            return [_text(segments)]

        return run

    def batched_vad() -> list[str]:
        segments, _ = batched.transcribe(samples, language=language, batch_size=8)
        return [" ".join(s.text for s in segments)]

    def one_by_one() -> list[str]:
        return one_by_one_texts(transcriber, longform, language)

    def strategy() -> list[str]:
        return [_text(transcriber.transcribe(samples, language=language))]

    methods: list[tuple[str, Callable[[], list[str]]]] = [
        ("sequential", sequential(5)),
        *([("sequential_all_cores", sequential(5, wide))] if wide else []),
        ("sequential_greedy", sequential(1)),
        ("batched_vad", batched_vad),
        ("one_by_one", one_by_one),
        ("strategy", strategy),
    ]
    repeated = {"sequential", "sequential_all_cores", "strategy"}
    order = [name for name, _ in methods if name not in repeated]
    order += [name for _ in range(repeats) for name, _ in methods if name in repeated]
    functions = dict(methods)
    runs: dict[str, list[tuple[list[str], float, float]]] = {name: [] for name, _ in methods}
    for name in order:
        runs[name].append(_timed(functions[name]))
        logger.info("%s: %.1f s", name, runs[name][-1][1])
    results = []
    for name, _ in methods:
        texts = runs[name][0][0]
        _, wall_s, cpu_s = min(runs[name], key=lambda run: run[1])
        references = (
            [span.text for span in longform.utterances]
            if name == "one_by_one"
            else [longform.reference]
        )
        result = Measurement(
            name, wer(references, texts), wall_s, cpu_s, tuple(run[1] for run in runs[name]),
            identical=all(run[0] == texts for run in runs[name]),
        )
        logger.info("%s: WER %.3f, fastest %.1f s", name, result.wer.wer, wall_s)
        results.append(result)
    return results


def one_by_one_texts(transcriber: WhisperTranscriber, longform: LongForm, language: str,
                     ) -> list[str]:
    """Each utterance decoded alone (sequential faster-whisper, beam 5); an utterance that
    comes again is the same audio, so its text is decoded once."""
    heard: dict[str, str] = {}
    for span in longform.utterances:
        if span.utt_id not in heard:
            piece = longform.samples[round(span.start_s * SAMPLE_RATE):
                                     round(span.end_s * SAMPLE_RATE)]
            heard[span.utt_id] = _text(transcriber.transcribe_sequential(piece,
                                                                         language=language))
    return [heard[span.utt_id] for span in longform.utterances]


def in_chunks(transcriber: WhisperTranscriber, samples: Any, language: str, *,
              target_s: float, search_s: float) -> tuple[str, int]:
    """The transcript as the pipeline makes it: ingest's chunks, each decoded alone, joined
    (text, chunks)."""
    spans = plan_chunks(frame_db(samples, FRAME), len(samples), target_s=target_s,
                        search_s=search_s)
    parts = [(span.start_sample / SAMPLE_RATE,
              transcriber.transcribe(samples[span.start_sample:span.end_sample],
                                     language=language)) for span in spans]
    return assemble("bench", parts).text, len(spans)


def measure_hour(transcriber: WhisperTranscriber, longform: LongForm, language: str,
                 settings: Settings) -> tuple[list[Measurement], int]:
    """Strategy twice on the whole file, in the pipeline's chunks once, one by one once."""
    samples = longform.samples
    runs: list[tuple[str, Callable[[], list[str]]]] = [
        ("strategy", lambda: [_text(transcriber.transcribe(samples, language=language))]),
        ("strategy_again", lambda: [_text(transcriber.transcribe(samples, language=language))]),
        ("in_chunks", lambda: [in_chunks(transcriber, samples, language,
                                         target_s=settings.chunk_target_s,
                                         search_s=settings.chunk_search_s)[0]]),
        ("one_by_one", lambda: one_by_one_texts(transcriber, longform, language)),
    ]
    results = []
    for name, run in runs:
        texts, wall_s, cpu_s = _timed(run)
        references = ([span.text for span in longform.utterances] if name == "one_by_one"
                      else [longform.reference])
        results.append(Measurement(name, wer(references, texts), wall_s, cpu_s, (wall_s,)))
        logger.info("%s: WER %.4f in %.1f s", name, results[-1].wer.wer, wall_s)
    chunks = len(plan_chunks(frame_db(samples, FRAME), len(samples),
                             target_s=settings.chunk_target_s, search_s=settings.chunk_search_s))
    return results, chunks


def _table(measurements: list[Measurement], baseline_wall_s: float, title: str) -> Table:
    table = Table(title=title)
    for column in ("method", "WER", "S/D/I", "wall s", "cpu s", "speedup", "all runs s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for m in measurements:
        table.add_row(
            m.name,
            f"{m.wer.wer:.1%}",
            f"{m.wer.substitutions}/{m.wer.deletions}/{m.wer.insertions}",
            f"{m.wall_s:.1f}",
            f"{m.cpu_s:.1f}",
            f"{baseline_wall_s / m.wall_s:.2f}x",
            " ".join(f"{t:.1f}" for t in m.runs_wall_s),
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="threads per decode worker (0: the cores shared out among them)")
    parser.add_argument("--beam-size", type=int, default=1, help="the strategy's beam")
    parser.add_argument("--batch-size", type=int, default=16, help="the strategy's batch")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of sequential and strategy (fastest counts)"
    )
    parser.add_argument("--name", default=None,
                        help="result file name (default: long_form[_hour][_<model>][_busy<N>])")
    parser.add_argument("--model", default="tiny.en", help="packaged name, hub name or path")
    parser.add_argument("--hour", action="store_true", help="the 1-hour accuracy case")
    parser.add_argument("--busy", type=int, default=0,
                        help="other processes keeping a core busy each during the measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    settings = Settings()
    name = args.name or "_".join(
        ["long_form", *(["hour"] if args.hour else []),
         *([] if args.model == "tiny.en" else [args.model.replace(".", "_")]),
         *([f"busy{args.busy}"] if args.busy else [])])
    longform = build_longform(3600.0 if args.hour else args.minutes * 60, seed=args.seed)
    transcriber = WhisperTranscriber(
        args.model,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=args.cpu_threads,
        beam_size=args.beam_size,
        batch_size=args.batch_size,
    )
    language = "en"
    warm_up = longform.samples[: 20 * SAMPLE_RATE]
    transcriber.transcribe(warm_up, language=language)
    transcriber.transcribe_sequential(warm_up, language=language)

    if args.hour:
        return _report_hour(name, transcriber, longform, language, settings, args)
    wide = None
    if (os.cpu_count() or 1) != transcriber.cpu_threads:
        wide = WhisperTranscriber(args.model, device=settings.device,
                                  compute_type=settings.compute_type,
                                  cpu_threads=os.cpu_count() or 1, workers=1)
        wide.transcribe_sequential(warm_up, language=language)
    load_before = os.getloadavg()
    with busy(args.busy):
        measurements = measure(transcriber, longform, language, args.repeats, wide)
        load_after = os.getloadavg()

    by_name = {m.name: m for m in measurements}
    baseline = min((by_name[n] for n in ("sequential", "sequential_all_cores") if n in by_name),
                   key=lambda m: m.wall_s)
    reference, ours = by_name["one_by_one"], by_name["strategy"]
    speedup = baseline.wall_s / ours.wall_s
    wer_ratio = ours.wer.wer / reference.wer.wer if reference.wer.wer else float("inf")
    speed_met, wer_met = speedup >= SPEEDUP_TARGET, wer_ratio <= WER_RATIO_TARGET
    console = Console()
    console.print(f"the strategy's {args.repeats} runs gave the same text: {ours.identical}")
    console.print(
        _table(
            measurements,
            baseline.wall_s,
            f"long_form: {longform.duration_s / 60:.1f} min, {len(longform.utterances)} "
            f"utterances, {args.model} "
            f"{transcriber.compute_type} on {transcriber.device}, "
            f"{transcriber.cpu_threads} threads per worker"
            + (f", {args.busy} busy processes beside" if args.busy else ""),
        )
    )
    console.print(
        f"speedup {speedup:.2f}x (target >= {SPEEDUP_TARGET}x): {'met' if speed_met else 'NOT met'}"
        f"; WER ratio {wer_ratio:.2f} (target <= {WER_RATIO_TARGET}): "
        f"{'met' if wer_met else 'NOT met'}"
    )
    write_result(
        name,
        value=round(speedup, 3),
        unit="x faster than sequential",
        target=f">= {SPEEDUP_TARGET}x and WER <= {WER_RATIO_TARGET} x one-by-one WER",
        details={
            "target_met": speed_met and wer_met,
            "speedup_met": speed_met,
            "wer_met": wer_met,
            "wer_ratio_vs_one_by_one": round(wer_ratio, 3),
            "strategy_runs_identical": ours.identical,
            "audio_s": round(longform.duration_s, 1),
            "utterances": len(longform.utterances),
            "reference_words": reference.wer.words,
            "seed": args.seed,
            "repeats": args.repeats,
            "baseline": baseline.name,
            "busy_processes": args.busy,
            "model": transcriber.model_name,
            "device": transcriber.device,
            "compute_type": transcriber.compute_type,
            "cpu_threads": transcriber.cpu_threads,
            "cpu_count": os.cpu_count(),
            "strategy": {
                "beam_size": transcriber.beam_size,
                "batch_size": transcriber.batch_size,
                "max_window_s": transcriber.max_window_s,
                "min_pause_s": transcriber.min_pause_s,
                "pad_s": transcriber.pad_s,
                "normalize": transcriber.normalize,
                "retries": transcriber.retries,
                "first_pass_windows": len(transcriber.plan(longform.samples)),
            },
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "methods": {m.name: m.as_dict(baseline.wall_s) for m in measurements},
        },
    )
    print_results(console=console)
    return 0


def _report_hour(name: str, transcriber: WhisperTranscriber, longform: LongForm, language: str,
                 settings: Settings, args: argparse.Namespace) -> int:
    measurements, chunks = measure_hour(transcriber, longform, language, settings)
    by_name = {m.name: m for m in measurements}
    reference = by_name["one_by_one"]
    ratios = {m.name: m.wer.wer / reference.wer.wer for m in measurements
              if m.name != "one_by_one"}
    worst = max(ratios.values())
    met = worst <= WER_RATIO_TARGET
    identical = by_name["strategy"].wer.errors == by_name["strategy_again"].wer.errors
    console = Console()
    console.print(_table(measurements, by_name["strategy"].wall_s,
                         f"long_form hour: {longform.duration_s / 60:.1f} min, "
                         f"{len(longform.utterances)} utterances, {args.model}, {chunks} chunks"))
    write_result(
        name,
        value=round(worst, 3),
        unit="x one-by-one WER (worst of whole and in chunks)",
        target=f"<= {WER_RATIO_TARGET}, identical WER on both runs",
        details={
            "target_met": met and identical,
            "identical_runs": identical,
            "wer_ratio_vs_one_by_one": {k: round(v, 3) for k, v in ratios.items()},
            "audio_s": round(longform.duration_s, 1),
            "utterances": len(longform.utterances),
            "reference_words": reference.wer.words,
            "chunks": chunks,
            "chunk_target_s": settings.chunk_target_s,
            "model": transcriber.model_name,
            "device": transcriber.device,
            "compute_type": transcriber.compute_type,
            "cpu_threads": transcriber.cpu_threads,
            "realtime_factor": round(by_name["strategy"].wall_s / longform.duration_s, 4),
            "methods": {m.name: {k: v for k, v in m.as_dict(1.0).items()
                                 if k != "speedup_vs_sequential"} for m in measurements},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
