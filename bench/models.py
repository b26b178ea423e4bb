"""`models`: which model to run. Long-form real speech through the pipeline's decoder for each
model that can be loaded here: WER, real-time factor and peak memory, one table.

The file is the long-form set of bench/long_form.py (10 minutes of the shared real speech with
varied silences, seed 0), decoded by `WhisperTranscriber.transcribe` with the settings' decoding
options (beam 1, batches of 16 windows, 2 workers of one thread each on 2 cores), int8 on the
CPU. Each model runs in a process of its own, so that its peak resident memory is its own.
Decoding is deterministic: the WER column is the same on every run; the real-time factor is
wall time over audio time.

Models that cannot be loaded here are listed with the reason (small: its packages are cut
short, see audiary.adapters.model_store; hub names: no network).

    .venv/bin/python -m bench.models [--minutes 10] [--models tiny.en,base,small,large-v3-turbo]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from rich.console import Console
from rich.table import Table

from audiary.evaluation.longform import build_longform
from audiary.evaluation.wer import wer
from bench.results import print_results, write_result

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("tiny.en", "base", "small", "large-v3-turbo")


def measure_model(name: str, minutes: float, seed: int) -> dict[str, Any]:
    """One model on the long-form file, in this (child) process."""
    from audiary.adapters.whisper.engine import WhisperTranscriber
    from audiary.errors import ConfigError

    longform = build_longform(minutes * 60, seed=seed)
    try:
        started = time.perf_counter()
        engine = WhisperTranscriber(name, device="cpu")
        load_s = time.perf_counter() - started
    except (ConfigError, OSError, RuntimeError, ValueError) as exc:  # not loadable here
        return {"model": name, "available": False,
                "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    language = "en"
    engine.transcribe(longform.samples[: 20 * 16000], language=language)  # warm up
    wall, cpu = time.perf_counter(), time.process_time()
    text = " ".join(s.text for s in engine.transcribe(longform.samples, language=language))
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    result = wer([longform.reference], [text])
    return {
        "model": name, "available": True, "multilingual": engine.multilingual,
        "wer": round(result.wer, 4), "errors": result.errors, "words": result.words,
        "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2),
        "realtime_factor": round(wall_s / longform.duration_s, 4),
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "audio_s": round(longform.duration_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(measure_model, name, args.minutes, args.seed).result())
        logger.info("%s: %s", name, rows[-1])
    table = Table(title=f"models: {args.minutes:g} min of long-form real speech, CPU int8, "
                        f"{os.cpu_count()} cores")
    for column in ("model", "WER", "real-time factor", "peak RSS MB", "languages"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        if not row["available"]:
            table.add_row(row["model"], "-", "-", "-", row["reason"][:60])
            continue
        table.add_row(row["model"], f"{row['wer']:.1%}", f"{row['realtime_factor']:.3f}",
                      f"{row['peak_rss_mb']:.0f}", "99" if row["multilingual"] else "English")
    Console().print(table)
    measured = {r["model"]: r for r in rows if r["available"]}
    tiny, base = measured.get("tiny.en"), measured.get("base")
    write_result(
        "models",
        value=round(base["wer"] / tiny["wer"], 3) if tiny and base else float("nan"),
        unit="base WER / tiny.en WER",
        target="< 1 (the default model is the more accurate)",
        details={"target_met": bool(tiny and base and base["wer"] < tiny["wer"]),
                 "cpu_count": os.cpu_count(), "minutes": args.minutes, "seed": args.seed,
                 "models": rows},
    )
    print_results()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
