"""A soak on the native stack: 200 short jobs, random duplicate deliveries of every kind of
message, and a transcriber restart in the middle. Every job ends, nothing happens twice.

The wall time from the first drop to the last job ending is printed (`-s` shows it) and
written to `soak.json` under the stack's state directory.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from audiary.adapters.pubsub import ensure_push_subscription
from audiary.domain.jobs import TERMINAL, JobStatus, job_id_for
from audiary.local import provision
from audiary.local.stack import NativeStack
from audiary.ports import Stores
from tests.e2e.conftest import Tap, poll
from tests.fakes.chaos_push import ChaosPush
from tests.fakes.llm_server import FakeLlmServer
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.e2e

JOBS = 200
CLIP_S = 2.0


def clips(folder: Path) -> list[Path]:
    """JOBS different two-second pieces of the demo recording."""
    samples = decode(DEMO_SAMPLE)
    step = (len(samples) - CLIP_S * 16000) / JOBS
    return [encode(samples[int(i * step):int(i * step + CLIP_S * 16000)],
                   folder / f"soak-{i:03d}.flac") for i in range(JOBS)]


def test_200_jobs_with_duplicates_and_a_transcriber_restart_end_once_each(
    svc: Stores, stack: NativeStack, llm_server: FakeLlmServer, finished_tap: Tap,
    ready_tap: Tap, tmp_path: Path
):
    s = stack.settings
    files = clips(tmp_path)
    native = provision.native_endpoints(s)
    routes = provision.push_routes(s)
    host = stack.env["PUBSUB_EMULATOR_HOST"]
    transcriber = next(p for p in stack.processes if p.name == "transcriber")
    calls_before = len(llm_server.requests)
    with ChaosPush({r.subscription: native[r.subscription] for r in routes}, copies=2,
                   duplicate_probability=0.3, max_delay_s=0.5, seed=11) as chaos:
        try:
            for route in routes:
                ensure_push_subscription(s.project_id, route.subscription, route.topic,
                                         chaos.url(route.subscription), emulator_host=host)
            started = time.monotonic()
            jobs = []
            for path in files:
                info = svc.blobs.upload_file(s.uploads_bucket, f"inbox/{path.name}", path)
                jobs.append(job_id_for(info.bucket, info.key, info.generation))

            def ended() -> int:
                return sum(1 for j in jobs if (job := svc.jobs.get_job(j)) is not None
                           and job.status in TERMINAL)

            poll(ended, lambda n: n >= JOBS // 2, 900)
            transcriber.kill(signal.SIGTERM, group=False)  # scale-in, mid-soak
            assert transcriber.wait_exit(10) == 0
            transcriber.start().wait_ready(120)
            poll(ended, lambda n: n == JOBS, 900)
            wall_s = time.monotonic() - started
            chaos.settle()
        finally:
            for route in routes:
                ensure_push_subscription(s.project_id, route.subscription, route.topic,
                                         native[route.subscription], emulator_host=host)

    final = {j: svc.jobs.get_job(j) for j in jobs}
    statuses = Counter(job.status for job in final.values())
    assert sum(statuses.values()) == JOBS
    assert set(statuses) <= TERMINAL
    done = [j for j, job in final.items() if job.status is JobStatus.DONE]
    assert len(done) >= JOBS * 0.9, statuses  # a few pieces may be pauses (REJECTED silent)
    finished = poll(finished_tap.counts, lambda c: all(c[j] >= 1 for j in jobs), 120)
    assert {j: finished[j] for j in jobs} == dict.fromkeys(jobs, 1)
    ready = ready_tap.counts()
    assert {j: ready[j] for j in done} == dict.fromkeys(done, 1)
    assert all(final[j].summarize_attempts == 1 for j in done)
    # One model call per note at most (notes of equal transcripts come from the cache).
    assert len(llm_server.requests) - calls_before <= len(done)
    assert all(svc.notes.get_note(j) is not None for j in done)
    report = {"jobs": JOBS, "clip_s": CLIP_S, "wall_s": round(wall_s, 1),
              "statuses": {k.value: v for k, v in statuses.items()},
              "pushes_passed_on": dict(chaos.sent), "model_calls":
              len(llm_server.requests) - calls_before}
    (stack.state_dir / "soak.json").write_text(json.dumps(report, indent=2))
    print(f"soak: {JOBS} jobs in {wall_s:.1f} s; pushes passed on (copies included): "
          f"{sum(chaos.sent.values())}; {dict(statuses)}")
