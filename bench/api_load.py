"""`api_load`: a bounded load on 127.0.0.1 against the API function as it runs in production
(functions-framework + gunicorn) on the real Firestore and GCS emulators: `GET /v1/jobs/{id}`
at a fixed rate for a fixed time, reporting latency percentiles and errors (target: 0 errors)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from audiary.domain.jobs import Job, SourceObject
from audiary.domain.keys import ApiKey, new_key
from audiary.local.emulators import (
    ManagedProcess,
    free_port,
    start_firestore_emulator,
    start_gcs_emulator,
    start_pubsub_emulator,
)
from audiary.local.stack import project_dir
from audiary.settings import Settings
from audiary.wiring import stores
from bench.results import write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audiary-api-load-") as tmp:
        state = Path(tmp)
        emulators = [start_pubsub_emulator(state, wait=False),
                     start_firestore_emulator(state, wait=False),
                     start_gcs_emulator(state, wait=False)]
        try:
            env: dict[str, str] = {"GOOGLE_CLOUD_PROJECT": "audiary-bench"}
            for emulator in emulators:
                emulator.wait_ready()
                env.update(emulator.env)
            settings = Settings(
                project_id="audiary-bench", pubsub_emulator_host=env["PUBSUB_EMULATOR_HOST"],
                firestore_emulator_host=env["FIRESTORE_EMULATOR_HOST"],
                storage_emulator_host=env["STORAGE_EMULATOR_HOST"],
            )
            svc = stores(settings)
            full, key_id, digest = new_key()
            svc.keys.put_key(ApiKey(key_id=key_id, name="bench", secret_hash=digest,
                                    created_at=datetime.now(UTC)))
            job, _ = svc.jobs.create_job(Job(
                job_id="bench-job", owner=f"key:{key_id}",
                source=SourceObject(bucket="b", name="inbox/bench.wav", generation="1")))
            port = free_port()
            api = ManagedProcess(
                name="api",
                argv=[str(Path(sys.executable).parent / "functions-framework"),
                      "--target", "api",
                      "--source", str(project_dir(settings) / "functions/api/main.py"),
                      "--host", "127.0.0.1", "--port", str(port)],
                log_path=state / "api.log", ready_url=f"http://127.0.0.1:{port}/healthz",
                env={**env, "AUDIARY_API_RATE_PER_S": "100000", "AUDIARY_API_BURST": "100000"},
            )
            with api.start():
                api.wait_ready(60)
                # The first requests build the app and its Firestore client (a cold start).
                run_load(f"http://127.0.0.1:{port}/v1/jobs/{job.job_id}", full, 10, 1)
                latencies, errors = run_load(f"http://127.0.0.1:{port}/v1/jobs/{job.job_id}",
                                             full, args.rate, args.seconds)
        finally:
            for emulator in emulators:
                emulator.stop()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    write_result("api_load", value=errors, unit="errors", target="0 errors", details={
        "requests": len(ordered) + errors, "rate_per_s": args.rate, "seconds": args.seconds,
        "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "max_ms": round(ordered[-1] * 1000, 2),
        "server": "functions-framework (gunicorn) + Firestore emulator, 127.0.0.1",
        "target_met": errors == 0,
    })


def run_load(url: str, key: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Send requests at a fixed rate (open loop) for `seconds`; (latencies of 200s, errors)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    client = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            ok = client.get(url).status_code == 200
        except httpx.HTTPError:
            ok = False
        with lock:
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    total = int(rate * seconds)
    begin = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        for i in range(total):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
    client.close()
    return latencies, errors


if __name__ == "__main__":
    main()
