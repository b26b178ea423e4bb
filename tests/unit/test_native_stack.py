"""What the native stack tells a user before it starts anything: where things are, and a clear
error when it is not run from a checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiary.local.emulators import EmulatorError
from audiary.local.stack import NativeStack, project_dir
from audiary.settings import Settings
from tests.paths import REPO_ROOT


def test_urls_name_the_api_the_openai_base_and_every_metrics_target():
    settings = Settings(api_port=18094, transcriber_port=18092, watcher_metrics_port=19196)
    urls = NativeStack(settings).urls
    assert urls["api"] == "http://127.0.0.1:18094/v1"
    assert urls["openai base URL"] == "http://127.0.0.1:18092/v1"
    assert urls["metrics watcher"] == "http://127.0.0.1:19196/metrics"
    metrics = {k for k in urls if k.startswith("metrics ")}
    assert metrics == {f"metrics {job}" for job in NativeStack(settings).metrics_targets}


def test_the_stack_runs_from_the_checkout_it_is_pointed_at(tmp_path: Path):
    assert project_dir(Settings(project_dir=REPO_ROOT)) == REPO_ROOT
    with pytest.raises(EmulatorError, match="AUDIARY_PROJECT_DIR"):
        project_dir(Settings(project_dir=tmp_path))
