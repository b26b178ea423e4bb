"""Start and stop the local servers that stand in for Google Cloud (and S3) on 127.0.0.1.

Used by the native local stack and by the integration tests. Every server runs in its own
process group, logs to `<state_dir>/<name>.log`, is polled over HTTP until it answers (with a
deadline, never a fixed sleep) and is stopped as a whole group: SIGTERM, then SIGKILL.

Observed on these machines (2 vCPU, 24 GB, OpenJDK 17); times are from start to ready when
started alone, and in brackets when all four start at once (the integration tests do that):
- Pub/Sub emulator (platform/pubsub-emulator; one `java` process, as its launcher `exec`s):
  `GET /` answers "Ok" after 1.9 s (2-2.7 s); about 110 MB RSS; stops in 0.4 s.
  It accepts and honours `dead_letter_policy`: after `max_delivery_attempts` failed push
  deliveries the message lands on the dead-letter topic with `CloudPubSubDeadLetterSource*`
  attributes. `retry_policy` is accepted; with 1 s / 2 s backoff, redeliveries came after
  1.0 s and then every 3 s. Push bodies carry no `deliveryAttempt` field. With an ack deadline
  of 60 or 600 s and a 1 s / 30 s backoff, a push that gunicorn (default keep-alive 2 s)
  answered 500 was redelivered two or three times within 7 s and then no more (minutes later);
  with gunicorn's `--keep-alive 75`, all five deliveries came within about 11 s and the message
  was dead-lettered. A push to a transcriber killed mid-chunk came back only after the ack
  deadline: the e2e test of that took 64 s with a 600 s deadline and 9.5 s with 60 s, which the
  e2e stack uses (`AUDIARY_ACK_DEADLINE_S`). On a loaded machine a failed push sometimes never
  came back (two refused pushes of a handed-back chunk during a restart, then nothing for
  minutes): only the sweeper recovers such a job, after `AUDIARY_STALL_AFTER_S`.
- Firestore emulator (platform/cloud-firestore-emulator): a bash wrapper plus `java`, so
  stopping only the wrapper would orphan the JVM. `GET /` answers "Ok" after 2.5 s (2-3 s);
  about 125 MB RSS; stops in 2 s. Its transactions lock pessimistically: when several
  transactions read one document and then write it, they wait for each other until
  "Transaction lock timeout" (ABORTED); 8 threads did that more than 25 times in a row.
- gcp-storage-emulator (PyPI): `GET /` answers "OK" after 0.1 s (up to 2 s); about 25 MB
  RSS. It serves ranged downloads (`Range: bytes=a-b` gives 206 with exactly that slice) and
  gives every write a new `generation` (time in ns).
- moto_server (S3): `GET /moto-api/data.json` answers after 0.6 s (up to 2 s); about 50 MB.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self, TypedDict, Unpack

from audiary.errors import AudiaryError

log = logging.getLogger(__name__)

# Below the Google Cloud SDK's root, wherever it was installed (apt or `gcloud components`).
PUBSUB_EMULATOR = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
FIRESTORE_EMULATOR = "platform/cloud-firestore-emulator/cloud_firestore_emulator"

# moto accepts any credentials; these make boto3 sign requests without looking elsewhere.
S3_ACCESS_KEY_ID = "audiary-local"
S3_SECRET_ACCESS_KEY = "audiary-local-secret"  # noqa: S105 - a dummy for a local server


class EmulatorError(AudiaryError):
    """A local server could not be started or did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _venv_bin(name: str) -> str:
    """Path of a console script installed next to the running interpreter, else the bare name."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class ManagedProcess:
    """A command in its own process group, logged to a file, with HTTP readiness polling."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready_url: str | None = None
    ready_body: str | None = None
    # Some servers have no health route (functions-framework): any HTTP answer means serving.
    ready_any_status: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the command without waiting for it to be ready."""
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._ready = False
        log.info("starting %s: %s (log %s)", self.name, " ".join(self.argv), self.log_path)
        self._proc = subprocess.Popen(
            list(self.argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            # Own session = own process group, so stop() reaches wrappers and their children.
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.05) -> Self:
        """Poll `ready_url` until the server serves, or raise `EmulatorError` at the deadline.

        Ready means a 2xx answer (containing `ready_body`, if set), or any HTTP answer with
        `ready_any_status`. A process without `ready_url` counts as ready once started.
        """
        if self._proc is None:
            raise EmulatorError(f"{self.name} was never started")
        if self._ready or self.ready_url is None:
            return self
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while True:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1.0) as response:  # noqa: S310
                    body = response.read().decode("utf-8", "replace")
                    if self.ready_body is None or self.ready_body in body:
                        self._ready = True
                        return self
                    last_error = f"unexpected body {body[:80]!r}"
            except urllib.error.HTTPError as exc:
                if self.ready_any_status:
                    self._ready = True
                    return self
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            if time.monotonic() >= deadline:
                self.stop()
                raise EmulatorError(
                    f"{self.name} did not answer {self.ready_url} within {timeout_s:.0f} s "
                    f"({last_error}); see {self.log_path}"
                )
            # Waiting on the process doubles as the pause between polls and notices a crash.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._proc.wait(timeout=poll_s)
                raise EmulatorError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM) without waiting; `stop()` waits."""
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGTERM)

    def kill(self, sig: signal.Signals = signal.SIGKILL, *, group: bool = True) -> None:
        """Send `sig` to the process group (a machine going away), or with `group=False` to
        the leader only (Cloud Run's SIGTERM reaches the container's first process)."""
        if self._proc is None:
            raise EmulatorError(f"{self.name} is not running")
        if group:
            _signal_group(self._proc.pid, sig)
        else:
            self._proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to end (`subprocess.TimeoutExpired` after `timeout_s`);
        returns its exit status. `start()` may run it again afterwards."""
        if self._proc is None:
            raise EmulatorError(f"{self.name} was never started")
        code = self._proc.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._ready = False
        return code

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        proc, self._proc = self._proc, None
        if proc is not None:
            deadline = time.monotonic() + grace_s
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
            # The leader can exit before its children (the Firestore wrapper before its JVM).
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None or _group_alive(proc.pid):
                log.warning("%s ignored SIGTERM for %.1f s; killing it", self.name, grace_s)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._ready = False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Emulator:
    """A started local server: where it listens and the variables that point clients at it."""

    name: str
    host: str
    port: int
    process: ManagedProcess
    env: dict[str, str]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def wait_ready(self, timeout_s: float = 60.0) -> Self:
        self.process.wait_ready(timeout_s)
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all(processes: Iterable[ManagedProcess | Emulator], grace_s: float = 5.0) -> None:
    """Stop several servers at once: all get SIGTERM first, so their shutdowns overlap."""
    procs = [p.process if isinstance(p, Emulator) else p for p in processes]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.stop(grace_s)


@functools.cache
def gcloud_sdk_root() -> Path:
    """The Google Cloud SDK's root folder, as `gcloud info` reports it."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "the Google Cloud CLI (gcloud) is not on PATH; install it with its emulator "
            "components (see the README's prerequisites)")
    found = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"], capture_output=True,
        text=True, timeout=60, env={**os.environ, **_GCLOUD_ENV}, check=False,
    )
    root = found.stdout.strip()
    if found.returncode != 0 or not root:
        raise EmulatorError(f"`gcloud info` did not report the SDK root: {found.stderr.strip()}")
    return Path(root)


