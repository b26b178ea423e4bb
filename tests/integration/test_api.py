"""The HTTPS API on the real emulators: auth, rate limits, uploads, SSRF refusals, feedback,
deletion, pagination, ID tokens, and the OpenAPI document against the routes."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from audiary.domain.jobs import JobStatus
from audiary.domain.keys import ApiKey, new_key
from audiary.domain.transcript import Segment, Transcript
from audiary.entrypoints.api.app import create_app
from audiary.entrypoints.api.openapi import OPERATIONS, openapi_document
from audiary.services.ingest import ingest
from audiary.settings import Settings
from audiary.wire.storage_events import ObjectEvent
from audiary.wiring import stores
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(emulator_env, tmp_path) -> Settings:
    run = datetime.now(UTC).strftime("%H%M%S%f")
    s = Settings(
        uploads_bucket=f"up-{run}", work_bucket=f"work-{run}",
        transcripts_bucket=f"tr-{run}", feedback_bucket=f"fb-{run}",
        jobs_collection=f"jobs-{run}", notes_collection=f"notes-{run}",
        feedback_collection=f"feedback-{run}", api_keys_collection=f"keys-{run}",
        webhooks_collection=f"hooks-{run}", topic_audio_uploaded=f"uploaded-{run}",
        topic_transcribe_chunk=f"chunks-{run}", topic_transcript_ready=f"ready-{run}",
        topic_transcript_corrected=f"corrected-{run}", state_dir=tmp_path,
        api_rate_per_s=1000, api_burst=1000,
    )
    svc = stores(s)
    for bucket in (s.uploads_bucket, s.work_bucket, s.transcripts_bucket, s.feedback_bucket):
        svc.blobs.ensure_bucket(bucket)
    from audiary.adapters.pubsub import ensure_topic

    for topic in (s.topic_audio_uploaded, s.topic_transcribe_chunk, s.topic_transcript_ready,
                  s.topic_transcript_corrected):
        ensure_topic(s.project_id, topic, emulator_host=s.pubsub_emulator_host)
    return s


def make_key(settings: Settings, name: str = "k") -> str:
    full, key_id, digest = new_key()
    stores(settings).keys.put_key(
        ApiKey(key_id=key_id, name=name, secret_hash=digest, created_at=datetime.now(UTC)))
    return full


@pytest.fixture
def client(settings):
    return create_app(lambda: settings).test_client()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload_via_api(client, settings, key: str, path: Path) -> str:
    grant = client.post("/v1/uploads", headers=auth(key), json={
        "filename": path.name, "content_type": "audio/flac", "size_bytes": path.stat().st_size,
    })
    assert grant.status_code == 201, grant.json
    body = grant.json
    put = httpx.put(body["upload_url"], content=path.read_bytes(), headers=body["headers"])
    assert put.status_code == 200, put.text
    return body["job_id"]


def ingest_uploaded(settings, job_id: str) -> None:
    """What the GCS notification does next: ingest the uploaded object."""
    svc = stores(settings)
    job = svc.jobs.get_job(job_id)
    info = svc.blobs.stat(job.source.bucket, job.source.name)
    ingest(svc, ObjectEvent(info.bucket, info.key, info.generation, info.size))


@pytest.fixture(scope="module")
def flac(tmp_path_factory) -> Path:
    return encode(decode(DEMO_SAMPLE, seconds=6.0), tmp_path_factory.mktemp("a") / "day.flac")


def test_healthz_needs_no_key(client):
    assert client.get("/healthz").json == {"status": "ok"}


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "no credentials"),
        ({"Authorization": "Basic abc"}, "must be 'Bearer"),
        ({"Authorization": "Bearer ak_nope"}, "malformed"),
        ({"X-API-Key": "ak_0123456789ab_" + "x" * 43}, "not valid"),
        ({"Authorization": "Bearer something-else"}, "neither an Audiary API key"),
        ({"Authorization": "Bearer a.b.c"}, "ID tokens are not accepted"),
    ],
)
def test_requests_without_a_good_key_get_401_saying_why(client, headers, needle):
    for path in ("/v1/jobs", "/v1/openapi.json", "/v1/jobs/x/transcript"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthenticated"
        assert needle in response.json["error"]["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_and_other_keys_jobs(client, settings, flac):
    mine, theirs = make_key(settings, "mine"), make_key(settings, "theirs")
    job_id = upload_via_api(client, settings, mine, flac)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(mine)).status_code == 200
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript",
                 f"/v1/jobs/{job_id}/notes"):
        other = client.get(path, headers=auth(theirs))
        assert other.status_code == 404
        assert other.json["error"]["message"] == f"no job {job_id}"
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth(theirs)).status_code == 404
    assert client.get("/v1/jobs", headers=auth(theirs)).json["jobs"] == []

    key_id = mine.split("_")[1]
    stores(settings).keys.revoke_key(key_id, datetime.now(UTC))
    revoked = client.get(f"/v1/jobs/{job_id}", headers=auth(mine))
    assert revoked.status_code == 401
    assert f"{key_id} was revoked" in revoked.json["error"]["message"]


def test_rate_limit_answers_429_with_retry_after(settings):
    slow = settings.model_copy(update={"api_rate_per_s": 0.5, "api_burst": 3})
    client = create_app(lambda: slow).test_client()
    key, other = make_key(slow), make_key(slow)
    codes = [client.get("/v1/jobs", headers=auth(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/jobs", headers=auth(key))
    assert limited.json["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) == 2  # one token at 0.5/s
    assert client.get("/v1/jobs", headers=auth(other)).status_code == 200  # per key


def test_signed_upload_becomes_the_announced_job(client, settings, flac):
    key = make_key(settings)
    job_id = upload_via_api(client, settings, key, flac)
    before = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
    assert before["status"] == "RECEIVED"
    ingest_uploaded(settings, job_id)
    job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
    assert job["status"] == "QUEUED"
    assert job["progress"]["chunks_total"] >= 1
    assert job["duration_s"] == pytest.approx(6.0, abs=0.1)


def test_upload_request_is_validated(client, settings):
    key = make_key(settings)
    too_big = client.post("/v1/uploads", headers=auth(key), json={
        "filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10**12})
    assert too_big.status_code == 413
    bad = client.post("/v1/uploads", headers=auth(key), json={"filename": "a.wav"})
    assert bad.status_code == 422
    assert "content_type: Field required" in bad.json["error"]["message"]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1/a.wav", "https"),
        ("https://127.0.0.1/a.wav", "loopback"),
        ("https://169.254.169.254/computeMetadata/v1/", "169.254.169.254"),
        ("https://10.1.2.3/a.wav", "private"),
        ("https://192.168.0.10/a.wav", "private"),
        ("https://[::1]/a.wav", "loopback"),
        ("https://metadata.google.internal/", "metadata"),
    ],
)
def test_audio_url_to_private_places_is_refused(client, settings, url, needle):
    response = client.post("/v1/jobs", headers=auth(make_key(settings)), json={"audio_url": url})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_audio_url"
    assert needle in response.json["error"]["message"]


class _Redirector(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/audio.flac":
            body = self.server.audio  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Type", "audio/flac")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def audio_server(flac):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    server.audio = flac.read_bytes()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_audio_url_is_fetched_and_redirects_to_metadata_are_refused(settings, audio_server,
                                                                    flac):
    dev = settings.model_copy(update={"allow_private_urls": True, "allow_http_urls": True})
    client = create_app(lambda: dev).test_client()
    key = make_key(dev)
    created = client.post("/v1/jobs", headers=auth(key),
                          json={"audio_url": f"{audio_server}/audio.flac"})
    assert created.status_code == 202, created.json
    job = stores(dev).jobs.get_job(created.json["job_id"])
    assert stores(dev).blobs.get(job.source.bucket, job.source.name) == flac.read_bytes()

    strict = settings.model_copy(update={"allow_http_urls": True})
    # The first hop is allowed only for 127.0.0.1 in dev mode; the redirect target never is.
    refused = create_app(lambda: dev).test_client().post(
        "/v1/jobs", headers=auth(key), json={"audio_url": f"{audio_server}/elsewhere"})
    assert refused.status_code in (202, 422)
    blocked = create_app(lambda: strict).test_client().post(
        "/v1/jobs", headers=auth(make_key(strict)), json={"audio_url": f"{audio_server}/x"})
    assert blocked.status_code == 422
    assert "loopback" in blocked.json["error"]["message"]


def test_job_from_an_inbox_object_and_conflicts(client, settings, flac):
    svc = stores(settings)
    info = svc.blobs.upload_file(settings.uploads_bucket, "inbox/team/day.flac", flac)
    mine, theirs = make_key(settings), make_key(settings)
    created = client.post("/v1/jobs", headers=auth(mine), json={"object": info.key})
    assert created.status_code == 202
    again = client.post("/v1/jobs", headers=auth(mine), json={"object": info.key})
    assert again.json["job_id"] == created.json["job_id"]
    conflict = client.post("/v1/jobs", headers=auth(theirs), json={"object": info.key})
    assert conflict.status_code == 409
    outside = client.post("/v1/jobs", headers=auth(mine), json={"object": "secret/x.wav"})
    assert outside.status_code == 422
    both = client.post("/v1/jobs", headers=auth(mine),
                       json={"object": info.key, "audio_url": "https://example.com/a.wav"})
    assert both.status_code == 422
    assert "exactly one" in both.json["error"]["message"]


def finished_job(client, settings, key, flac) -> str:
    """A job through ingest with a stored transcript, as the transcriber leaves it."""
    job_id = upload_via_api(client, settings, key, flac)
    ingest_uploaded(settings, job_id)
    svc = stores(settings)
    transcript = Transcript(job_id=job_id, segments=[
        Segment(start=0.0, end=2.0, text=" Monday, the third of November."),
        Segment(start=2.0, end=5.5, text=" I met Sarah."),
    ])
    svc.blobs.put(settings.transcripts_bucket, f"{job_id}.json",
                  transcript.model_dump_json().encode())
    for status in (JobStatus.TRANSCRIBING, JobStatus.TRANSCRIBED):
        svc.jobs.advance(job_id, status, fields={
            "transcript_uri": f"{settings.transcripts_bucket}/{job_id}.json",
            "text": transcript.text})
    return job_id


def test_transcript_formats_and_not_ready(client, settings, flac):
    key = make_key(settings)
    pending = upload_via_api(client, settings, key, flac)
    not_ready = client.get(f"/v1/jobs/{pending}/transcript", headers=auth(key))
    assert not_ready.status_code == 409
    assert "no transcript yet" in not_ready.json["error"]["message"]
    job_id = finished_job(client, settings, key, flac)
    url = f"/v1/jobs/{job_id}/transcript"
    assert client.get(url, headers=auth(key)).json["segments"][1]["text"] == " I met Sarah."
    txt = client.get(f"{url}?format=txt", headers=auth(key))
    assert txt.data.decode() == "Monday, the third of November. I met Sarah.\n"
    assert client.get(f"{url}?format=srt", headers=auth(key)).data.decode().startswith("1\n00:")
    assert client.get(f"{url}?format=vtt", headers=auth(key)).data.decode().startswith("WEBVTT")
    assert client.get(f"{url}?format=doc", headers=auth(key)).status_code == 400


def test_feedback_lands_in_both_buckets_with_metadata(client, settings, flac):
    key = make_key(settings)
    job_id = finished_job(client, settings, key, flac)
    response = client.post(f"/v1/jobs/{job_id}/feedback", headers=auth(key), json={
        "corrected_transcript": "Monday, the third of November. I met Sara.", "flagged": True})
    assert response.status_code == 201, response.json
    svc = stores(settings)
    stored = svc.notes.list_feedback(job_id)
    assert [(f.flagged, f.corrected_transcript) for f in stored] == [
        (True, "Monday, the third of November. I met Sara.")]
    copy_uri = response.json["feedback_object"].removeprefix("gs://")
    bucket, _, name = copy_uri.partition("/")
    assert bucket == settings.feedback_bucket
    copied = svc.blobs.stat(bucket, name)
    assert copied.metadata["corrected_transcript"] == "Monday, the third of November. I met Sara."
    assert datetime.fromisoformat(copied.metadata["timestamp"]) > datetime.now(UTC) - timedelta(1)
    job = svc.jobs.get_job(job_id)
    original = svc.blobs.stat(job.source.bucket, job.source.name)
    assert original.metadata["transcript"] == "Monday, the third of November. I met Sarah."
    assert original.metadata["flagged"] == "true"
    assert original.metadata["timestamp"] == copied.metadata["timestamp"]
    assert svc.blobs.get(bucket, name) == flac.read_bytes()
    empty = client.post(f"/v1/jobs/{job_id}/feedback", headers=auth(key), json={})
    assert empty.status_code == 422


def test_delete_removes_audio_transcript_note_and_job(client, settings, flac):
    key = make_key(settings)
    job_id = finished_job(client, settings, key, flac)
    svc = stores(settings)
    source = svc.jobs.get_job(job_id).source
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth(key)).status_code == 204
    assert svc.jobs.get_job(job_id) is None
    assert svc.blobs.stat(source.bucket, source.name) is None
    assert svc.blobs.stat(settings.transcripts_bucket, f"{job_id}.json") is None
    assert svc.blobs.list(settings.work_bucket, f"{job_id}/") == []
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(key)).status_code == 404


def test_jobs_are_paginated_newest_first(client, settings, flac):
    key = make_key(settings)
    made = [upload_via_api(client, settings, key, flac) for _ in range(5)]
    seen, token = [], None
    while True:
        query = "limit=2" + (f"&page_token={token}" if token else "")
        page = client.get(f"/v1/jobs?{query}", headers=auth(key)).json
        seen += [j["job_id"] for j in page["jobs"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == list(reversed(made))
    assert client.get("/v1/jobs?limit=0", headers=auth(key)).status_code == 400
    assert client.get("/v1/jobs?page_token=%%%", headers=auth(key)).status_code == 400


def test_webhooks_are_registered_per_key(client, settings):
    key, other = make_key(settings), make_key(settings)
    created = client.post("/v1/webhooks", headers=auth(key),
                          json={"url": "https://93.184.216.34/hook"})
    assert created.status_code == 201
    assert len(created.json["secret"]) > 30
    # A Standard Webhooks secret: whsec_ and the base64 of a key of 24 to 64 bytes.
    secret = created.json["secret"]
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 64
    listed = client.get("/v1/webhooks", headers=auth(key)).json["webhooks"]
    assert [h["url"] for h in listed] == ["https://93.184.216.34/hook"]
    assert "secret" not in listed[0]
    assert client.get("/v1/webhooks", headers=auth(other)).json["webhooks"] == []
    hook_id = created.json["webhook_id"]
    assert client.delete(f"/v1/webhooks/{hook_id}", headers=auth(other)).status_code == 404
    assert client.delete(f"/v1/webhooks/{hook_id}", headers=auth(key)).status_code == 204
    private = client.post("/v1/webhooks", headers=auth(key), json={"url": "https://10.0.0.1/h"})
    assert private.status_code == 422


def test_openapi_document_matches_the_routes(client, settings):
    doc = client.get("/v1/openapi.json", headers=auth(make_key(settings))).json
    assert doc["openapi"].startswith("3.1")
    app = create_app(lambda: settings)
    routes = {
        (method.lower(), rule.rule.replace("<", "{").replace(">", "}"))
        for rule in app.url_map.iter_rules()
        # The web page's files are served beside the API, not part of it.
        if rule.endpoint not in {"static", "web_page", "web_asset", "web_config"}
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
    assert doc == json.loads(json.dumps(openapi_document()))
    assert {op.path for op in OPERATIONS} == set(doc["paths"])


def test_openapi_document_describes_the_signed_webhook():
    import importlib.resources

    import jsonschema

    doc = json.loads(json.dumps(openapi_document()))
    meta = importlib.resources.files("openapi_spec_validator").joinpath(
        "resources/schemas/v3.1/schema.json").read_text()
    jsonschema.Draft202012Validator(json.loads(meta)).validate(doc)
    hook = doc["webhooks"]["job.finished"]["post"]
    headers = {p["name"]: p for p in hook["parameters"] if p["in"] == "header"}
    assert [n for n, p in headers.items() if p["required"]] == [
        "webhook-id", "webhook-timestamp", "webhook-signature"]
    assert [n for n, p in headers.items() if p.get("deprecated")] == [
        "Audiary-Timestamp", "Audiary-Signature", "Audiary-Delivery"]
    assert "Standard Webhooks" in hook["description"]
    event = doc["components"]["schemas"]["WebhookEvent"]
    assert set(event["required"]) == {"event", "job_id", "status", "error", "duration_s",
                                      "transcript", "notes"}
    assert "whsec_" in doc["components"]["schemas"]["WebhookCreated"]["properties"]["secret"][
        "description"]
