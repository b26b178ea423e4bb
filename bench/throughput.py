"""`throughput`: many small jobs at once, with windows of concurrent chunks sharing model calls
(`AUDIARY_BATCH_ACROSS_REQUESTS=true`, the default) against the same stack with it off.

Sixteen recordings of 30 to 90 s of the shared real speech (each its own seeded selection), on
a native stack with each setting (the default model, `AUDIARY_TRANSCRIBER_CONCURRENCY` 4
requests at once, 2 decode workers), two ways:

- end to end: all dropped at once; the first drop to the last job TRANSCRIBED;
- the transcriber alone: the same files ingested first (in this process, their chunk messages
  kept), then every chunk pushed to the transcriber at once, as Pub/Sub would with a backlog;
  the first push to the last answer. This is where chunks meet in the batcher: end to end,
  ingest (one process locally) hands them over one at a time.

The two settings alternate `--repeats` times and the fastest run of each counts. Also reported:
the mean windows and chunks per model call, from the transcriber's /metrics, and the ceiling:
in this process, with the stack's decode workers and threads, the same first-pass windows
decoded one per model call against all in shared calls (`batching_ceiling`). Batching across
requests can save no more than batching any windows saves, so a ceiling under the target
says the target is out of reach on this CPU whatever the batcher does.

Target: >= 1.5x on 2 cores.

    .venv/bin/python -m bench.throughput [--jobs 16] [--repeats 1] [--model base]
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from audiary.adapters.memory import MemoryPublisher
from audiary.adapters.whisper.engine import WhisperTranscriber
from audiary.evaluation.longform import build_longform, write_wav
from audiary.local.stack import NativeStack
from audiary.ports import Stores
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from audiary.wiring import stores
from bench.results import print_results, write_result
from bench.stacks import bench_settings, drop_all, stack_stores

logger = logging.getLogger(__name__)

TARGET = 1.5


def batch_totals(metrics_url: str) -> dict[str, float]:
    """The decode batch histograms' sums and counts, from the transcriber's /metrics."""
    values = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if ((name.startswith("audiary_decode_batch_") and name.endswith(("_sum", "_count")))
                or name == "audiary_decode_shared_windows_total"):
            values[name] = float(value)
    return values


def batch_means(metrics_url: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean windows and requests per model call (since the totals `since`, if given), and
    the totals now (`totals`, for the next call)."""
    now = batch_totals(metrics_url)
    before = (since or {}).get("totals", {})
    delta = {k: v - before.get(k, 0.0) for k, v in now.items()}
    means: dict[str, Any] = {}
    for what in ("windows", "requests"):
        count = delta.get(f"audiary_decode_batch_{what}_count", 0.0)
        means[f"{what}_per_call"] = round(
            delta.get(f"audiary_decode_batch_{what}_sum", 0.0) / count, 2) if count else 0.0
    means["model_calls"] = delta.get("audiary_decode_batch_windows_count", 0.0)
    means["windows_sharing_a_whisper_window"] = delta.get(
        "audiary_decode_shared_windows_total", 0.0)
    means["totals"] = now
    return means


def push_all(svc: Stores, settings: Settings, files: list[Path]) -> float:
    """Ingest `files` here (chunk messages kept in memory), then push every chunk to the
    transcriber at once; seconds from the first push to the last answer."""
    direct = svc.settings.model_copy(update={"inbox_prefix": "bench-direct/",
                                             "publisher_backend": "memory"})
    here = stores(direct)
    for path in files:
        info = here.blobs.upload_file(direct.uploads_bucket, f"bench-direct/{path.name}", path)
        ingest(here, ObjectEvent(info.bucket, info.key, info.generation, info.size,
                                 info.content_type))
    assert isinstance(here.publisher, MemoryPublisher)
    tasks = here.publisher.messages(direct.topic_transcribe_chunk)
    url = f"http://{settings.host}:{settings.transcriber_port}/"

    def push(i: int) -> int:
        message = tasks[i]
        body = {"message": {"data": base64.b64encode(message.data).decode(),
                            "attributes": dict(message.attributes), "messageId": f"bench-{i}"},
                "subscription": "bench"}
        return httpx.post(url, json=body, timeout=600).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(len(tasks)) as pool:
        answers = list(pool.map(push, range(len(tasks))))
    wall_s = time.perf_counter() - started
    if set(answers) != {204}:
        raise RuntimeError(f"the transcriber answered {sorted(set(answers))}")
    return wall_s


