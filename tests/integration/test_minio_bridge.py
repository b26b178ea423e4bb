"""The MinIO bridge against the real Pub/Sub emulator, with objects stored through S3BlobStore
on moto's S3 server.

The bodies are MinIO's webhook format (`{"EventName", "Key", "Records"}`, records as MinIO
builds them in cmd/event-notification.go: key escaped with Go's `url.QueryEscape`, ETag without
quotes, user metadata as `X-Amz-Meta-*` headers next to `content-type`). What the bridge
publishes must read back, through the same parser ingest uses, as the ObjectEvent a GCS
notification for that object would give, with the generation S3BlobStore reports.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import grpc
import pytest
from flask.testing import FlaskClient
from google.pubsub_v1.services.subscriber import SubscriberClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from prometheus_client import REGISTRY

from audiary import names
from audiary.adapters.pubsub import (
    PubSubPublisher,
    ensure_pull_subscription,
    ensure_topic,
    pull_messages,
)
from audiary.adapters.s3 import S3BlobStore
from audiary.local import provision
from audiary.local.minio_bridge import count_stats, create_app
from audiary.local.stack import DEAD_LETTER_SUBSCRIPTIONS
from audiary.settings import Settings, load_settings
from audiary.wire.storage_events import (
    PUBSUB_PUBLISHED,
    ObjectEvent,
    notification_message,
    parse_storage_event,
)

from .conftest import LocalServers

pytestmark = pytest.mark.integration

# Keys as people name files: spaces, a plus, a hash, umlauts, an emoji, and a folder.
KEY = "inbox/Tagebuch März/morgen notiz #1 + café 🎙.wav"
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))


@pytest.fixture
def env(emulator_env: LocalServers, monkeypatch: pytest.MonkeyPatch) -> LocalServers:
    # A project of its own: no other test's subscription sees these messages.
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", f"bridge-{uuid.uuid4().hex[:8]}")
    return emulator_env


@pytest.fixture
def settings(env: LocalServers) -> Settings:
    s = load_settings()
    ensure_topic(s.project_id, s.topic_audio_uploaded, emulator_host=s.pubsub_emulator_host)
    ensure_pull_subscription(s.project_id, "uploads", s.topic_audio_uploaded,
                             emulator_host=s.pubsub_emulator_host)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    with create_app(settings=settings, stats=False).test_client() as c:
        yield c


@pytest.fixture
def blobs(settings: Settings) -> S3BlobStore:
    store = S3BlobStore.from_settings(settings)
    store.ensure_bucket(settings.uploads_bucket)
    return store


def minio_record(bucket: str, key: str, *, event: str = "s3:ObjectCreated:Put",
                 etag: str = "", size: int = 0, content_type: str | None = None,
                 user_metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One record as MinIO writes it (fields with Go's omitempty left out when empty)."""
    obj: dict[str, Any] = {"key": quote_plus(key), "sequencer": "1826F3A0C0B1D2E3"}
    if etag:
        obj["eTag"] = etag
    if size:
        obj["size"] = size
    if content_type:
        obj["contentType"] = content_type
    if user_metadata is not None:
        obj["userMetadata"] = dict(user_metadata)
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-01-01T08:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "audiary"},
        "requestParameters": {"principalId": "audiary", "region": "",
                              "sourceIPAddress": "10.0.0.9"},
        "responseElements": {"x-amz-request-id": "1826F3A0C0B1D2E3",
                             "x-minio-origin-endpoint": "http://minio:9000"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "audiary"},
                       "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
        "source": {"host": "10.0.0.9", "port": "", "userAgent": "Boto3/1.40"},
    }


