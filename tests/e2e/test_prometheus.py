"""Real Prometheus scraping the native stack: the values it stores are the job's.

Prometheus (Debian's `prometheus` package) is started on a free port with a configuration
made from the scrape targets the stack records in stack.json, under the job names the compose
profile uses; a short scrape interval keeps the polling short. Counters are shared with the
other e2e tests on the same stack, so every check compares with a value read before the job.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from audiary.domain.jobs import JobStatus, job_id_for
from audiary.entrypoints.cli.backends import LocalBackend
from audiary.local.emulators import ManagedProcess, free_port
from audiary.local.stack import NativeStack, prometheus_config, read_state
from tests.e2e.conftest import poll, wait_for_status
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.e2e

JOBS = {"transcriber", "ingest", "summarize", "api", "webhooks", "deadletters", "sweeper",
        "review", "learning", "watcher"}
STAGES = ("RECEIVED", "QUEUED", "TRANSCRIBING", "SUMMARIZING")


@pytest.fixture(scope="module")
def prometheus(stack: NativeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prometheus that scrapes every process of the stack each second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not on PATH: install Debian's prometheus package "
                    "(apt-get install prometheus); the test starts the binary itself")
    state = read_state(stack.state_dir)
    assert state is not None
    targets = state["metrics"]
    assert isinstance(targets, dict)
    assert set(targets) == JOBS
    home = tmp_path_factory.mktemp("prometheus")
    config = home / "prometheus.yml"
    config.write_text(prometheus_config(targets, scrape_interval_s=1))
    address = f"127.0.0.1:{free_port()}"
    server = ManagedProcess(
        name="prometheus",
        argv=[binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
              f"--web.listen-address={address}"],
        log_path=home / "prometheus.log",
        ready_url=f"http://{address}/-/ready",
    )
    with server.start():
        server.wait_ready(60)
        yield f"http://{address}"


def query(base: str, promql: str) -> list[dict[str, object]]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def value(base: str, promql: str) -> float:
    """The value of a query that gives one number (`sum(...)`); 0 while no series exists."""
    result = query(base, promql)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else 0.0  # type: ignore[index]


def by_label(base: str, promql: str, label: str) -> dict[str, float]:
    return {
        str(r["metric"][label]): float(r["value"][1])  # type: ignore[index]
        for r in query(base, promql)
    }


QUERIES = {
    "audio": "sum(audiary_audio_seconds_total)",
    "inference": "sum(audiary_inference_seconds_total)",
    "chunk_204": 'sum(audiary_http_requests_total{job="transcriber",route="/",method="POST",'
                 'status="204"})',
    "done": 'sum(audiary_jobs_finished_total{status="DONE"})',
    "tokens": 'sum(audiary_llm_tokens_total{provider="openai"})',
    **{f"stage_{s}": f'sum(audiary_job_stage_seconds_count{{stage="{s}"}})' for s in STAGES},
    **{f"lag_{service}": f'sum(audiary_queue_lag_seconds_count{{service="{service}"}})'
       for service in ("ingest", "transcriber", "summarize", "webhooks")},
}


def test_prometheus_scrapes_the_jobs_metrics(prometheus, svc, tmp_path):
    up = poll(lambda: by_label(prometheus, "up", "job"),
              lambda seen: set(seen) == JOBS and all(v == 1 for v in seen.values()), 60)
    assert up == dict.fromkeys(JOBS, 1.0)
    service_up = poll(lambda: by_label(prometheus, "audiary_service_up", "service"),
                      lambda seen: set(seen) >= JOBS, 30)
    assert all(service_up[job] == 1 for job in JOBS), service_up
    before = {name: value(prometheus, promql) for name, promql in QUERIES.items()}

    path = encode(decode(DEMO_SAMPLE, seconds=45.0), tmp_path / "scraped.flac")
    info = LocalBackend(svc).upload_object(path)  # as `audiary drop` does
    job_id = job_id_for(info.bucket, info.key, info.generation)
    job = wait_for_status(svc, job_id, {JobStatus.DONE, JobStatus.FAILED, JobStatus.REJECTED})
    assert job.status is JobStatus.DONE, job.error
    assert job.chunks_total >= 2

    def grown() -> dict[str, float]:
        return {name: value(prometheus, promql) - before[name]
                for name, promql in QUERIES.items()}

    # Scraped once a second: wait until the last hop (webhooks) has been scraped too, and the
    # last chunk's answer (it is counted once its handler returns, which can be after the job
    # has gone on to DONE: the handler still records that transcript-ready went out).
    delta = poll(grown, lambda d: d["lag_webhooks"] >= 1 and d["done"] >= 1
                 and d["audio"] >= job.duration_s * 0.99
                 and d["chunk_204"] >= job.chunks_total, 30)
    print(f"audio {delta['audio']:.2f} s (job {job.duration_s:.2f} s), inference "
          f"{delta['inference']:.2f} s, RTF {delta['inference'] / delta['audio']:.3f}, "
          f"{delta['chunk_204']:.0f} chunk pushes answered 204 for {job.chunks_total} chunks")
    assert delta["audio"] == pytest.approx(job.duration_s, rel=0.01)
    assert delta["inference"] > 0
    assert delta["chunk_204"] == job.chunks_total
    for stage in STAGES:
        assert delta[f"stage_{stage}"] >= 1, stage
    assert delta["lag_transcriber"] == job.chunks_total
    for service in ("ingest", "summarize", "webhooks"):
        assert delta[f"lag_{service}"] >= 1, service
    assert delta["done"] >= 1
    assert delta["tokens"] > 0  # the note came from the (fake) OpenAI server

    assert by_label(prometheus, "audiary_breaker_state", "provider") == {"openai": 0.0}
    dead_letters = by_label(prometheus, "audiary_dead_letter_messages", "subscription")
    assert set(dead_letters) == {f"{s}-dead-letter" for s in
                                 ("ingest", "transcriber", "summarize", "webhooks",
                                  "webhook-delivery")}
    in_state = poll(lambda: by_label(prometheus, "audiary_jobs_in_state", "status"),
                    lambda seen: seen.get("DONE", 0) >= 1, 30)
    assert set(in_state) == {s.value for s in JobStatus}
