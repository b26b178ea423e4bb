"""Function source archives: reproducible bytes, content-hash names, the right contents."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import packaging
from infra.config import REPO_ROOT

pytestmark = pytest.mark.infra

FUNCTIONS = ("ingest", "summarize", "webhooks", "deadletters", "api", "review")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the parts of the repository an archive is made from."""
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "functions", root / "functions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "src" / "audiary", root / "src" / "audiary",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy2(REPO_ROOT / name, root / name)
    return root


def test_unchanged_sources_keep_the_archive_name_and_bytes(repo: Path, tmp_path: Path) -> None:
    first = packaging.build_archive(repo, "ingest", tmp_path / "a")
    # Touching files and leaving caches behind changes nothing.
    os.utime(repo / "functions" / "ingest" / "main.py", (0, 0))
    cache = repo / "src" / "audiary" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "names.cpython-311.pyc").write_bytes(b"\x00stale")
    (repo / "functions" / "ingest" / "stray.pyc").write_bytes(b"\x00")
    second = packaging.build_archive(repo, "ingest", tmp_path / "b")
    assert first.path.name == second.path.name
    assert first.object_name == second.object_name == f"functions/{first.path.name}"
    assert first.path.read_bytes() == second.path.read_bytes()


def test_one_changed_file_changes_the_name(repo: Path, tmp_path: Path) -> None:
    before = packaging.build_archive(repo, "summarize", tmp_path)
    names_py = repo / "src" / "audiary" / "names.py"
    names_py.write_text(names_py.read_text() + "\n# changed\n")
    after = packaging.build_archive(repo, "summarize", tmp_path)
    assert after.path.name != before.path.name
    assert before.path.exists()
    assert after.path.exists()
    # Each function has its own archive: a change to one entry point moves only that one.
    main = repo / "functions" / "api" / "main.py"
    api_before = packaging.build_archive(repo, "api", tmp_path)
    webhooks_before = packaging.build_archive(repo, "webhooks", tmp_path)
    main.write_text(main.read_text() + "\n")
    assert packaging.build_archive(repo, "api", tmp_path).path != api_before.path
    assert packaging.build_archive(repo, "webhooks", tmp_path).path == webhooks_before.path


def test_entries_are_sorted_with_fixed_time_and_mode(tmp_path: Path) -> None:
    archive = packaging.build_archive(REPO_ROOT, "webhooks", tmp_path)
    with zipfile.ZipFile(archive.path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert {i.date_time for i in infos} == {packaging.FIXED_DATE_TIME}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
        assert "main.py" in names
        assert "audiary/__init__.py" in names
        assert "audiary/names.py" in names
        assert "requirements.txt" in names
        assert b"def webhooks" in zf.read("main.py")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_requirements_are_the_pinned_core_without_the_speech_model(function: str) -> None:
    lines = packaging.requirements(REPO_ROOT, function).splitlines()
    pinned = dict(line.split("==", 1) for line in lines)
    assert len(pinned) == len(lines), "every requirement is pinned to the lock"
    assert {"functions-framework", "google-cloud-firestore", "google-cloud-pubsub",
            "google-cloud-storage", "pydantic", "av", "httpx"} <= set(pinned)
    assert not packaging.FORBIDDEN.intersection(pinned)
    assert ("openai" in pinned) == ("anthropic" in pinned) == (function == "summarize")
    assert ("label-studio-sdk" in pinned) == (function == "review")


GCP_EXTRA = ("opentelemetry-exporter-gcp-trace", "opentelemetry-resourcedetector-gcp",
             "opentelemetry-propagator-gcp")


def locked(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)$",
                      (REPO_ROOT / "requirements.lock").read_text(), re.M)
    assert found is not None, f"{name} is not in requirements.lock"
    return found.group(1)


@pytest.mark.parametrize("function", sorted(os.listdir(REPO_ROOT / "functions")))
def test_every_archive_carries_the_cloud_trace_packages_pinned_to_the_lock(
        function: str, tmp_path: Path) -> None:
    archive = packaging.build_archive(REPO_ROOT, function, tmp_path)
    with zipfile.ZipFile(archive.path) as zf:
        lines = zf.read("requirements.txt").decode().splitlines()
    for name in GCP_EXTRA:
        assert f"{name}=={locked(name)}" in lines, (function, name)


def test_the_review_archive_pins_label_studios_sdk_to_the_lock(tmp_path: Path) -> None:
    archive = packaging.build_archive(REPO_ROOT, "review", tmp_path)
    with zipfile.ZipFile(archive.path) as zf:
        lines = zf.read("requirements.txt").decode().splitlines()
        assert "audiary/adapters/label_studio.py" in zf.namelist()
    locked = re.search(r"^label-studio-sdk==(\S+)$",
                       (REPO_ROOT / "requirements.lock").read_text(), re.M)
    assert locked is not None
    assert f"label-studio-sdk=={locked.group(1)}" in lines


def test_a_forbidden_dependency_fails_the_build(repo: Path) -> None:
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        'dependencies = [\n', 'dependencies = [\n  "faster-whisper>=1.1",\n', 1))
    with pytest.raises(ValueError, match="faster-whisper"):
        packaging.requirements(repo, "ingest")


def test_a_missing_function_is_reported(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"functions/nope/main\.py"):
        packaging.build_archive(repo, "nope", tmp_path)


DEV_ONLY = ("audiary/local/", "audiary/evaluation/", "audiary/entrypoints/cli/")

# Imports `main` and every audiary module of the archive from the extracted folder alone, then
# prints the files they came from (a module missing from the archive would come from src/).
_IMPORT_ALL = """
import importlib, json, sys
root = sys.argv[1]
sys.path.insert(0, root)
import main
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
print(json.dumps({n: getattr(m, "__file__", None) for n, m in sys.modules.items()
                  if n == "audiary" or n.startswith("audiary.")}))
"""


@pytest.mark.parametrize("function", FUNCTIONS)
def test_an_archive_holds_what_its_function_imports_and_no_dev_tooling(
    function: str, tmp_path: Path
) -> None:
    archive = packaging.build_archive(REPO_ROOT, function, tmp_path / "zip")
    root = tmp_path / "unpacked"
    with zipfile.ZipFile(archive.path) as zf:
        names = zf.namelist()
        zf.extractall(root)
    assert not [n for n in names if n.startswith(DEV_ONLY)]
    modules = sorted(
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in names if n.startswith("audiary/") and n.endswith(".py"))
    # The whisper engine needs the transcriber extra, which no function has; it is listed
    # because wiring can name it, and it is not imported here.
    modules = [m for m in modules if m != "audiary.adapters.whisper.engine"]
    run = subprocess.run([sys.executable, "-c", _IMPORT_ALL, str(root), json.dumps(modules)],
                         capture_output=True, text=True, cwd=tmp_path, check=False,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    files = json.loads(run.stdout.splitlines()[-1])
    outside = {n: f for n, f in files.items() if f and not Path(f).is_relative_to(root)}
    assert not outside, f"{function}: imported from outside its archive: {outside}"
    assert set(modules) <= set(files)


def test_the_api_archive_carries_the_web_page_and_no_other_archive_does() -> None:
    from infra.packaging import archive_entries

    web = {"audiary/entrypoints/api/web/index.html", "audiary/entrypoints/api/web/app.js",
           "audiary/entrypoints/api/web/app.css"}
    assert web <= set(archive_entries(REPO_ROOT, "api"))
    assert not web & set(archive_entries(REPO_ROOT, "ingest"))