def minio_log(*records: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: MinIO sends one record, with the unescaped `bucket/key` as Key."""
    first = records[0]
    key = f"{first['s3']['bucket']['name']}/{unquote_plus(first['s3']['object']['key'])}"
    return {"EventName": first["eventName"], "Key": key, "Records": list(records)}


def received(settings: Settings, want: int, *, subscription: str = "uploads",
             timeout_s: float = 10.0) -> list[tuple[bytes, dict[str, str]]]:
    """Messages on a subscription: pull until `want` came or a pull comes back empty."""
    got: list[tuple[bytes, dict[str, str]]] = []
    while len(got) < want:
        batch = pull_messages(settings.project_id, subscription, timeout_s=timeout_s,
                              emulator_host=settings.pubsub_emulator_host)
        if not batch:
            break
        got += batch
    return got


def as_ingest_reads_it(data: bytes, attributes: Mapping[str, str]) -> ObjectEvent | None:
    """What ingest makes of a message: functions-framework's CloudEvent of a push."""
    envelope = {"message": {"data": base64.b64encode(data).decode(), "attributes": dict(attributes),
                            "messageId": "1"}, "subscription": "projects/p/subscriptions/ingest"}
    return parse_storage_event(PUBSUB_PUBLISHED, envelope)


def test_an_upload_to_minio_reads_back_as_its_gcs_notification(client, settings, blobs):
    stored = blobs.put(settings.uploads_bucket, KEY, AUDIO, content_type="audio/wav",
                       metadata={"recorded-at": "2026-01-01T07:59:00+01:00"})
    stat = blobs.stat(settings.uploads_bucket, KEY)
    assert stat is not None
    assert stat.generation == stored.generation
    body = minio_log(minio_record(
        settings.uploads_bucket, KEY, etag=stat.generation, size=len(AUDIO),
        content_type="audio/wav",
        user_metadata={"content-type": "audio/wav",
                       "X-Amz-Meta-Recorded-At": "2026-01-01T07:59:00+01:00"},
    ))

    response = client.post("/", json=body)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["published"] == 1
    [(data, attributes)] = received(settings, 1)
    # The notification GCS would send for the same object, as the native watcher builds it.
    gcs = ObjectEvent(bucket=stat.bucket, name=stat.key, generation=stat.generation,
                      size=stat.size, content_type=stat.content_type, metadata=stat.metadata)
    gcs_data, gcs_attributes = notification_message(gcs)
    assert data == gcs_data
    assert {k: attributes[k] for k in gcs_attributes} == gcs_attributes
    assert set(attributes) - set(gcs_attributes) <= {"traceparent", "tracestate"}
    assert as_ingest_reads_it(data, attributes) == as_ingest_reads_it(gcs_data, gcs_attributes)
    assert as_ingest_reads_it(data, attributes) == gcs
    assert gcs.name == KEY
    assert gcs.metadata == {"recorded-at": "2026-01-01T07:59:00+01:00"}


def test_a_multipart_upload_keeps_the_etag_s3blobstore_reports(client, settings, blobs, tmp_path):
    # Above the transfer threshold boto3 uploads in parts: the ETag becomes "<md5>-<parts>".
    path = tmp_path / "long.wav"
    path.write_bytes(AUDIO + bytes(9 * 1024 * 1024))
    key = "inbox/long recording.wav"
    info = blobs.upload_file(settings.uploads_bucket, key, path, content_type="audio/wav")
    assert "-" in info.generation
    body = minio_log(minio_record(settings.uploads_bucket, key,
                                  event="s3:ObjectCreated:CompleteMultipartUpload",
                                  etag=info.generation, size=info.size, content_type="audio/wav",
                                  user_metadata={"content-type": "audio/wav"}))

    assert client.post("/", json=body).status_code == 200

    [(data, attributes)] = received(settings, 1)
    event = as_ingest_reads_it(data, attributes)
    assert event is not None
    assert (event.name, event.generation, event.size) == (key, info.generation, info.size)


def test_only_new_objects_in_the_inbox_are_published(client, settings):
    uploads = settings.uploads_bucket
    ignored = [
        minio_record(uploads, "inbox/gone.wav", event="s3:ObjectRemoved:Delete"),
        minio_record(uploads, "inbox/a.wav", event="s3:ObjectCreated:PutTagging", etag="e1",
                     size=10),
        # S3BlobStore.update_metadata copies an object onto itself: not a new upload.
        minio_record(uploads, "inbox/a.wav", event="s3:ObjectCreated:Copy", etag="e2", size=10),
        minio_record(uploads, "inbox/a.wav", event="s3:ObjectAccessed:Get"),
        minio_record(uploads, "quarantine/job/a.wav", etag="e3", size=10),
        minio_record(names.BUCKET_WORK, "inbox/a.wav", etag="e4", size=10),
        minio_record(uploads, "inbox/folder/", etag="e5"),
    ]
    wanted = minio_record(uploads, "inbox/new.wav", etag="abc123", size=10)

    for record in ignored:
        response = client.post("/", json=minio_log(record))
        assert response.status_code == 200, record["eventName"]
        assert response.get_json()["published"] == 0
    assert client.post("/", json=minio_log(*ignored, wanted)).get_json()["published"] == 1

    messages = received(settings, 2, timeout_s=3.0)
    assert [as_ingest_reads_it(d, a) for d, a in messages] == [ObjectEvent(
        bucket=uploads, name="inbox/new.wav", generation="abc123", size=10)]


@pytest.mark.parametrize(("body", "problem"), [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b"{}", "no Records"),
    (b'{"EventName": "s3:ObjectCreated:Put", "Records": {}}', "no Records"),
    (b'{"Records": ["s3:ObjectCreated:Put"]}', "Records[0] is not an object"),
    (b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}', "Records[0].s3"),
    (b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
     b' "object": {}}}]}', "key"),
])
def test_malformed_bodies_get_400_and_publish_nothing(client, settings, body, problem):
    response = client.post("/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert problem in response.get_json()["error"]


@pytest.mark.parametrize("change", [
    {"eTag": None}, {"eTag": ""}, {"size": "ten"}, {"size": -1}, {"contentType": 7},
    {"userMetadata": ["X-Amz-Meta-A"]},
])
def test_an_upload_record_without_its_object_facts_is_malformed(client, settings, change):
    record = minio_record(settings.uploads_bucket, "inbox/a.wav", etag="abc", size=10,
                          content_type="audio/wav", user_metadata={})
    obj = record["s3"]["object"]
    for field, value in change.items():
        if value is None:
            obj.pop(field)
        else:
            obj[field] = value
    # A good record first: nothing is published unless the whole body is well formed.
    good = minio_record(settings.uploads_bucket, "inbox/b.wav", etag="def", size=10)
    assert client.post("/", json=minio_log(good, record)).status_code == 400
    assert received(settings, 1, timeout_s=1.0) == []


def test_connectivity_checks_get_200(client):
    assert client.post("/", data=b"").status_code == 200  # an empty test POST
    assert client.post("/", json={"EventName": "s3:TestEvent"}).status_code == 200
    assert client.post("/", json={"Service": "Amazon S3", "Event": "s3:TestEvent"}).status_code \
        == 200
    assert client.head("/").status_code == 200  # MinIO's liveness probe of the target
    assert client.get("/healthz").status_code == 200
    assert "audiary_http_requests_total" in client.get("/metrics").get_data(as_text=True)
    assert REGISTRY.get_sample_value("audiary_http_requests_total", {
        "service": "bridge", "route": "/", "method": "POST", "status": "200"})


class FailingPublisher:
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        raise ConnectionError("the emulator is down")


def test_a_failed_publish_gets_500_so_minio_sends_again(settings):
    app = create_app(FailingPublisher(), settings=settings, stats=False)  # type: ignore[arg-type]
    body = minio_log(minio_record(settings.uploads_bucket, "inbox/a.wav", etag="abc", size=1))
    assert app.test_client().post("/", json=body).status_code == 500


def test_compose_provisioning_creates_what_the_native_stack_does(env, monkeypatch):
    """`python -m audiary.local.provision` with the compose file's endpoints, on the emulator."""
    settings = load_settings()
    endpoints = {"ingest": "http://ingest:8091/", "transcriber": "http://transcriber:8092/",
                 "summarize": "http://summarize:8093/", "webhooks": "http://webhooks:8095/",
                 "webhook-delivery": "http://webhooks:8095/",
                 "deadletters": "http://deadletters:8096/",
                 "datasets": "http://learning:8099/", "training": "http://learning:8099/"}
    argv = [arg for sub, url in endpoints.items() for arg in ("--endpoint", f"{sub}={url}")]
    assert provision.main(["--wait-s", "30", *argv]) == 0
    assert provision.main(argv) == 0  # idempotent

    host = str(settings.pubsub_emulator_host)
    client = SubscriberClient(transport=SubscriberGrpcTransport(
        host=host, channel=grpc.insecure_channel(host)))
    for route in provision.push_routes(settings):
        sub = client.get_subscription(
            subscription=f"projects/{settings.project_id}/subscriptions/{route.subscription}")
        assert sub.push_config.push_endpoint == endpoints[route.subscription]
        assert sub.topic.endswith(f"/topics/{route.topic}")
        assert sub.ack_deadline_seconds == settings.ack_deadline_s == 600
        assert sub.dead_letter_policy.dead_letter_topic.endswith(f"/{route.dead_letter_topic}")
        assert sub.dead_letter_policy.max_delivery_attempts == settings.max_attempts
        dead = client.get_subscription(
            subscription=f"projects/{settings.project_id}/subscriptions/{route.dead_letter_topic}")
        assert not dead.push_config.push_endpoint
        assert "retry_policy" not in dead  # so that dead letters can be counted
    for route in provision.dead_letter_routes(settings):
        consumer = client.get_subscription(
            subscription=f"projects/{settings.project_id}/subscriptions/{route.subscription}")
        assert consumer.topic.endswith(f"/topics/{route.topic}")
        assert consumer.push_config.push_endpoint == endpoints["deadletters"]
        assert not consumer.dead_letter_policy.dead_letter_topic


def test_the_bridge_keeps_the_dead_letter_and_job_gauges(env):
    settings = load_settings()
    publisher = PubSubPublisher.from_settings(settings)
    for subscription in DEAD_LETTER_SUBSCRIPTIONS:
        ensure_topic(settings.project_id, subscription, emulator_host=settings.pubsub_emulator_host)
        ensure_pull_subscription(settings.project_id, subscription, subscription,
                                 retry_policy=False, emulator_host=settings.pubsub_emulator_host)
    dead = names.dead_letter_topic(names.SUBSCRIPTION_TRANSCRIBER)
    for _ in range(3):
        publisher.publish(dead, b"{}", {"job_id": "j"})
    stop = threading.Event()
    stop.set()  # one round, then return

    count_stats(settings, 60.0, stop)

    def gauge(subscription: str) -> float | None:
        return REGISTRY.get_sample_value("audiary_dead_letter_messages",
                                         {"subscription": subscription})

    assert gauge(dead) == 3
    assert gauge(names.dead_letter_topic(names.SUBSCRIPTION_INGEST)) == 0
    assert REGISTRY.get_sample_value("audiary_jobs_in_state", {"status": "QUEUED"}) is not None
    # Counting handed the messages back: they still wait for whoever inspects them.
    assert len(received(settings, 3, subscription=dead, timeout_s=5.0)) == 3