def batching_ceiling(jobs: list[NDArray[Any]], model: str, windows: int = 16
                     ) -> dict[str, Any]:
    """Seconds to decode the first `windows` planned windows of `jobs` (joined) one per model
    call, `decode_workers` calls at a time, against all of them at once (calls of up to
    `windows`, spread over the workers); `ceiling` = the ratio: the most batching saves here."""
    settings = Settings()
    engine = WhisperTranscriber(model, cpu_threads=settings.cpu_threads,
                                workers=settings.decode_workers, batch_size=windows,
                                batch_across_requests=False, cache_dir=settings.state_dir)
    samples = np.concatenate(jobs)
    planned = engine.plan(samples)[:windows]
    engine.decode_windows(samples, planned[:1], language="en")  # warm up

    def alone() -> None:
        with ThreadPoolExecutor(settings.decode_workers) as pool:
            list(pool.map(lambda w: engine.decode_windows(samples, [w], language="en"), planned))

    timings = {}
    for name, decode in (("alone", alone),
                         ("together", lambda: engine.decode_windows(samples, planned,
                                                                    language="en"))):
        started = time.perf_counter()
        decode()
        timings[name] = time.perf_counter() - started
    logger.info("batching ceiling: %d windows in %.1f s one per call, %.1f s together",
                len(planned), timings["alone"], timings["together"])
    return {"windows": len(planned), "workers": settings.decode_workers,
            "alone_s": round(timings["alone"], 2), "together_s": round(timings["together"], 2),
            "ceiling": round(timings["alone"] / timings["together"], 3)}


def run(files: list[Path], state_dir: Path, model: str, across: bool) -> dict[str, Any]:
    settings = bench_settings(state_dir, model=model, batch_across_requests=across)
    with NativeStack(settings) as stack:
        svc = stack_stores(settings, stack)
        metrics_url = f"http://{settings.host}:{settings.transcriber_port}/metrics"
        _, finished, wall_s = drop_all(svc, files, timeout_s=1800)
        end_to_end = batch_means(metrics_url)
        ingest_s = sorted(job.stage_seconds().get("RECEIVED", 0.0) for job, _ in finished.values())
        alone_s = push_all(svc, settings, files)
        alone = batch_means(metrics_url, since=end_to_end)
    logger.info("batching across requests %s: %.1f s end to end, %.1f s the transcriber "
                "alone, %s", across, wall_s, alone_s, alone)
    return {"end_to_end_s": round(wall_s, 2), "transcriber_alone_s": round(alone_s, 2),
            "ingest_s_median": round(ingest_s[len(ingest_s) // 2], 2),
            "end_to_end": end_to_end, "transcriber_alone": alone}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default="base")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="audiary-bench-") as tmp:
        files, jobs = [], []
        for i in range(args.jobs):
            seconds = 30.0 + 60.0 * i / max(1, args.jobs - 1)
            jobs.append(build_longform(seconds, seed=100 + i).samples[: int(seconds * 16000)])
            files.append(write_wav(Path(tmp) / f"short-{i:02d}.wav", jobs[-1]))
        audio_s = sum(len(samples) for samples in jobs) / 16000
        ceiling = batching_ceiling(jobs, args.model)
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for repeat in range(args.repeats):
            for label, across in (("on", True), ("off", False)):
                runs[label].append(run(files, Path(tmp) / f"{label}-{repeat}", args.model,
                                       across))
    best = {label: min(r, key=lambda x: x["transcriber_alone_s"]) for label, r in runs.items()}
    ratio = best["off"]["transcriber_alone_s"] / best["on"]["transcriber_alone_s"]
    end_to_end = best["off"]["end_to_end_s"] / best["on"]["end_to_end_s"]
    for result in best.values():
        for part in ("end_to_end", "transcriber_alone"):
            result[part].pop("totals", None)
    write_result(
        "throughput",
        value=round(ratio, 3),
        unit="x faster with batching across requests (the transcriber alone)",
        target=f">= {TARGET}x on 2 cores",
        details={
            "target_met": ratio >= TARGET,
            "jobs": args.jobs, "audio_s": round(audio_s, 1), "model": args.model,
            "merge_windows": Settings().batch_merge_windows,
            "cpu_count": os.cpu_count(),
            "end_to_end_ratio": round(end_to_end, 3),
            "batching_ceiling": ceiling,
            "on": best["on"], "off": best["off"],
            "runs_transcriber_alone_s": {label: [r["transcriber_alone_s"] for r in rs]
                                         for label, rs in runs.items()},
            "audio_hours_per_hour_transcriber_on": round(
                audio_s / best["on"]["transcriber_alone_s"], 1),
        },
    )
    logger.info("throughput: %.2fx with batching across requests (target %.1fx); batching "
                "saves at most %.2fx on this CPU", ratio, TARGET, ceiling["ceiling"])
    print_results()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
