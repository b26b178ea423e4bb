"""`control_plane`: what the orchestration costs per chunk, with inference taken out.

The native stack on the emulators with the null engine behind the `Transcriber` port
(`AUDIARY_ENGINE=null`: no words, at once). Ten 104 s recordings are dropped at once; ingest
cuts each into 1 s chunks (1,000 chunk messages in all), the transcriber records each chunk,
the last one of a job assembles the transcript and announces it. Measured:

- per chunk, from the chunk records: handling (the delivery's start to its result stored:
  the job read, the attempt count, the audio read, the result transaction) and latency (the
  job's fan-out to its chunk's result, queueing included); median and p99;
- amortized: drop of the first file to the last transcript, over the number of chunks;
- nothing lost, nothing done twice: every chunk DONE and counted once, each chunk message
  published once, each job's transcript announced once (pull subscriptions of the bench's own
  on both topics), and how many chunks Pub/Sub delivered more than once.

Target: median handling <= 20 ms per chunk, 0 lost, 0 duplicated.

    .venv/bin/python -m bench.control_plane [--jobs 10] [--seconds 104]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from audiary.domain.jobs import ChunkStatus, JobStatus
from audiary.evaluation.longform import build_longform, write_wav
from audiary.local.stack import NativeStack
from audiary.local.taps import TopicTap
from bench.results import print_results, write_result
from bench.stacks import bench_settings, drop_all, stack_stores

logger = logging.getLogger(__name__)

TARGET_MS = 20.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=104.0, help="length of each file")
    parser.add_argument("--chunk-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="audiary-bench-") as tmp:
        audio = build_longform(args.seconds).samples[: int(args.seconds * 16000)]
        files = [write_wav(Path(tmp) / f"control-{i}.wav", audio) for i in range(args.jobs)]
        settings = bench_settings(Path(tmp) / "stack", engine="null",
                                  chunk_target_s=args.chunk_s, chunk_search_s=args.chunk_s / 5)
        with NativeStack(settings) as stack:
            svc = stack_stores(settings, stack)
            host = stack.env["PUBSUB_EMULATOR_HOST"]
            chunk_tap, ready_tap = (
                TopicTap(settings.project_id, host, f"bench-tap-{topic}", topic)
                for topic in (settings.topic_transcribe_chunk, settings.topic_transcript_ready))
            job_ids, finished, wall_s = drop_all(svc, files, timeout_s=900)
            handling, latency, redelivered, lost, counted = [], [], 0, 0, 0
            for job_id in job_ids:
                job = svc.jobs.get_job(job_id)
                assert job is not None
                queued = job.timestamps[JobStatus.QUEUED.value]
                chunks = svc.jobs.get_chunks(job_id)
                counted += job.chunks_done - job.chunks_total  # > 0: a chunk counted twice
                for chunk in chunks:
                    if chunk.status is not ChunkStatus.DONE or chunk.completed_at is None:
                        lost += 1
                        continue
                    assert chunk.started_at is not None
                    handling.append((chunk.completed_at - chunk.started_at).total_seconds() * 1e3)
                    latency.append((chunk.completed_at - queued).total_seconds() * 1e3)
                    redelivered += chunk.attempts > 1
            # Announcements made once: wait until every job's is in, then count.
            deadline = time.monotonic() + 60
            while (set(job_ids) - set(ready_tap.counts())) and time.monotonic() < deadline:
                time.sleep(0.2)
            published = chunk_tap.counts()
            announced = ready_tap.counts()
            total = sum(job.chunks_total for job, _ in finished.values())
            duplicated = (sum(max(0, published[j] - finished[j][0].chunks_total) for j in job_ids)
                          + sum(max(0, announced[j] - 1) for j in job_ids) + counted)
            lost += sum(1 for j in job_ids if announced[j] == 0)
    median = statistics.median(handling)
    met = median <= TARGET_MS and lost == 0 and duplicated == 0
    logger.info("%d chunks in %.1f s; handling median %.1f ms", total, wall_s, median)
    write_result(
        "control_plane",
        value=round(median, 1),
        unit="ms median handling per chunk (null engine)",
        target=f"<= {TARGET_MS:g} ms, 0 lost, 0 duplicated",
        details={
            "target_met": met,
            "jobs": args.jobs, "chunks": total, "chunk_target_s": args.chunk_s,
            "lost": lost, "duplicated": duplicated, "delivered_more_than_once": redelivered,
            "handling_ms": {"median": round(median, 1), "p99": round(percentile(handling, 99), 1),
                            "max": round(max(handling), 1)},
            "latency_ms": {"median": round(statistics.median(latency), 1),
                           "p99": round(percentile(latency, 99), 1)},
            "amortized_ms_per_chunk": round(wall_s * 1e3 / total, 1),
            "wall_s": round(wall_s, 2),
            "transcriber_concurrency": settings.transcriber_concurrency,
        },
    )
    print_results()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
