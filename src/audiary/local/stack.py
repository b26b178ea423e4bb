"""The native local stack: real emulators and the real entry points as local processes.

`up()` starts, in order: the Pub/Sub, Firestore and GCS emulators (in parallel), the
buckets, topics, push subscriptions and dead-letter topics, the `ingest`, `summarize`,
`webhooks` and `api` functions under functions-framework, the transcriber under gunicorn, and
the bucket watcher.
It returns once every piece answers. State (logs, the watcher's memory, `stack.json` with
process ids and the variables that point clients at the emulators) lives under
`settings.state_dir`.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pydantic import SecretStr

from audiary import names
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

REPO_ROOT = Path(__file__).resolve().parents[3]
STATE_FILE = "stack.json"
ACK_DEADLINE_S = 600  # the Pub/Sub maximum; one chunk of CPU inference must fit in it
# How the transcriber is served, here and in containers/transcriber/Dockerfile (a test keeps
# the two in step): one worker holds the model, threads accept pushes, SIGTERM drains.
TRANSCRIBER_APP = "main:create_app()"
TRANSCRIBER_GUNICORN_ARGS = (
    "--workers", "1", "--threads", "4", "--timeout", "0", "--graceful-timeout", "600",
)


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

    def _service_env(self) -> dict[str, str]:
        # Children see exactly the settings of this stack, plus the emulator variables.
        return {
            **settings_env(self.settings),
            **self.env,
            "AUDIARY_STATE_DIR": str(self.state_dir),
            "PYTHONUNBUFFERED": "1",
        }

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
        """Buckets, topics, subscriptions and dead-letter topics, as Pulumi makes them on GCP."""
        from audiary.adapters.gcs import GcsBlobStore
        from audiary.adapters.pubsub import (
            ensure_pull_subscription,
            ensure_push_subscription,
            ensure_topic,
        )

        s = self.settings
        pubsub = self.env["PUBSUB_EMULATOR_HOST"]
        blobs = GcsBlobStore(s.project_id, endpoint=self.env["STORAGE_EMULATOR_HOST"])
        for bucket in (s.uploads_bucket, s.work_bucket, s.transcripts_bucket, s.feedback_bucket):
            blobs.ensure_bucket(bucket)
        for topic in (s.topic_audio_uploaded, s.topic_transcribe_chunk,
                      s.topic_transcript_ready, s.topic_job_finished):
            ensure_topic(s.project_id, topic, emulator_host=pubsub)
        pushes = [
            (names.SUBSCRIPTION_INGEST, s.topic_audio_uploaded, s.ingest_port),
            (names.SUBSCRIPTION_TRANSCRIBER, s.topic_transcribe_chunk, s.transcriber_port),
            (names.SUBSCRIPTION_SUMMARIZE, s.topic_transcript_ready, s.summarize_port),
            (names.SUBSCRIPTION_WEBHOOKS, s.topic_job_finished, s.webhooks_port),
        ]
        for subscription, topic, port in pushes:
            dead_letter = names.dead_letter_topic(subscription)
            ensure_topic(s.project_id, dead_letter, emulator_host=pubsub)
            # Dead letters are kept on a pull subscription, for inspection and alerting.
            ensure_pull_subscription(s.project_id, dead_letter, dead_letter, emulator_host=pubsub)
            ensure_push_subscription(
                s.project_id,
                subscription,
                topic,
                f"http://{s.host}:{port}/",
                ack_deadline_s=ACK_DEADLINE_S,
                dead_letter_topic=dead_letter,
                max_delivery_attempts=s.max_attempts,
                # Locally a failed delivery is retried within seconds, not minutes.
                min_backoff_s=1.0,
                max_backoff_s=30.0,
                emulator_host=pubsub,
            )

    def _start_services(self, timeout_s: float) -> None:
        s = self.settings
        env = self._service_env()
        bin_dir = Path(sys.executable).parent
        functions = [
            ManagedProcess(
                name=name,
                argv=[str(bin_dir / "functions-framework"), "--target", name,
                      "--source", str(REPO_ROOT / f"functions/{name}/main.py"),
                      "--signature-type", signature,
                      "--host", s.host, "--port", str(port)],
                log_path=self.state_dir / f"{name}.log",
                # functions-framework has no health route; any HTTP answer means it serves.
                ready_url=f"http://{s.host}:{port}/",
                ready_any_status=True,
                env={**env, "GUNICORN_LOG_LEVEL": "warning"},
            )
            for name, port, signature in (
                ("ingest", s.ingest_port, "cloudevent"),
                ("summarize", s.summarize_port, "cloudevent"),
                ("webhooks", s.webhooks_port, "cloudevent"),
                ("api", s.api_port, "http"),
            )
        ]
        self.processes = [
            *functions,
            ManagedProcess(
                name="transcriber",
                argv=[str(bin_dir / "gunicorn"),
                      "--chdir", str(REPO_ROOT / "containers/transcriber"),
                      "--bind", f"{s.host}:{s.transcriber_port}",
                      *TRANSCRIBER_GUNICORN_ARGS, TRANSCRIBER_APP],
                log_path=self.state_dir / "transcriber.log",
                ready_url=f"http://{s.host}:{s.transcriber_port}/healthz",
                env=env,
            ),
            ManagedProcess(
                name="watcher",
                argv=[sys.executable, "-m", "audiary.local.watcher"],
                log_path=self.state_dir / "watcher.log",
                env=env,
            ),
        ]
        for process in self.processes:
            process.start()
        for process in self.processes:
            process.wait_ready(timeout_s)

    def _write_state(self) -> None:
        groups = [e.process.pid for e in self.emulators] + [p.pid for p in self.processes]
        state = {"env": self.env, "process_groups": [g for g in groups if g is not None]}
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


def settings_env(settings: Settings) -> dict[str, str]:
    """`AUDIARY_*` variables that reproduce every explicitly set field of `settings`."""
    env = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
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


__all__ = ["EmulatorError", "NativeStack", "read_state", "stop_recorded"]
