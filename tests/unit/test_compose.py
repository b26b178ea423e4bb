"""The compose profile cannot be run here (no Docker engine): check it statically.

The compose file must be valid against the Compose Specification's JSON schema (the copy that
check-jsonschema vendors from compose-spec/compose-spec), pin every third-party image by tag and
digest (none from Docker Hub's withdrawn minio/ repositories), name only files, entry points and
modules that exist, wire the app exactly like the native stack (same settings, same topics and
subscriptions), and its Prometheus and Grafana configuration must name only exported metrics.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from audiary import names
from audiary.entrypoints.cli import main as cli_main
from audiary.local import label_studio as local_label_studio
from audiary.local import provision
from audiary.local import scheduler as local_scheduler
from audiary.local.emulators import Emulator, ManagedProcess
from audiary.local.stack import NativeStack
from audiary.observability import metrics
from audiary.services.review import SECRET_HEADER
from audiary.settings import Settings
from tests.paths import REPO_ROOT

EMULATORS = REPO_ROOT / "emulators"
COMPOSE_FILE = EMULATORS / "docker-compose.yml"
PROFILE = "local"
# The standard Google variables the code honours (docs/DESIGN.md, section 6).
GOOGLE_VARIABLES = {"GOOGLE_CLOUD_PROJECT", "PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST",
                    "STORAGE_EMULATOR_HOST"}
# Process-level variables that are not settings: Cloud Run's port (the transcriber image binds
# it), unbuffered output and functions-framework's log level (the native stack sets both).
PROCESS_VARIABLES = {"PORT", "PYTHONUNBUFFERED", "GUNICORN_LOG_LEVEL"}
# Where compose deliberately differs from the native stack: blobs in MinIO, the container's
# state directory, metrics servers on every interface. The transcriber also says which device
# to use.
COMPOSE_ONLY_SETTINGS = {"AUDIARY_BLOB_BACKEND", "AUDIARY_S3_ENDPOINT_URL",
                         "AUDIARY_S3_ACCESS_KEY_ID", "AUDIARY_S3_SECRET_ACCESS_KEY",
                         "AUDIARY_STATE_DIR", "AUDIARY_METRICS_HOST"}
TRANSCRIBER_SETTINGS = {"AUDIARY_DEVICE": "cpu", "AUDIARY_COMPUTE_TYPE": "int8"}
EXPECTED_HOST_PORTS = {
    "label-studio": {8080}, "pubsub": {8085}, "firestore": {8086}, "bridge": {8090},
    "ingest": {8091}, "transcriber": {8092}, "summarize": {8093}, "api": {8094},
    "webhooks": {8095}, "deadletters": {8096}, "sweeper": {8097}, "review": {8098},
    "learning": {8099}, "minio": {9000, 9001}, "prometheus": {9090}, "grafana": {3000},
}
SCRAPE_JOBS = {"transcriber", "ingest", "summarize", "api", "webhooks", "deadletters", "sweeper",
               "review", "learning", "bridge"}
# The review desk's wiring, on `review` and `review-setup`: compose's own Label Studio, the
# token its owner gets, the shared secret and the receiver's address (the native stack leaves
# Label Studio to the user).
REVIEW_DESK_SETTINGS = {
    "AUDIARY_LABEL_STUDIO_URL": "http://label-studio:8080",
    "AUDIARY_LABEL_STUDIO_TOKEN": "audiary-local-label-studio-token",
    "AUDIARY_REVIEW_SECRET": "audiary-local-review-secret",
    "AUDIARY_REVIEW_URL": "http://review:8098",
}


# ---------------------------------------------------------------------------------------------
# Reading the compose file


@cache
def _raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def compose() -> dict[str, Any]:
    """The compose file with anchors and merge keys resolved, as Compose sees it."""
    return copy.deepcopy(_raw())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}`, resolved as on a machine that sets none of the names."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", value)


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: interpolate(str(v)) if v is not None else None for k, v in env.items()}


def command(service: Mapping[str, Any], key: str = "command") -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(argv: list[str], name: str) -> str:
    """The value of `--name value` or `--name=value` in argv."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {argv}")


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def built_from(service: Mapping[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    return context / build.get("dockerfile", "Dockerfile")


def app_services() -> dict[str, dict[str, Any]]:
    """Services that run the project's code: built from its Dockerfiles under containers/."""
    return {name: svc for name, svc in services().items()
            if (path := built_from(svc)) is not None
            and path.is_relative_to(REPO_ROOT / "containers")}


def host_ports(service: Mapping[str, Any]) -> set[int]:
    found = set()
    for port in service.get("ports") or []:
        if isinstance(port, Mapping):
            found.add(int(port["published"]))
        else:
            parts = str(port).split(":")
            assert len(parts) == 2, f"publish ports as HOST:CONTAINER, got {port!r}"
            found.add(int(parts[0]))
    return found


def listening_port(name: str, service: Mapping[str, Any]) -> int:
    """The port the service's server listens on inside its container."""
    argv = command(service)
    if "--port" in argv:
        return int(option(argv, "--port"))
    if "--bind" in argv:
        return int(option(argv, "--bind").rsplit(":", 1)[1])
    if "PORT" in environment(service):
        return int(environment(service)["PORT"] or 0)
    for arg in argv:
        if arg.startswith("--host-port="):
            return int(arg.rsplit(":", 1)[1])
    raise AssertionError(f"cannot tell which port {name} listens on")


def compose_settings(service: Mapping[str, Any]) -> Settings:
    """The settings the service's process reads from the environment compose gives it."""
    env = {k: v for k, v in environment(service).items() if v is not None}
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith("AUDIARY_") or key in GOOGLE_VARIABLES | {"OPENAI_API_KEY",
                                                                         "ANTHROPIC_API_KEY"}:
                del os.environ[key]
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------------------------------------
# The file and the schema


@cache
def compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the official schema of github.com/compose-spec/compose-spec
    # (schema/compose-spec.json, Apache-2.0).
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(schema_file.read_text())
    return schema


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def test_the_schema_is_the_compose_specification():
    assert compose_schema()["title"] == "Compose Specification"
    jsonschema.Draft202012Validator.check_schema(compose_schema())


def test_compose_file_validates_against_the_compose_specification():
    assert schema_errors(compose()) == []


def test_the_schema_check_would_catch_mistakes():
    broken = compose()
    broken["services"]["api"]["depends_on"] = {"pubsub": {"condition": "when_ready"}}
    broken["services"]["minio"]["healthcheck"]["interval"] = 5
    broken["services"]["bridge"]["portz"] = ["8090:8090"]
    assert len(schema_errors(broken)) >= 3


def test_every_service_is_in_the_local_profile():
    assert {name for name, svc in services().items() if PROFILE not in svc.get("profiles", [])} \
        == set()


def test_depends_on_names_services_and_has_no_cycle():
    graph = {name: set(svc.get("depends_on") or ()) for name, svc in services().items()}
    for name, deps in graph.items():
        assert deps <= graph.keys(), f"{name} depends on unknown services {deps - graph.keys()}"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_one_shot_jobs_finish_before_the_app_starts():
    for name in app_services():
        deps = services()[name].get("depends_on") or {}
        if name in {"pubsub-init", "bridge"}:
            continue
        assert deps["pubsub-init"]["condition"] == "service_completed_successfully", name
        assert deps["minio-init"]["condition"] == "service_completed_successfully", name
    for job in ("pubsub-init", "minio-init", "review-setup"):
        assert services()[job]["restart"] == "no"


# ---------------------------------------------------------------------------------------------
# Images, builds, files and entry points


@dataclass(frozen=True)
class ImageRef:
    """An image reference, `[registry/]repository[:tag][@digest]`, with Docker Hub's defaults."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None


DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The images built here from containers/*/Dockerfile; every other image is third-party.
LOCAL_IMAGE = re.compile(r"audiary-[a-z0-9-]+")
# MinIO Inc. deleted these Docker Hub repositories (September 2026) and had published nothing new
# to them since October 2025: none of their tags carries the CVE-2025-62506 fix.
WITHDRAWN_REPOSITORIES = ("minio/",)
# Upstream MinIO's first release with the fix of CVE-2025-62506 (GHSA-jjjj-jwhf-8rgr), released
# as source only; a MinIO or MinIO-fork image must be at least this release.
CVE_2025_62506_FIXED_IN = "RELEASE.2025-10-15T17-29-55Z"


def parse_image(reference: str) -> ImageRef:
    name, _, digest = reference.partition("@")
    head, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:  # the colon belongs to a registry's port
        head, tag = name, ""
    first, slash, rest = head.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, head
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return ImageRef(registry, repository, tag or None, digest or None)


def pin_problems(image: str | None, service: Mapping[str, Any]) -> list[str]:
    """Why a service's image is not pinned as this file requires; empty when it is."""
    if not image:
        return ["names no image"]
    ref = parse_image(image)
    if "build" in service:
        if not LOCAL_IMAGE.fullmatch(image.split(":")[0]) or ref.digest:
            return [f"a locally built image is audiary-*:TAG, not {image}"]
        return [] if ref.tag and ref.tag != "latest" else [f"{image} has no version tag"]
    problems = []
    if ref.tag is None or ref.tag == "latest":
        problems.append(f"{image} names no version tag")
    if ref.digest is None or not _DIGEST.fullmatch(ref.digest):
        problems.append(f"{image} is not pinned by a sha256 digest")
    if LOCAL_IMAGE.fullmatch(image.split(":")[0]):
        problems.append(f"{image} is built here, but the service has no build")
    if ref.registry == DOCKER_HUB and ref.repository.startswith(WITHDRAWN_REPOSITORIES):
        problems.append(f"{image} is in a Docker Hub repository MinIO withdrew")
    return problems


def test_images_are_pinned_by_tag_and_digest() -> None:
    problems = {name: found for name, svc in services().items()
                if (found := pin_problems(svc.get("image"), svc))}
    assert problems == {}
    third_party = {name for name, svc in services().items() if "build" not in svc}
    assert {"minio", "minio-init", "pubsub", "firestore", "label-studio", "prometheus",
            "grafana"} <= third_party


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(("image", "build", "problem"), [
    ("minio/minio:RELEASE.2025-04-22T22-12-26Z", False, "not pinned"),
    (f"minio/minio:RELEASE.2025-04-22T22-12-26Z@{DIGEST}", False, "MinIO withdrew"),
    (f"docker.io/minio/mc:RELEASE.2025-04-16T18-13-26Z@{DIGEST}", False, "MinIO withdrew"),
    (f"index.docker.io/minio/minio@{DIGEST}", False, "no version tag"),
    ("prom/prometheus:v3.5.0", False, "not pinned"),
    ("prom/prometheus:v3.5.0@sha256:63805ebb", False, "not pinned"),
    (f"grafana/grafana:latest@{DIGEST}", False, "no version tag"),
    (f"localhost:5000/grafana@{DIGEST}", False, "no version tag"),
    ("audiary-functions:local", False, "no build"),
    (f"audiary-functions:local@{DIGEST}", True, "locally built"),
    ("python:3.11-slim", True, "locally built"),
    ("audiary-trainer", True, "no version tag"),
])
def test_the_pin_check_would_catch_mistakes(image: str, build: bool, problem: str) -> None:
    service = {"build": {"context": ".."}} if build else {}
    found = pin_problems(image, service)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize(("image", "expected"), [
    ("grafana/grafana:12.1.1", ImageRef(DOCKER_HUB, "grafana/grafana", "12.1.1", None)),
    (f"python@{DIGEST}", ImageRef(DOCKER_HUB, "library/python", None, DIGEST)),
    (f"registry-1.docker.io/pgsty/silo:RELEASE.2026-09-16T00-00-00Z@{DIGEST}",
     ImageRef(DOCKER_HUB, "pgsty/silo", "RELEASE.2026-09-16T00-00-00Z", DIGEST)),
    (f"gcr.io/google.com/cloudsdktool/google-cloud-cli:587.0.0-emulators@{DIGEST}",
     ImageRef("gcr.io", "google.com/cloudsdktool/google-cloud-cli", "587.0.0-emulators",
              DIGEST)),
    ("localhost:5000/x/y", ImageRef("localhost:5000", "x/y", None, None)),
])
def test_image_references_parse_as_registries_read_them(image: str, expected: ImageRef) -> None:
    assert parse_image(image) == expected


def test_the_s3_server_carries_the_cve_2025_62506_fix() -> None:
    """MinIO-protocol server and client: a release at or after upstream's fix, one image."""
    server = parse_image(services()["minio"]["image"])
    assert server.tag is not None
    release = re.match(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", server.tag)
    assert release is not None, server.tag
    # RELEASE.YYYY-MM-DDTHH-MM-SSZ sorts as its time does.
    assert release.group(0) >= CVE_2025_62506_FIXED_IN
    # The set-up job uses the client the server image carries: one pin to keep current.
    init = services()["minio-init"]
    assert init["image"] == services()["minio"]["image"]
    assert command(init, "entrypoint") == ["/bin/sh", "/init/init.sh"]
    assert "./minio/init.sh:/init/init.sh:ro" in init["volumes"]


def seconds(duration: str) -> float:
    """A compose duration such as `5s`, `1m30s` or `500ms`, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_the_s3_servers_health_check_ends_before_compose_kills_it() -> None:
    check = services()["minio"]["healthcheck"]
    argv = check["test"]
    assert argv[:3] == ["CMD", "silo", "healthcheck"]
    # `silo healthcheck` gives up after 15 s on the cluster checks and 5 s on live/ready; a
    # compose timeout below that kills it before it prints why the server is not ready.
    own_deadline = 15 if argv[-1].startswith("cluster") else 5
    assert seconds(check["timeout"]) > own_deadline
    # The set-up job waits for this: buckets and the notification need a ready object layer.
    assert argv[-1] == "cluster"
    assert services()["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_build_contexts_and_dockerfiles_exist():
    built = {name: built_from(svc) for name, svc in services().items() if "build" in svc}
    assert {p.relative_to(REPO_ROOT).as_posix() for p in built.values() if p} == {
        "containers/functions/Dockerfile", "containers/transcriber/Dockerfile",
        "containers/trainer/Dockerfile"}
    for name, dockerfile in built.items():
        assert dockerfile is not None, name
        assert dockerfile.is_file(), name
        assert dockerfile.parent.parent.parent == REPO_ROOT, "build from the repository root"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_functions_image_copies_what_exists_and_pins_by_the_lock():
    dockerfile = REPO_ROOT / "containers/functions/Dockerfile"
    steps = dockerfile_instructions(dockerfile)
    assert steps[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.11-slim", steps[0][1]), "the Python the lock was made for"
    for op, arg in steps:
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert (REPO_ROOT / src).exists(), src
    installs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "--constraint requirements.lock" in installs
    assert "faster-whisper" not in installs


def test_mounted_files_exist():
    for name, svc in services().items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"


def _functions(source: Path) -> dict[str, list[str]]:
    """Top-level functions of a file and the names of their decorators."""
    tree = ast.parse(source.read_text())
    return {node.name: [ast.unparse(d) for d in node.decorator_list]
            for node in tree.body if isinstance(node, ast.FunctionDef)}


SIGNATURE_DECORATORS = {"cloudevent": "functions_framework.cloud_event",
                        "http": "functions_framework.http"}


def function_services() -> dict[str, list[str]]:
    return {name: command(svc) for name, svc in services().items()
            if command(svc)[:1] == ["functions-framework"]}


def test_function_targets_exist_with_their_signature():
    found = function_services()
    assert set(found) == {"ingest", "summarize", "webhooks", "api", "deadletters", "sweeper",
                          "review", "learning"}
    for name, argv in found.items():
        target, signature = option(argv, "--target"), option(argv, "--signature-type")
        source = REPO_ROOT / option(argv, "--source")
        assert source == REPO_ROOT / f"functions/{target}/main.py", name
        decorators = _functions(source).get(target)
        assert decorators is not None, f"{source} defines no function {target}"
        assert SIGNATURE_DECORATORS[signature] in decorators, (name, decorators)
        assert option(argv, "--host") == "0.0.0.0"


def test_function_ports_are_the_native_stacks():
    s = Settings()
    native = {"ingest": s.ingest_port, "summarize": s.summarize_port, "api": s.api_port,
              "webhooks": s.webhooks_port, "deadletters": s.deadletters_port,
              "sweeper": s.sweeper_port, "review": s.review_port,
              "learning": s.learning_port,
              "transcriber": s.transcriber_port}
    for name, port in native.items():
        svc = services()[name]
        assert listening_port(name, svc) == port, name
        assert host_ports(svc) == {port}, name


def _module(spec: str) -> ModuleType:
    module_name, _, _ = spec.partition(":")
    return importlib.import_module(module_name)


def test_python_modules_and_wsgi_apps_exist():
    checked = 0
    for name, svc in services().items():
        argv = command(svc)
        if argv[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(argv[2]) is not None, f"{name}: no module {argv[2]}"
            checked += 1
        if argv[:1] == ["gunicorn"]:
            module_name, _, factory = argv[-1].partition(":")
            module = importlib.import_module(module_name)
            assert callable(getattr(module, factory.removesuffix("()"))), name
            checked += 1
    assert checked >= 2  # pubsub-init and bridge


def test_script_entry_points_are_mounted_files():
    svc = services()["minio-init"]
    script = next(arg for arg in command(svc, "entrypoint") if arg.endswith(".sh"))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert script in mounts, f"minio-init runs {script}, which is not mounted"
    assert (COMPOSE_FILE.parent / mounts[script]).is_file()


def test_provision_entry_point_parses_its_arguments():
    argv = command(services()["pubsub-init"])
    assert argv[:3] == ["python", "-m", "audiary.local.provision"]
    endpoints = dict(provision._endpoint(e) for e in options(argv, "--endpoint"))
    assert set(endpoints) == {r.subscription for r in provision.push_routes(Settings())} | {
        names.DEADLETTERS}


# ---------------------------------------------------------------------------------------------
# Ports


def test_published_host_ports_are_unique_and_as_documented():
    seen: dict[int, str] = {}
    for name, svc in services().items():
        for port in host_ports(svc):
            assert port not in seen, f"{name} and {seen[port]} both publish {port}"
            seen[port] = name
    assert seen[8080] == "label-studio"
    assert {name: host_ports(services()[name]) for name in EXPECTED_HOST_PORTS} \
        == EXPECTED_HOST_PORTS
    assert set(seen.values()) == set(EXPECTED_HOST_PORTS)


def test_emulators_listen_where_the_app_looks():
    env = environment(services()["ingest"])
    for variable, service in (("PUBSUB_EMULATOR_HOST", "pubsub"),
                              ("FIRESTORE_EMULATOR_HOST", "firestore")):
        host, port = str(env[variable]).split(":")
        assert host == service
        assert listening_port(service, services()[service]) == int(port)
        assert int(port) in host_ports(services()[service])
    s3 = urlsplit(str(env["AUDIARY_S3_ENDPOINT_URL"]))
    assert (s3.hostname, s3.port) == ("minio", 9000)
    project = option(command(services()["pubsub"]), "--project")
    assert project == env["GOOGLE_CLOUD_PROJECT"]


# ---------------------------------------------------------------------------------------------
# Settings: the app is wired like the native stack


def setting_variables() -> set[str]:
    """Every variable Settings reads: AUDIARY_<FIELD> and the aliases."""
    found = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            found.update(str(c) for c in choices)
        else:
            found.add(f"AUDIARY_{name.upper()}")
    return found


def test_app_services_are_the_expected_ones():
    assert set(app_services()) == {"ingest", "summarize", "webhooks", "api", "deadletters",
                                   "sweeper", "review", "learning", "scheduler", "transcriber",
                                   "bridge", "pubsub-init", "review-setup"}


def test_every_variable_on_an_app_service_is_a_setting():
    allowed = setting_variables() | GOOGLE_VARIABLES | PROCESS_VARIABLES
    for name, svc in app_services().items():
        unknown = set(environment(svc)) - allowed
        assert unknown == set(), f"{name} sets variables that nothing reads: {unknown}"


def test_app_settings_validate_and_point_at_the_compose_services():
    for name, svc in app_services().items():
        s = compose_settings(svc)
        assert s.blob_backend == "s3", name
        assert s.s3_endpoint_url == "http://minio:9000", name
        assert s.project_id == "audiary-local", name


def native_metrics_ports() -> dict[str, int]:
    s = Settings()
    return {"ingest": s.ingest_metrics_port, "summarize": s.summarize_metrics_port,
            "webhooks": s.webhooks_metrics_port, "deadletters": s.deadletters_metrics_port,
            "sweeper": s.sweeper_metrics_port, "review": s.review_metrics_port,
            "learning": s.learning_metrics_port}


def test_app_settings_are_the_native_stacks(monkeypatch):
    """Apart from where blobs live, every setting keeps the native stack's value."""
    monkeypatch.delenv("AUDIARY_MODEL")  # the suite's own choice (tests/conftest.py)
    native = Settings()
    common = environment(services()["bridge"])
    for name, svc in app_services().items():
        env = environment(svc)
        extra = {k: v for k, v in env.items() if k not in common}
        if name == "transcriber":
            assert extra == {"PORT": "8092", **TRANSCRIBER_SETTINGS}
        elif name in native_metrics_ports():
            # As the native stack starts them: their own metrics port, quieter gunicorn logs.
            expected: dict[str, str | None] = {
                "AUDIARY_METRICS_PORT": str(native_metrics_ports()[name]),
                "GUNICORN_LOG_LEVEL": "warning"}
            if name == "summarize":
                # LLM keys pass through from the shell; absent there, absent here.
                expected |= {"OPENAI_API_KEY": None, "ANTHROPIC_API_KEY": None}
            if name == "review":
                expected |= REVIEW_DESK_SETTINGS
            assert extra == expected, name
        elif name == "api":
            assert extra == {"GUNICORN_LOG_LEVEL": "warning"}
        elif name == "review-setup":
            assert extra == REVIEW_DESK_SETTINGS
        elif name == "scheduler":
            # The review sync's secret (see test_the_scheduler_calls_the_review_sync).
            assert extra == {"AUDIARY_REVIEW_SECRET": "audiary-local-review-secret"}
        else:
            assert extra == {}, name
        assert {k: env[k] for k in common} == common, f"{name} differs from the others"
    differing = {k for k in common if k.startswith("AUDIARY_")}
    assert differing == COMPOSE_ONLY_SETTINGS
    s = compose_settings(services()["bridge"])
    for field in Settings.model_fields:
        variable = f"AUDIARY_{field.upper()}"
        if variable in COMPOSE_ONLY_SETTINGS or field.endswith("emulator_host"):
            continue
        if field == "project_id":
            continue
        assert getattr(s, field) == getattr(native, field), field


def test_transcriber_runs_on_cpu_from_the_cloud_run_image():
    svc = services()["transcriber"]
    assert built_from(svc) == REPO_ROOT / "containers/transcriber/Dockerfile"
    s = compose_settings(svc)
    assert (s.device, s.compute_type) == ("cpu", "int8")
    assert "/healthz" in " ".join(command(svc["healthcheck"], "test"))


# ---------------------------------------------------------------------------------------------
# Pub/Sub: the same topics and subscriptions as the native stack


class Recorder:
    """Stands in for the Pub/Sub helpers and the GCS adapter; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def fn(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return f"projects/{args[0]}/subscriptions/{args[1]}" if len(args) > 1 else ""
        return record

    def blob_store(self, *args: Any, **kwargs: Any) -> Any:
        recorder = self

        class Blobs:
            def ensure_bucket(self, bucket: str) -> None:
                recorder.calls.append(("ensure_bucket", (bucket,), {}))

        return Blobs()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    from audiary.adapters import gcs, pubsub

    rec = Recorder()
    for helper in ("ensure_topic", "ensure_pull_subscription", "ensure_push_subscription"):
        monkeypatch.setattr(pubsub, helper, rec.fn(helper))
    monkeypatch.setattr(gcs, "GcsBlobStore", rec.blob_store)
    return rec


def _fake_emulator(name: str, env: dict[str, str]) -> Emulator:
    process = ManagedProcess(name=name, argv=["true"], log_path=Path("/dev/null"))
    return Emulator(name=name, host="127.0.0.1", port=1, process=process, env=env)


def _normalized(calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
                endpoints: Mapping[str, str]) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The calls with each push endpoint replaced by the subscription it belongs to."""
    by_url = {url: f"<{sub}>" for sub, url in endpoints.items()}
    return [(name, tuple(by_url.get(a, a) if isinstance(a, str) else a for a in args),
             {k: v for k, v in kwargs.items() if k != "emulator_host"})
            for name, args, kwargs in calls]


def test_compose_provisions_exactly_the_native_stacks_topics_and_subscriptions(recorder):
    settings = compose_settings(services()["pubsub-init"])
    argv = command(services()["pubsub-init"])
    compose_endpoints = dict(provision._endpoint(e) for e in options(argv, "--endpoint"))
    provision.provision_pubsub(settings, compose_endpoints, emulator_host="pubsub:8085")
    from_compose = _normalized(recorder.calls, compose_endpoints)

    recorder.calls.clear()
    native = Settings()
    stack = NativeStack(native, emulators=[
        _fake_emulator("pubsub", {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}),
        _fake_emulator("gcs", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:2"}),
    ])
    stack._provision()
    native_calls = [c for c in recorder.calls if c[0] != "ensure_bucket"]
    from_native = _normalized(native_calls, provision.native_endpoints(native))

    assert from_compose == from_native
    pushes = [c for c in from_compose if c[0] == "ensure_push_subscription"]
    pipeline = [names.SUBSCRIPTION_INGEST, names.SUBSCRIPTION_TRANSCRIBER,
                names.SUBSCRIPTION_SUMMARIZE, names.SUBSCRIPTION_WEBHOOKS,
                names.SUBSCRIPTION_WEBHOOK_DELIVERY, names.SUBSCRIPTION_DATASETS,
                names.SUBSCRIPTION_TRAINING]
    n = len(pipeline)
    assert [c[1][1] for c in pushes] == [
        *pipeline, *(names.dead_letter_consumer(s) for s in pipeline)]
    assert all(c[2]["ack_deadline_s"] == 600 and c[2]["dead_letter_topic"] for c in pushes[:n])
    # Every dead-letter topic is read by deadletters, whose subscriptions dead-letter nothing.
    assert [c[1][2] for c in pushes[n:]] == [names.dead_letter_topic(s) for s in pipeline]
    assert not any(c[2].get("dead_letter_topic") for c in pushes[n:])


def test_native_stack_buckets_are_the_pipeline_buckets(recorder):
    stack = NativeStack(Settings(), emulators=[
        _fake_emulator("pubsub", {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}),
        _fake_emulator("gcs", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:2"}),
    ])
    stack._provision()
    made = [c[1][0] for c in recorder.calls if c[0] == "ensure_bucket"]
    assert tuple(made) == provision.pipeline_buckets(Settings())


def test_push_endpoints_reach_the_service_that_handles_the_subscription():
    argv = command(services()["pubsub-init"])
    endpoints = dict(provision._endpoint(e) for e in options(argv, "--endpoint"))
    handler = {"ingest": "ingest", "summarize": "summarize", "webhooks": "webhooks",
               "webhook-delivery": "webhooks", "transcriber": "transcriber",
               "deadletters": "deadletters", "datasets": "learning", "training": "learning"}
    for subscription, url in endpoints.items():
        parts = urlsplit(url)
        service = handler[subscription]
        assert parts.hostname == service, url
        assert parts.path == "/", url
        assert parts.port == listening_port(service, services()[service]), url
    assert set(endpoints) == set(handler)
    for service in ("ingest", "summarize", "webhooks", "deadletters", "learning"):
        assert option(command(services()[service]), "--target") == service


# ---------------------------------------------------------------------------------------------
# MinIO: buckets and the notification that plays GCS's


def minio_init_script() -> str:
    return (EMULATORS / "minio/init.sh").read_text()


def test_minio_init_creates_the_pipeline_and_label_studio_buckets():
    script = minio_init_script()
    loop = re.search(r"for bucket in (.*?); do\s+mc mb --ignore-existing \"local/\$bucket\"",
                     script, re.S)
    assert loop is not None
    created = loop.group(1).replace("\\\n", " ").split()
    assert created == [*provision.pipeline_buckets(Settings()), "production", "userfeedback"]


def test_minio_notifies_the_bridge_of_new_objects_in_the_inbox():
    s = Settings()
    event = re.search(r"mc event add (\S+) (\S+)\s*\\?\s*(.*)", minio_init_script())
    assert event is not None
    target, arn, flags = event.group(1), event.group(2), shlex.split(event.group(3))
    assert target == f"local/{s.uploads_bucket}"
    assert option(flags, "--prefix") == s.inbox_prefix
    assert option(flags, "--event") == "put"
    match = re.fullmatch(r"arn:minio:sqs::(\w+):webhook", arn)
    assert match is not None
    target_id = match.group(1)
    env = environment(services()["minio"])
    assert env[f"MINIO_NOTIFY_WEBHOOK_ENABLE_{target_id}"] == "on"
    # Events must survive a restart of the bridge.
    assert env[f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{target_id}"]
    endpoint = urlsplit(str(env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target_id}"]))
    assert endpoint.hostname == "bridge"
    assert endpoint.path == "/"
    assert endpoint.port == listening_port("bridge", services()["bridge"])
    assert services()["minio"]["depends_on"]["bridge"]["condition"] == "service_healthy"


def test_minio_credentials_are_the_apps():
    minio = environment(services()["minio"])
    app = environment(services()["ingest"])
    assert (app["AUDIARY_S3_ACCESS_KEY_ID"], app["AUDIARY_S3_SECRET_ACCESS_KEY"]) \
        == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    init = environment(services()["minio-init"])
    assert (init["MINIO_ROOT_USER"], init["MINIO_ROOT_PASSWORD"]) \
        == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])


# ---------------------------------------------------------------------------------------------
# Label Studio


def container_port(service: Mapping[str, Any]) -> int:
    """The container side of a service's one published port (images that take no --port)."""
    (port,) = service["ports"]
    return int(str(port).split(":")[1])


def test_label_studio_runs_the_version_the_tests_run():
    makefile = re.search(r"^LABEL_STUDIO_VERSION := (\S+)$", (REPO_ROOT / "Makefile").read_text(),
                         re.M)
    assert makefile is not None
    image = parse_image(services()["label-studio"]["image"])
    assert (image.registry, image.repository) == (DOCKER_HUB, "heartexlabs/label-studio")
    assert image.tag == makefile.group(1) == local_label_studio.VERSION


def test_review_uses_the_token_label_studio_creates():
    server = environment(services()["label-studio"])
    assert len(server["LABEL_STUDIO_USER_TOKEN"] or "") <= 40  # the token column's width
    assert server["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    for name in ("review", "review-setup"):
        token = compose_settings(services()[name]).label_studio_token
        assert token is not None, name
        assert token.get_secret_value() == server["LABEL_STUDIO_USER_TOKEN"], name


def test_label_studio_and_the_review_receiver_reach_each_other():
    # Label Studio refuses webhooks to private addresses unless SSRF protection is off.
    assert environment(services()["label-studio"])["SSRF_PROTECTION_ENABLED"] == "false"
    for name in ("review", "review-setup"):
        s = compose_settings(services()[name])
        desk = urlsplit(s.label_studio_url or "")
        assert (desk.hostname, desk.port) == (
            "label-studio", container_port(services()["label-studio"])), name
        # `audiary review setup` registers <review_url>/label-studio as the webhook.
        receiver = urlsplit(s.review_url or "")
        assert (receiver.hostname, receiver.port) == (
            "review", listening_port("review", services()["review"])), name
        assert s.review_secret is not None, name


def test_review_setup_runs_the_cli_once_label_studio_is_healthy():
    svc = services()["review-setup"]
    argv = command(svc)
    assert argv[0] == "audiary"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["audiary"] == "audiary.entrypoints.cli.main:main"
    ctx = click.Context(cli_main.cli)
    group = cli_main.cli.get_command(ctx, argv[1])
    assert isinstance(group, click.Group)
    assert group.get_command(ctx, argv[2]) is cli_main.review_setup
    assert argv[1:] == ["review", "setup"]
    assert svc["depends_on"]["label-studio"]["condition"] == "service_healthy"
    # The same settings as the receiver it registers.
    review = {k: v for k, v in environment(services()["review"]).items()
              if k not in ("AUDIARY_METRICS_PORT", "GUNICORN_LOG_LEVEL")}
    assert environment(svc) == review


def test_the_scheduler_calls_the_review_sync_with_the_receivers_secret():
    svc = services()["scheduler"]
    found = local_scheduler.schedules(compose_settings(svc))
    assert [one.name for one in found] == ["sweep", "learning", "review sync"]
    sweeper = urlsplit(option(command(svc), "--url"))
    assert (sweeper.hostname, sweeper.port) == (
        "sweeper", listening_port("sweeper", services()["sweeper"]))
    learning = urlsplit(option(command(svc), "--learning-url"))
    assert (learning.hostname, learning.port, learning.path) == (
        "learning", listening_port("learning", services()["learning"]), "/schedule")
    sync = urlsplit(option(command(svc), "--review-url"))
    assert (sync.hostname, sync.port, sync.path) == (
        "review", listening_port("review", services()["review"]), "/sync")
    secret = compose_settings(services()["review"]).review_secret
    assert secret is not None
    assert found[2].headers == {SECRET_HEADER: secret.get_secret_value()}


# ---------------------------------------------------------------------------------------------
# Prometheus and Grafana


def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((EMULATORS / "prometheus.yml").read_text())
    return config


def test_prometheus_scrapes_every_app_service():
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert set(jobs) == SCRAPE_JOBS
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for c in job["static_configs"] for t in c["targets"]]
        assert len(targets) == 1
        host, port = targets[0].split(":")
        assert host == name
        assert host in services()
        metrics_port = environment(services()[name]).get("AUDIARY_METRICS_PORT")
        expected = int(metrics_port) if metrics_port else listening_port(name, services()[name])
        assert int(port) == expected, name


def test_prometheus_jobs_are_the_native_stacks_with_the_bridge_for_the_watcher():
    native = NativeStack(Settings()).metrics_targets
    assert set(native) - {"watcher"} | {"bridge"} == SCRAPE_JOBS
    jobs = {job["job_name"]: job["static_configs"][0]["targets"][0]
            for job in prometheus_config()["scrape_configs"]}
    for name, target in native.items():
        if name in jobs:
            assert jobs[name].split(":")[1] == target.split(":")[1], name


def test_prometheus_and_grafana_mount_their_configuration():
    prometheus = services()["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert option(command(prometheus), "--config.file") == "/etc/prometheus/prometheus.yml"
    assert host_ports(prometheus) == {9090}
    grafana_mounts = {v.split(":")[0]: v.split(":")[1] for v in services()["grafana"]["volumes"]}
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load(
        (EMULATORS / "grafana/provisioning/dashboards/audiary.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [grafana_mounts["./grafana/dashboards"]]


def datasource() -> dict[str, Any]:
    sources = yaml.safe_load(
        (EMULATORS / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert len(sources) == 1
    source: dict[str, Any] = sources[0]
    return source


def test_grafana_datasource_is_the_compose_prometheus():
    source = datasource()
    assert source["type"] == "prometheus"
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus"
    assert url.port == 9090


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EMULATORS / "grafana/dashboards/audiary.json").read_text())
    return data


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


# Grafana fills these in before Prometheus sees the query.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def exported_series() -> set[str]:
    """Names a query may use: EXPORTED, plus the series of each exported histogram."""
    kinds = {}
    for collector in vars(metrics).values():
        if isinstance(collector, Counter | Gauge | Histogram):
            for family in collector.describe():
                kinds[family.name] = family.type
    series = set(metrics.EXPORTED)
    for name in metrics.EXPORTED:
        if kinds.get(name) == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return series


def metric_names(expr: str) -> set[str]:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    parsed = promql_parser.parse(expr)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"select metrics by name, not by matchers only: {expr}"
            found.add(node.name)

    promql_parser.walk(parsed, visit)
    return found


def test_every_panel_query_names_only_exported_metrics():
    allowed = exported_series()
    used: set[str] = set()
    queries = 0
    for panel in panels():
        for target in panel.get("targets", []):
            names_in_query = metric_names(target["expr"])
            assert names_in_query, f"{panel['title']}: a query without a metric"
            assert names_in_query <= allowed, (panel["title"], names_in_query - allowed)
            used |= names_in_query
            queries += 1
    assert queries >= 15
    # Every exported metric is on the dashboard somewhere.
    covered = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used} | used
    assert covered >= metrics.EXPORTED


def test_dashboard_shows_what_the_issue_asks_for():
    titles = " | ".join(p["title"].lower() for p in panels())
    for subject in ("inference load", "error rate", "transcription latency", "real-time factor",
                    "queue", "dead-letter", "tokens", "cost", "services up"):
        assert subject in titles, subject
    rtf = next(p for p in panels() if p["title"] == "Real-time factor")
    expr = rtf["targets"][0]["expr"]
    assert re.search(r"rate\(audiary_inference_seconds_total\[.*\]\)\) / "
                     r"sum by \(model, device\) \(rate\(audiary_audio_seconds_total", expr)


def test_panels_use_the_provisioned_datasource_and_do_not_overlap():
    uid = datasource()["uid"]
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


def test_provision_needs_an_endpoint_for_exactly_each_subscription(recorder):
    partial = {"ingest": "http://ingest:8091/", "transcriber": "http://transcriber:8092/",
               "summarize": "http://summarize:8093/"}
    with pytest.raises(provision.ProvisionError,
                       match=r"missing \['datasets', 'deadletters', 'training', "
                             r"'webhook-delivery', 'webhooks'\]"):
        provision.provision_pubsub(Settings(), partial, emulator_host="pubsub:8085")
    with pytest.raises(provision.ProvisionError, match=r"unknown \['watcher'\]"):
        provision.provision_pubsub(
            Settings(), {**partial, "webhooks": "http://webhooks:8095/",
                         "webhook-delivery": "http://webhooks:8095/",
                         "deadletters": "http://deadletters:8096/",
                         "datasets": "http://learning:8099/",
                         "training": "http://learning:8099/",
                         "watcher": "http://watcher:1/"}, emulator_host="pubsub:8085")
    assert recorder.calls == []


@pytest.mark.parametrize("value", ["ingest", "ingest=", "=http://x/", "ingest=ingest:8091"])
def test_provision_rejects_malformed_endpoints(value, capsys):
    with pytest.raises(SystemExit):
        provision.main(["--endpoint", value])
    assert "SUBSCRIPTION=URL" in capsys.readouterr().err


def test_provision_only_provisions_an_emulator(monkeypatch, capsys):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    assert provision.main([]) == 2
    assert "PUBSUB_EMULATOR_HOST" in capsys.readouterr().err