def gcloud_component(relative: str, component: str) -> Path:
    """An emulator's launcher below the SDK root; `EmulatorError` naming the install if absent."""
    path = gcloud_sdk_root() / relative
    if not path.exists():
        raise EmulatorError(
            f"the {component} component is not installed (no {path}); install it with "
            f"`apt-get install google-cloud-cli-{component}` or "
            f"`gcloud components install {component.replace('firestore', 'cloud-firestore')}`"
        )
    return path


@dataclass(frozen=True)
class ServerKind:
    """How to start one kind of local server and tell when it is ready."""

    name: str
    argv: Callable[[str, int, Path], list[str]]  # (host, port, state dir) -> command
    env: Callable[[str, int], dict[str, str]]  # variables that point clients at it
    ready_path: str = "/"
    ready_body: str | None = None
    process_env: Mapping[str, str] = field(default_factory=dict)


class StartOptions(TypedDict, total=False):
    host: str
    port: int | None
    wait: bool
    timeout_s: float


def start_server(
    kind: ServerKind,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wait: bool = True,
    timeout_s: float = 60.0,
) -> Emulator:
    """Start a server of `kind` on `port` (a free one by default), ready when `wait`."""
    port = port or free_port(host)
    process = ManagedProcess(
        name=kind.name,
        argv=kind.argv(host, port, state_dir),
        log_path=state_dir / f"{kind.name}.log",
        ready_url=f"http://{host}:{port}{kind.ready_path}",
        ready_body=kind.ready_body,
        env=dict(kind.process_env),
    )
    emulator = Emulator(name=kind.name, host=host, port=port, process=process,
                        env=kind.env(host, port))
    process.start()
    if wait:
        emulator.wait_ready(timeout_s)
    return emulator


