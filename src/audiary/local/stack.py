"""The native local stack: real emulators and the real entry points as local processes.

`up()` starts, in order: the Pub/Sub, Firestore and GCS emulators (in parallel), the
buckets, topics, push subscriptions and dead-letter topics (each read by `deadletters`), the
`ingest`, `summarize`, `webhooks`, `api`, `deadletters`, `sweeper` and `review` functions
under functions-framework, the transcriber under gunicorn, the bucket watcher, and the
scheduler that calls the sweeper and the review sync on timers.
It returns once every piece answers. State (logs, the watcher's memory, `stack.json` with
process ids and the variables that point clients at the emulators) lives under
`settings.state_dir`; "metrics" in `stack.json` lists the Prometheus scrape target of each
process, by the job names the compose profile's Prometheus uses (`prometheus_config` writes a
configuration for them).

`make up` / `make down` run `audiary stack up` / `audiary stack down`, which leave the
processes running between the two commands; tests use `NativeStack` as a context manager.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pydantic import SecretStr

from audiary import names
from audiary.local import provision
from audiary.local.emulators import (
    Emulator,
    EmulatorError,
    ManagedProcess,
    start_firestore_emulator,
    start_gcs_emulator,
    start_pubsub_emulator,
)
from audiary.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"
# How the transcriber is served, here and in containers/transcriber/Dockerfile (a test keeps
# the two in step): workers, threads, timeouts and the SIGTERM drain are in gunicorn_conf.
TRANSCRIBER_APP = "main:create_app()"
TRANSCRIBER_GUNICORN_ARGS = ("--config", "python:audiary.entrypoints.transcriber.gunicorn_conf")
PUSH_SUBSCRIPTIONS = (
    names.SUBSCRIPTION_INGEST,
    names.SUBSCRIPTION_TRANSCRIBER,
    names.SUBSCRIPTION_SUMMARIZE,
    names.SUBSCRIPTION_WEBHOOKS,
    names.SUBSCRIPTION_WEBHOOK_DELIVERY,
)
#: Pull subscriptions that keep each push subscription's dead letters (same name as the topic).
DEAD_LETTER_SUBSCRIPTIONS = tuple(names.dead_letter_topic(s) for s in PUSH_SUBSCRIPTIONS)
METRICS_PATH = "/metrics"


@dataclass
class NativeStack:
    settings: Settings
    emulators: list[Emulator] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    @property
    def env(self) -> dict[str, str]:
        """Variables that point a client (the CLI, a test) at this stack."""
        s = self.settings
        env = {"GOOGLE_CLOUD_PROJECT": s.project_id}
        for emulator in self.emulators:
            env.update(emulator.env)
        return env

    @property
    def metrics_targets(self) -> dict[str, str]:
        """Prometheus scrape targets (`host:port`, path `/metrics`) by job name: the
        transcriber and the api on their own ports, the others on their metrics ports."""
        s = self.settings
        ports = {
            "transcriber": s.transcriber_port,
            "ingest": s.ingest_metrics_port,
            "summarize": s.summarize_metrics_port,
            "api": s.api_port,
            "webhooks": s.webhooks_metrics_port,
            "deadletters": s.deadletters_metrics_port,
            "sweeper": s.sweeper_metrics_port,
            "review": s.review_metrics_port,
            "learning": s.learning_metrics_port,
            "watcher": s.watcher_metrics_port,
        }
        return {name: f"{s.host}:{port}" for name, port in ports.items()}

    @property
    def urls(self) -> dict[str, str]:
        """Where a user reaches the stack: the API, the transcriber's OpenAI-compatible base
        URL and each process's metrics."""
        s = self.settings
        return {
            "web page": f"http://{s.host}:{s.api_port}/",
            "api": f"http://{s.host}:{s.api_port}/v1",
            "openai base URL": f"http://{s.host}:{s.transcriber_port}/v1",
            **{f"metrics {job}": f"http://{target}{METRICS_PATH}"
               for job, target in self.metrics_targets.items()},
        }

    def _service_env(self) -> dict[str, str]:
        # Children see exactly the settings of this stack, plus the emulator variables; the
        # metrics port is each process's own (see _start_services).
        env = {
            **settings_env(self.settings),
            **self.env,
            "AUDIARY_STATE_DIR": str(self.state_dir),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("AUDIARY_METRICS_PORT", None)
        return env

    def up(self, timeout_s: float = 120.0) -> Self:
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.emulators = [
                start_pubsub_emulator(self.state_dir, host=s.host, port=s.pubsub_port, wait=False),
                start_firestore_emulator(
                    self.state_dir, host=s.host, port=s.firestore_port, wait=False
                ),
                start_gcs_emulator(
                    self.state_dir, host=s.host, port=s.gcs_port, in_memory=False, wait=False
                ),
            ]
            for emulator in self.emulators:
                emulator.wait_ready(timeout_s)
            self._provision()
            self._start_services(timeout_s)
        except BaseException:
            self.down()
            raise
        self._write_state()
        return self

    def _provision(self) -> None:
        """Buckets, topics, subscriptions and dead-letter topics, as Pulumi makes them on GCP.

        The compose profile provisions with the same module (`audiary.local.provision`).
        """
        from audiary.adapters.gcs import GcsBlobStore

        s = self.settings
        blobs = GcsBlobStore(s.project_id, endpoint=self.env["STORAGE_EMULATOR_HOST"])
        for bucket in provision.pipeline_buckets(s):
            blobs.ensure_bucket(bucket)
        provision.provision_pubsub(s, provision.native_endpoints(s),
                                   emulator_host=self.env["PUBSUB_EMULATOR_HOST"])

    def _start_services(self, timeout_s: float) -> None:
        s = self.settings
        project = project_dir(s)
        env = self._service_env()
        bin_dir = Path(sys.executable).parent
        functions = [
            ManagedProcess(
                name=name,
                argv=[str(bin_dir / "functions-framework"), "--target", name,
                      "--source", str(project / f"functions/{name}/main.py"),
                      "--signature-type", signature,
                      "--host", s.host, "--port", str(port)],
                log_path=self.state_dir / f"{name}.log",
                # functions-framework has no health route; any HTTP answer means it serves.
                ready_url=f"http://{s.host}:{port}/",
                ready_any_status=True,
                env={**env, "GUNICORN_LOG_LEVEL": "warning", **metrics_env},
            )
            for name, port, signature, metrics_env in (
                ("ingest", s.ingest_port, "cloudevent", _metrics_env(s.ingest_metrics_port)),
                ("summarize", s.summarize_port, "cloudevent",
                 _metrics_env(s.summarize_metrics_port)),
                ("webhooks", s.webhooks_port, "cloudevent",
                 _metrics_env(s.webhooks_metrics_port)),
                ("deadletters", s.deadletters_port, "cloudevent",
                 _metrics_env(s.deadletters_metrics_port)),
                ("sweeper", s.sweeper_port, "http", _metrics_env(s.sweeper_metrics_port)),
                ("review", s.review_port, "http", _metrics_env(s.review_metrics_port)),
                ("learning", s.learning_port, "http", _metrics_env(s.learning_metrics_port)),
                ("api", s.api_port, "http", {}),  # /metrics is a route of the API
            )
        ]
        self.processes = [
            *functions,
            transcriber_process(project, s.transcriber_port, self.state_dir / "transcriber.log",
                                env, host=s.host),
            ManagedProcess(
                name="watcher",
                argv=[sys.executable, "-m", "audiary.local.watcher"],
                log_path=self.state_dir / "watcher.log",
                ready_url=f"http://{s.host}:{s.watcher_metrics_port}{METRICS_PATH}",
                env={**env, **_metrics_env(s.watcher_metrics_port)},
            ),
            # Cloud Scheduler's part: POST to the sweeper every AUDIARY_SWEEP_INTERVAL_S, to
            # the learning schedule every AUDIARY_LEARNING_INTERVAL_S, and to the review sync
            # every AUDIARY_REVIEW_SYNC_INTERVAL_S.
            ManagedProcess(
                name="scheduler",
                argv=[sys.executable, "-m", "audiary.local.scheduler"],
                log_path=self.state_dir / "scheduler.log",
                env=env,
            ),
        ]
        for process in self.processes:
            process.start()
        for process in self.processes:
            process.wait_ready(timeout_s)

    def _write_state(self) -> None:
        groups = [e.process.pid for e in self.emulators] + [p.pid for p in self.processes]
        state = {
            "env": self.env,
            "process_groups": [g for g in groups if g is not None],
            "metrics": self.metrics_targets,
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def down(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for emulator in reversed(self.emulators):
            emulator.stop()
        self.processes, self.emulators = [], []
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def transcriber_process(project: Path, port: int, log_path: Path, env: Mapping[str, str], *,
                        host: str = "127.0.0.1", ready_any_status: bool = False
                        ) -> ManagedProcess:
    """The transcriber service as its image serves it: gunicorn with its config module, from
    `project`'s containers/transcriber, ready once `/healthz` answers 200 (any answer with
    `ready_any_status`)."""
    return ManagedProcess(
        name="transcriber",
        argv=[str(Path(sys.executable).parent / "gunicorn"),
              "--chdir", str(project / "containers/transcriber"),
              "--bind", f"{host}:{port}", *TRANSCRIBER_GUNICORN_ARGS, TRANSCRIBER_APP],
        log_path=log_path,
        ready_url=f"http://{host}:{port}/healthz",
        ready_any_status=ready_any_status,
        env=env,
    )


def project_dir(settings: Settings) -> Path:
    """The checkout the stack runs from (`AUDIARY_PROJECT_DIR`, default the current folder)."""
    root = settings.project_dir.resolve()
    if not (root / "functions").is_dir() or not (root / "containers" / "transcriber").is_dir():
        raise EmulatorError(
            f"{root} is not an Audiary checkout (no functions/ and containers/transcriber/); "
            "run from the repository root or set AUDIARY_PROJECT_DIR to it")
    return root


def _metrics_env(port: int) -> dict[str, str]:
    return {"AUDIARY_METRICS_PORT": str(port)}


def prometheus_config(targets: dict[str, str], *, scrape_interval_s: float = 5.0) -> str:
    """A Prometheus configuration that scrapes `targets` (job name -> `host:port`), as
    recorded under "metrics" in stack.json; JSON, which Prometheus reads as YAML."""
    interval = f"{scrape_interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": METRICS_PATH,
             "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    return json.dumps(config, indent=2)


def settings_env(settings: Settings) -> dict[str, str]:
    """`AUDIARY_*` variables that reproduce every explicitly set field of `settings`."""
    env = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict | list | tuple):
            value = json.dumps(value)
        env[f"AUDIARY_{name.upper()}"] = str(value)
    return env


def read_state(state_dir: Path) -> dict[str, object] | None:
    """What `audiary stack up` recorded, or None when no stack is running."""
    try:
        state: dict[str, object] = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return state


def stop_recorded(state_dir: Path, grace_s: float = 10.0) -> int:
    """Stop the process groups a detached `audiary stack up` recorded; returns how many."""
    state = read_state(state_dir)
    if state is None:
        return 0
    groups = [int(g) for g in state.get("process_groups", [])]  # type: ignore[attr-defined]
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in groups:
        if _alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    (state_dir / STATE_FILE).unlink()
    return len(groups)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


__all__ = [
    "DEAD_LETTER_SUBSCRIPTIONS",
    "EmulatorError",
    "NativeStack",
    "prometheus_config",
    "read_state",
    "stop_recorded",
]
