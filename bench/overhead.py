"""`overhead`: drop → TRANSCRIBED on the native stack ÷ raw faster-whisper on the same file.

Both sides use the same model, device, compute type and beam size, measured in the same run;
the raw side runs with `AUDIARY_CPU_THREADS` as plain faster-whisper takes it (0: CTranslate2's
default) and with one thread, and the faster counts (on 2 cores one thread is the faster). The
stack is started first and its model loaded (its `/healthz` is green) so that the ratio is
about the pipeline — upload, notification, ingest, fan-out, range reads, fan-in, transcript —
not about process start-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from audiary.domain.jobs import Job, JobStatus
from audiary.entrypoints.cli.backends import LocalBackend
from audiary.evaluation.longform import build_longform, write_wav
from audiary.local.emulators import free_port
from audiary.local.stack import NativeStack
from audiary.settings import Settings
from audiary.wiring import stores
from bench.results import write_result

TARGET = 1.10


def raw_seconds(settings: Settings, path: Path, repeats: int, cpu_threads: int
                ) -> tuple[list[float], int]:
    """Plain `WhisperModel.transcribe` on the file, as its README shows; model load excluded.

    Repeated: with beam 1, faster-whisper falls back to sampling at higher temperatures when a
    window decodes badly, so single runs differ by up to 40 %.
    """
    from faster_whisper import WhisperModel

    from audiary.adapters.model_store import PACKAGED, packaged
    from audiary.adapters.whisper.engine import resolve_compute_type, resolve_device

    device = resolve_device(settings.device)
    location = settings.resolved_model_path()
    if location in PACKAGED:
        location = str(packaged(location, settings.state_dir))
    model = WhisperModel(
        location,
        device=device,
        compute_type=resolve_compute_type(settings.compute_type, device),
        cpu_threads=cpu_threads,
    )
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        segments, _ = model.transcribe(str(path), beam_size=settings.beam_size)
        count = len(list(segments))
        times.append(time.perf_counter() - start)
    return times, count


def pipeline_seconds(
    settings: Settings, path: Path, repeats: int
) -> tuple[list[float], dict[str, float], int]:
    """Drop → TRANSCRIBED wall time, once per repeat, each a new upload of the same file."""
    times: list[float] = []
    finished: Job | None = None
    with NativeStack(settings) as stack:
        svc = stores(settings.model_copy(update={
            "pubsub_emulator_host": stack.env["PUBSUB_EMULATOR_HOST"],
            "firestore_emulator_host": stack.env["FIRESTORE_EMULATOR_HOST"],
            "storage_emulator_host": stack.env["STORAGE_EMULATOR_HOST"],
        }))
        for _ in range(repeats):
            start = time.perf_counter()
            job_id = LocalBackend(svc).upload(path)
            while True:
                job = svc.jobs.get_job(job_id)
                if job is not None and job.status not in {
                    JobStatus.RECEIVED, JobStatus.QUEUED, JobStatus.TRANSCRIBING
                }:
                    break
                time.sleep(0.05)
            times.append(time.perf_counter() - start)
            if job is None:
                raise RuntimeError(f"benchmark job {job_id} disappeared")
            if job.status in {JobStatus.FAILED, JobStatus.REJECTED}:
                raise RuntimeError(f"benchmark job ended {job.status}: {job.error}")
            finished = job
    if finished is None:
        raise ValueError("repeats must be at least 1")
    return times, finished.stage_seconds(), finished.chunks_total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audiary-bench-") as tmp:
        longform = build_longform(args.minutes * 60, seed=3)
        path = write_wav(Path(tmp) / "overhead.wav", longform.samples)
        settings = Settings(
            state_dir=Path(tmp) / "stack",
            project_id="audiary-bench",
            pubsub_port=free_port(), firestore_port=free_port(), gcs_port=free_port(),
            ingest_port=free_port(), transcriber_port=free_port(),
        )
        raw_by_threads = {threads: raw_seconds(settings, path, args.repeats, threads)
                          for threads in sorted({settings.cpu_threads, 1})}
        walls, stages, chunks = pipeline_seconds(settings, path, args.repeats)
    threads, (raws, raw_segments) = min(raw_by_threads.items(),
                                        key=lambda item: statistics.median(item[1][0]))
    raw, wall = statistics.median(raws), statistics.median(walls)
    write_result(
        "overhead",
        value=round(wall / raw, 3),
        unit="x raw",
        target=f"<= {TARGET}",
        details={
            "audio_s": round(longform.samples.size / 16000, 1),
            "pipeline_wall_s": round(wall, 2),
            "raw_faster_whisper_s": round(raw, 2),
            "pipeline_runs_s": [round(t, 2) for t in walls],
            "raw_runs_s": [round(t, 2) for t in raws],
            "raw_threads": threads,
            "raw_median_s_by_threads": {
                str(n): round(statistics.median(times), 2)
                for n, (times, _) in raw_by_threads.items()},
            "target_met": wall / raw <= TARGET,
            "raw_segments": raw_segments,
            "chunks": chunks,
            "chunk_target_s": settings.chunk_target_s,
            "stage_s": {k: round(v, 2) for k, v in stages.items()},
            "model": settings.resolved_model_path(),
            "beam_size": settings.beam_size,
            "cpu_threads": settings.cpu_threads,
        },
    )


if __name__ == "__main__":
    main()
