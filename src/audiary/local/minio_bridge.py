"""MinIO bucket notifications as GCS notifications, for the compose profile.

MinIO posts each bucket event to a webhook as `{"EventName", "Key", "Records": [...]}` with
S3-style records whose object key is URL-encoded (Go's `url.QueryEscape`: a space is `+`).
For every new object under the inbox prefix of the uploads bucket this app publishes on
`audio-uploaded` the message a GCS `JSON_API_V1` notification would carry
(`notification_message`), so ingest cannot tell MinIO from GCS.

The generation is the object's ETag, as `S3BlobStore` reports it, so job ids agree.

- `POST /`: 200 once every new object in the body is published; 400 for a body that is not a
  MinIO event (sending it again cannot help); 500 when publishing fails (MinIO keeps the
  event in its queue directory and sends it again; ingest drops the duplicates). An empty
  body or an `s3:TestEvent` is a connectivity test and gets 200.
- `HEAD /`, `GET /`: 200 (MinIO probes the endpoint with HEAD before it sends events).
- `GET /healthz`: 200. `GET /metrics`: Prometheus metrics, including the stack-wide job and
  dead-letter gauges that the native stack's watcher keeps (see `count_stats`).

Each notification starts the upload's trace, as the native watcher does (W3C trace context
in the message attributes).

Run: gunicorn --bind :8090 'audiary.local.minio_bridge:create_app()'
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask, Response, jsonify, request
from opentelemetry.trace import SpanKind

from audiary import wiring
from audiary.errors import BadEventError
from audiary.observability import telemetry
from audiary.observability.http import instrument_flask
from audiary.ports import Publisher
from audiary.settings import Settings, load_settings
from audiary.wire.messages import inject_trace
from audiary.wire.storage_events import ObjectEvent, notification_message

log = logging.getLogger(__name__)

SERVICE = "bridge"
TEST_EVENT = "s3:TestEvent"
# The events that create a new object generation, as GCS OBJECT_FINALIZE does. MinIO's "put"
# filter also sends Copy, PutTagging, PutRetention and the like: GCS finalizes nothing for
# tags or retention, and S3BlobStore.update_metadata is a copy of an object onto itself
# (after which a multipart upload's ETag changes), so a Copy would start a second job for
# audio that only got new metadata.
FINALIZE_EVENTS = frozenset({
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:CompleteMultipartUpload",
})
USER_METADATA_PREFIX = "x-amz-meta-"


def _field(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise BadEventError(f"{where}.{key} is missing or not a {kind.__name__}")
    return value


def _metadata(user_metadata: Any) -> dict[str, str]:
    """User metadata as S3BlobStore reports it: `x-amz-meta-` stripped, keys lower-cased.

    MinIO's `userMetadata` also carries system headers such as `content-type`: those are
    not user metadata and are left out.
    """
    if user_metadata is None:
        return {}
    if not isinstance(user_metadata, Mapping):
        raise BadEventError("s3.object.userMetadata is not an object")
    return {
        str(k).lower().removeprefix(USER_METADATA_PREFIX): str(v)
        for k, v in user_metadata.items()
        if str(k).lower().startswith(USER_METADATA_PREFIX)
    }


def _record(record: Any, index: int) -> tuple[str, str, str, Mapping[str, Any]]:
    """(event name, bucket, unquoted key, object) of one record."""
    where = f"Records[{index}]"
    if not isinstance(record, Mapping):
        raise BadEventError(f"{where} is not an object")
    name = _field(record, "eventName", str, where)
    s3 = _field(record, "s3", Mapping, where)
    bucket = _field(_field(s3, "bucket", Mapping, f"{where}.s3"), "name", str,
                    f"{where}.s3.bucket")
    obj = _field(s3, "object", Mapping, f"{where}.s3")
    key = unquote_plus(_field(obj, "key", str, f"{where}.s3.object"))
    if not bucket or not key:
        raise BadEventError(f"{where} names no bucket or no object")
    return name, bucket, key, obj


def _object_event(bucket: str, key: str, obj: Mapping[str, Any], index: int) -> ObjectEvent:
    where = f"Records[{index}].s3.object"
    etag = _field(obj, "eTag", str, where).strip('"')
    if not etag:
        raise BadEventError(f"{where}.eTag is empty")
    size = obj.get("size", 0)  # MinIO leaves a zero size out
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadEventError(f"{where}.size is not a byte count")
    content_type = obj.get("contentType")
    if content_type is not None and not isinstance(content_type, str):
        raise BadEventError(f"{where}.contentType is not a string")
    return ObjectEvent(
        bucket=bucket,
        name=key,
        generation=etag,
        size=size,
        content_type=content_type or None,
        metadata=_metadata(obj.get("userMetadata")),
    )


def is_test_event(payload: Any) -> bool:
    """An empty body or an `s3:TestEvent`: a connectivity test, not a bucket event."""
    if payload is None:
        return True
    return isinstance(payload, Mapping) and TEST_EVENT in (
        payload.get("EventName"), payload.get("Event")
    )


def finalized_objects(payload: Any, settings: Settings) -> list[ObjectEvent]:
    """The new objects a MinIO webhook body reports under the inbox of the uploads bucket.

    Other events (removals, tagging, copies) and objects elsewhere are left out, as a GCS
    notification on the inbox would leave them out. Raises `BadEventError` when the body is
    not MinIO's event shape, before anything is published.
    """
    if not isinstance(payload, Mapping):
        raise BadEventError("the body is not a JSON object")
    records = payload.get("Records")
    if not isinstance(records, list):
        raise BadEventError("the body has no Records list")
    found = []
    for index, record in enumerate(records):
        name, bucket, key, obj = _record(record, index)
        if name not in FINALIZE_EVENTS:
            log.info("ignored %s on %s/%s", name, bucket, key)
        elif (bucket != settings.uploads_bucket or not key.startswith(settings.inbox_prefix)
              or key.endswith("/")):
            log.info("ignored %s/%s: not an upload in the inbox", bucket, key)
        else:
            found.append(_object_event(bucket, key, obj, index))
    return found


def count_stats(settings: Settings, interval_s: float, stop: threading.Event) -> None:
    """Refresh the stack-wide gauges every `interval_s`: the watcher's job in the native stack."""
    from audiary.local.stack import DEAD_LETTER_SUBSCRIPTIONS
    from audiary.local.watcher import BucketWatcher

    watcher = BucketWatcher(wiring.stores(settings))
    while True:
        try:
            watcher.refresh_stats(DEAD_LETTER_SUBSCRIPTIONS)
        except Exception:  # a restarting emulator must not end the counting
            log.exception("counting jobs and dead letters failed; retrying")
        if stop.wait(interval_s):
            return


