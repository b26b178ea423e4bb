"""`throughput`: many small jobs at once, with windows of concurrent chunks sharing model calls
(`AUDIARY_BATCH_ACROSS_REQUESTS=true`, the default) against the same stack with it off.

Sixteen recordings of 30 to 90 s of the shared real speech (each its own seeded selection) are
dropped at once on the native stack; the time from the first drop to the last job TRANSCRIBED
is measured, once with batching across requests and once without, each on a stack of its own
with the same settings otherwise (the default model, `AUDIARY_TRANSCRIBER_CONCURRENCY` 4
requests at once, 2 decode workers). The two runs alternate `--repeats` times and the fastest of
each counts. Also reported: the mean windows and chunks per model call, from the transcriber's
/metrics.

Target: >= 1.5x on 2 cores.

    .venv/bin/python -m bench.throughput [--jobs 16] [--repeats 1] [--model base]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from audiary.entrypoints.cli.backends import LocalBackend
from audiary.evaluation.longform import build_longform, write_wav
from audiary.local.stack import NativeStack
from bench.results import print_results, write_result
from bench.stacks import bench_settings, stack_stores, wait_past

logger = logging.getLogger(__name__)

TARGET = 1.5


def batch_means(metrics_url: str) -> dict[str, float]:
    """Mean windows and requests per model call, from a Prometheus text page."""
    text = httpx.get(metrics_url, timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("audiary_decode_batch_") and name.endswith(("_sum", "_count")):
            values[name] = float(value)
    means = {}
    for what in ("windows", "requests"):
        count = values.get(f"audiary_decode_batch_{what}_count", 0.0)
        means[f"{what}_per_call"] = round(
            values.get(f"audiary_decode_batch_{what}_sum", 0.0) / count, 2) if count else 0.0
    means["model_calls"] = values.get("audiary_decode_batch_windows_count", 0.0)
    return means


def run(files: list[Path], state_dir: Path, model: str, across: bool) -> dict[str, Any]:
    settings = bench_settings(state_dir, model=model, batch_across_requests=across)
    with NativeStack(settings) as stack:
        svc = stack_stores(settings, stack)
        started = time.perf_counter()
        job_ids = [LocalBackend(svc).upload(path) for path in files]
        finished = wait_past(svc, job_ids, timeout_s=1800)
        wall_s = max(at for _, at in finished.values()) - started
        means = batch_means(f"http://{settings.host}:{settings.transcriber_port}/metrics")
    logger.info("batching across requests %s: %.1f s, %s", across, wall_s, means)
    return {"wall_s": round(wall_s, 2), **means}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default="base")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="audiary-bench-") as tmp:
        files, audio_s = [], 0.0
        for i in range(args.jobs):
            seconds = 30.0 + 60.0 * i / max(1, args.jobs - 1)
            samples = build_longform(seconds, seed=100 + i).samples[: int(seconds * 16000)]
            files.append(write_wav(Path(tmp) / f"short-{i:02d}.wav", samples))
            audio_s += len(samples) / 16000
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for repeat in range(args.repeats):
            for label, across in (("on", True), ("off", False)):
                runs[label].append(run(files, Path(tmp) / f"{label}-{repeat}", args.model,
                                       across))
    best = {label: min(r, key=lambda x: x["wall_s"]) for label, r in runs.items()}
    ratio = best["off"]["wall_s"] / best["on"]["wall_s"]
    write_result(
        "throughput",
        value=round(ratio, 3),
        unit="x faster with batching across requests",
        target=f">= {TARGET}x on 2 cores",
        details={
            "target_met": ratio >= TARGET,
            "jobs": args.jobs, "audio_s": round(audio_s, 1), "model": args.model,
            "cpu_count": os.cpu_count(),
            "on": best["on"], "off": best["off"],
            "runs_wall_s": {label: [r["wall_s"] for r in rs] for label, rs in runs.items()},
            "audio_hours_per_hour_on": round(audio_s / best["on"]["wall_s"], 1),
        },
    )
    print_results()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