_GCLOUD_ENV = {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}

PUBSUB = ServerKind(
    "pubsub-emulator",
    lambda host, port, _: [str(gcloud_component(PUBSUB_EMULATOR, "pubsub-emulator")),
                           f"--host={host}", f"--port={port}"],
    lambda host, port: {"PUBSUB_EMULATOR_HOST": f"{host}:{port}"},
    ready_body="Ok",
    process_env=_GCLOUD_ENV,
)
FIRESTORE = ServerKind(
    "firestore-emulator",
    lambda host, port, _: [str(gcloud_component(FIRESTORE_EMULATOR, "firestore-emulator")),
                           "start", f"--host={host}", f"--port={port}"],
    lambda host, port: {"FIRESTORE_EMULATOR_HOST": f"{host}:{port}"},
    ready_body="Ok",
    process_env=_GCLOUD_ENV,
)
GCS_IN_MEMORY = ServerKind(
    "gcs-emulator",
    # Run through audiary.local.gcs_emulator: the emulator plus the uploads bucket's CORS.
    lambda host, port, _: [sys.executable, "-m", "audiary.local.gcs_emulator", "start",
                           "--host", host, "--port", str(port), "--in-memory"],
    lambda host, port: {"STORAGE_EMULATOR_HOST": f"http://{host}:{port}"},
    ready_body="OK",
)
# Objects persist under `<state_dir>/gcs`.
GCS_ON_DISK = ServerKind(
    "gcs-emulator",
    lambda host, port, state: [sys.executable, "-m", "audiary.local.gcs_emulator",
                               "--data-dir", str(state / "gcs"), "start", "--host", host,
                               "--port", str(port)],
    GCS_IN_MEMORY.env,
    ready_body="OK",
)
S3 = ServerKind(
    "s3-server",
    lambda host, port, _: [_venv_bin("moto_server"), "-H", host, "-p", str(port)],
    lambda host, port: {
        "AUDIARY_S3_ENDPOINT_URL": f"http://{host}:{port}",
        "AUDIARY_S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
        "AUDIARY_S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
    },
    ready_path="/moto-api/data.json",
)


def start_pubsub_emulator(state_dir: Path, **options: Unpack[StartOptions]) -> Emulator:
    """Start the gcloud Pub/Sub emulator; `env` sets PUBSUB_EMULATOR_HOST."""
    return start_server(PUBSUB, state_dir, **options)


def start_firestore_emulator(state_dir: Path, **options: Unpack[StartOptions]) -> Emulator:
    """Start the gcloud Firestore emulator (native mode); `env` sets FIRESTORE_EMULATOR_HOST."""
    return start_server(FIRESTORE, state_dir, **options)


def start_gcs_emulator(
    state_dir: Path, *, in_memory: bool = True, **options: Unpack[StartOptions]
) -> Emulator:
    """Start gcp-storage-emulator; `env` sets STORAGE_EMULATOR_HOST (with scheme)."""
    return start_server(GCS_IN_MEMORY if in_memory else GCS_ON_DISK, state_dir, **options)


def start_s3_server(state_dir: Path, **options: Unpack[StartOptions]) -> Emulator:
    """Start moto's S3 server; `env` sets AUDIARY_S3_ENDPOINT_URL and its dummy keys."""
    return start_server(S3, state_dir, **options)