def create_app(
    publisher: Publisher | None = None,
    settings: Settings | None = None,
    *,
    stats: bool = True,
) -> Flask:
    """Build the bridge; settings are read and the Pub/Sub client is made once, here.

    With `stats`, a thread keeps `audiary_jobs_in_state` and `audiary_dead_letter_messages`
    current, as the native stack's watcher does (compose has no watcher: MinIO notifies).
    """
    settings = settings or load_settings()
    telemetry.setup(SERVICE, settings)
    if publisher is None:
        publisher = wiring.publisher(settings)
    topic = settings.topic_audio_uploaded
    app = Flask("audiary-bridge")
    instrument_flask(app, SERVICE, untraced={"healthz", "probe", "receive"})

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    @app.route("/", methods=["GET", "HEAD"])
    def probe() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    @app.post("/")
    def receive() -> tuple[Response, int]:
        raw = request.get_data()
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            return jsonify(error="the body is not JSON"), 400
        if is_test_event(payload):
            return jsonify(status="ok", published=0), 200
        try:
            objects = finalized_objects(payload, settings)
        except BadEventError as exc:
            log.warning("rejected a malformed MinIO event: %s", exc)
            return jsonify(error=str(exc)), 400
        for obj in objects:
            # The upload's trace starts here, as in the native watcher; ingest continues it
            # from the message attributes.
            with telemetry.tracer().start_as_current_span(
                "upload", kind=SpanKind.PRODUCER,
                attributes={"audiary.bucket": obj.bucket, "audiary.object": obj.name},
            ):
                data, attributes = notification_message(obj)
                try:
                    message_id = publisher.publish(topic, data, inject_trace(attributes))
                except Exception:
                    # MinIO sends the whole event again; what was already published is a
                    # duplicate that ingest recognises by its job id.
                    log.exception("publishing %s/%s failed", obj.bucket, obj.name)
                    return jsonify(error="publishing failed; send again"), 500
            log.info("notified %s/%s (generation %s) as message %s",
                     obj.bucket, obj.name, obj.generation, message_id)
        return jsonify(status="ok", published=len(objects)), 200

    if stats:
        threading.Thread(
            target=count_stats, args=(settings, settings.watch_stats_interval_s,
                                      threading.Event()),
            name="bridge-stats", daemon=True,
        ).start()
    return app
