"""Tracing on Google Cloud: the Cloud Trace exporter, the resource Google's detector sees and
the `X-Cloud-Trace-Context` header of Google's front end, without network or credentials."""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest
from google.auth.credentials import AnonymousCredentials
from opentelemetry import propagate, trace
from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
from opentelemetry.resourcedetector.gcp_resource_detector import _metadata
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from audiary.observability import telemetry
from audiary.observability.http import instrument_flask
from audiary.settings import Settings
from tests.spans import finished_spans

GCP = Settings(otel_exporter="gcp", project_id="trace-proj")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Application Default Credentials that need no key file and make no call."""
    monkeypatch.setattr("google.auth.default",
                        lambda *args, **kwargs: (AnonymousCredentials(), None))


@pytest.fixture
def cloud_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Cloud Run instance shows the detector: its K_* variables and a metadata server."""
    monkeypatch.setenv("K_CONFIGURATION", "audiary-transcriber")
    monkeypatch.setenv("K_SERVICE", "audiary-transcriber")
    monkeypatch.setenv("K_REVISION", "audiary-transcriber-00007-abc")
    monkeypatch.setattr(_metadata, "is_available", lambda: True)
    monkeypatch.setattr(_metadata, "get_metadata", lambda: {
        "project": {"projectId": "trace-proj"},
        "instance": {"id": "0069c7a0", "region": "projects/123/regions/europe-west4",
                     "zone": "projects/123/zones/europe-west4-1", "machineType": "",
                     "name": "", "attributes": {}},
    })


def test_the_gcp_setting_selects_the_cloud_trace_exporter_for_the_project(no_credentials):
    with pytest.warns(DeprecationWarning, match="CloudTraceSpanExporter is deprecated"):
        exporter = telemetry.span_exporter(GCP)
    assert isinstance(exporter, CloudTraceSpanExporter)
    assert exporter.project_id == "trace-proj"
    assert telemetry.span_exporter(Settings(otel_exporter="none")) is None


def test_on_cloud_run_the_resource_names_the_service_revision_and_region(
        no_credentials, cloud_run):
    with pytest.warns(DeprecationWarning, match="CloudTraceSpanExporter is deprecated"):
        provider = telemetry.tracer_provider("transcriber", GCP)
    attributes = dict(provider.resource.attributes)
    assert attributes["service.name"] == "audiary-transcriber"
    assert attributes["cloud.provider"] == "gcp"
    assert attributes["cloud.platform"] == "gcp_cloud_run"
    assert attributes["cloud.account.id"] == "trace-proj"
    assert attributes["cloud.region"] == "europe-west4"
    assert attributes["faas.name"] == "audiary-transcriber"
    assert attributes["faas.version"] == "audiary-transcriber-00007-abc"
    assert attributes["faas.instance"] == "0069c7a0"


def test_without_cloud_trace_no_detector_runs(monkeypatch: pytest.MonkeyPatch):
    def fail() -> bool:
        raise AssertionError("the metadata server was asked")

    monkeypatch.setattr(_metadata, "is_available", fail)
    provider = telemetry.tracer_provider("ingest", Settings(otel_exporter="none"))
    assert "cloud.provider" not in provider.resource.attributes


def test_the_front_ends_header_is_read_only_with_cloud_trace_and_traceparent_wins():
    cloud = {"X-Cloud-Trace-Context": f"{TRACE_ID}/1311768467294899695;o=1"}
    joined = trace.get_current_span(telemetry.propagator(GCP).extract(cloud)).get_span_context()
    assert f"{joined.trace_id:032x}" == TRACE_ID
    assert joined.span_id == 1311768467294899695
    assert joined.is_remote

    plain = telemetry.propagator(Settings()).extract(cloud)
    assert not trace.get_current_span(plain).get_span_context().is_valid

    other = "0af7651916cd43dd8448eb211c80319c"
    both = {**cloud, "traceparent": f"00-{other}-b7ad6b7169203331-01"}
    context = trace.get_current_span(telemetry.propagator(GCP).extract(both)).get_span_context()
    assert f"{context.trace_id:032x}" == other


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with finished_spans() as exporter:
        yield exporter


@pytest.fixture
def cloud_trace_propagation() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(telemetry.propagator(GCP))
    yield
    propagate.set_global_textmap(before)


def test_a_request_through_googles_front_end_joins_its_trace(spans, cloud_trace_propagation):
    app = flask.Flask("front-end")
    instrument_flask(app, "tests")

    @app.get("/v1/jobs")
    def jobs() -> str:
        return "[]"

    # o=0: the front end did not sample its own span; the request is traced all the same.
    response = app.test_client().get(
        "/v1/jobs", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/42;o=0"})
    assert response.status_code == 200
    [server] = [s for s in spans.get_finished_spans() if s.name == "GET /v1/jobs"]
    assert server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None
    assert server.parent.span_id == 42
    assert server.context.trace_flags.sampled
