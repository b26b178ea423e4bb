"""A real Label Studio server on 127.0.0.1, for the tests and for local review.

Label Studio (the `label-studio` package from PyPI) pins its own Django stack, so it lives in a
virtual environment of its own: `make label-studio` creates `.venv-label-studio` with the
version below (the compose profile runs the same version's image). It starts with an owner
account whose legacy API token is fixed (`LABEL_STUDIO_USER_TOKEN`), keeps everything in its
own data folder (SQLite), reaches no network (no telemetry, no version check), and may call
webhooks on loopback (SSRF protection off: development only).

Its first start migrates a new database (about 50 s on two cores); later starts on the same
folder take about 5 s.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Self

from audiary.local.emulators import EmulatorError, ManagedProcess

VERSION = "1.23.2"
DEFAULT_VENV = Path(".venv-label-studio")
OWNER_EMAIL = "owner@audiary.local"
OWNER_PASSWORD = "audiary-local"  # noqa: S105 (the local server's throwaway owner)


def label_studio_bin(project_dir: Path = Path(".")) -> Path:
    """The `label-studio` command: `AUDIARY_LABEL_STUDIO_BIN`, else `.venv-label-studio`'s."""
    found = os.environ.get("AUDIARY_LABEL_STUDIO_BIN") or str(
        project_dir / DEFAULT_VENV / "bin" / "label-studio")
    if not Path(found).is_file():
        on_path = shutil.which("label-studio")
        if on_path is None:
            raise EmulatorError(f"Label Studio is not installed at {found}: run "
                                "`make label-studio` (or set AUDIARY_LABEL_STUDIO_BIN)")
        return Path(on_path)
    return Path(found)


class LabelStudioServer:
    def __init__(self, data_dir: Path, *, port: int, token: str, host: str = "127.0.0.1",
                 project_dir: Path = Path(".")) -> None:
        self.data_dir = data_dir
        self.url = f"http://{host}:{port}"
        self.token = token
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("HOST", "PORT", "USERNAME", "PASSWORD", "DEBUG")}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
            LABEL_STUDIO_USERNAME=OWNER_EMAIL,
            LABEL_STUDIO_PASSWORD=OWNER_PASSWORD,
            LABEL_STUDIO_USER_TOKEN=token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",  # noqa: S106 (a flag)
            # Reviewers sign up on the page (the tests' annotator does).
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="false",
            SSRF_PROTECTION_ENABLED="false",
            SENTRY_DSN="", FRONTEND_SENTRY_DSN="", LATEST_VERSION_CHECK="false",
            COLLECT_ANALYTICS="false", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
        )
        self.process = ManagedProcess(
            name="label-studio",
            argv=[str(label_studio_bin(project_dir)), "start", "--no-browser",
                  "--internal-host", host, "--port", str(port)],
            log_path=data_dir / "label-studio.log",
            ready_url=f"{self.url}/health",
            env=env,
        )

    def start(self, timeout_s: float = 300.0) -> Self:
        self.process.start().wait_ready(timeout_s, poll_s=0.25)
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
