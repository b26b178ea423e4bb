"""Real servers for the integration tests, on free ports of 127.0.0.1.

`local_servers` starts the Pub/Sub, Firestore and GCS emulators and moto's S3 server once per
session, all in parallel, and stops every process group at the end. It is lazy: a run that
selects only in-memory tests starts nothing.

The root conftest resets `os.environ` after every test, so the variables that point clients at
the servers are set per test by `emulator_env` (monkeypatch restores them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from audiary.local.emulators import (
    Emulator,
    start_firestore_emulator,
    start_gcs_emulator,
    start_pubsub_emulator,
    start_s3_server,
    stop_all,
)

PROJECT = "audiary-test"
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class LocalServers:
    pubsub: Emulator
    firestore: Emulator
    gcs: Emulator
    s3: Emulator

    @property
    def env(self) -> dict[str, str]:
        env = {"GOOGLE_CLOUD_PROJECT": PROJECT}
        for server in (self.pubsub, self.firestore, self.gcs, self.s3):
            env.update(server.env)
        return env


@pytest.fixture(scope="session")
def local_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    state_dir = tmp_path_factory.mktemp("servers")
    started: list[Emulator] = []
    try:
        # Launch all first, then wait: the JVMs start in parallel (about 3 s instead of 8 s).
        for start in (
            start_pubsub_emulator,
            start_firestore_emulator,
            start_gcs_emulator,
            start_s3_server,
        ):
            started.append(start(state_dir, wait=False))
        for server in started:
            server.wait_ready(READY_TIMEOUT_S)
        pubsub, firestore, gcs, s3 = started
        yield LocalServers(pubsub=pubsub, firestore=firestore, gcs=gcs, s3=s3)
    finally:
        stop_all(started)


@pytest.fixture
def emulator_env(local_servers: LocalServers, monkeypatch: pytest.MonkeyPatch) -> LocalServers:
    """The servers, with the variables that point clients at them set for this test."""
    for name, value in local_servers.env.items():
        monkeypatch.setenv(name, value)
    return local_servers
