"""Storage events: the two shapes a new upload arrives in.

1. Eventarc CloudEvent `google.cloud.storage.object.v1.finalized`, whose data is the
   GCS object resource.
2. A Pub/Sub message from a GCS notification (payload format `JSON_API_V1`), with
   attributes eventType/bucketId/objectId/objectGeneration and the object resource
   as base64 JSON data; functions-framework hands it over as a CloudEvent of type
   `google.cloud.pubsub.topic.v1.messagePublished`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audiary.errors import BadEventError

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
OBJECT_FINALIZE = "OBJECT_FINALIZE"


@dataclass(frozen=True)
class ObjectEvent:
    """A finalized object: what ingest needs to know about an upload."""

    bucket: str
    name: str
    generation: str
    size: int | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def _from_resource(resource: Mapping[str, Any], *, bucket: str = "", name: str = "",
                   generation: str = "") -> ObjectEvent:
    bucket = bucket or str(resource.get("bucket") or "")
    name = name or str(resource.get("name") or "")
    generation = generation or str(resource.get("generation") or "")
    missing = [k for k, v in (("bucket", bucket), ("name", name), ("generation", generation))
               if not v]
    if missing:
        raise BadEventError(f"storage event lacks {', '.join(missing)}")
    size = resource.get("size")
    try:
        size_int = int(size) if size is not None else None
    except (TypeError, ValueError) as exc:
        raise BadEventError(f"storage event has a non-numeric size {size!r}") from exc
    metadata = resource.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BadEventError("storage event metadata is not an object")
    return ObjectEvent(
        bucket=bucket,
        name=name,
        generation=generation,
        size=size_int,
        content_type=resource.get("contentType"),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def parse_pubsub_notification(message: Mapping[str, Any]) -> ObjectEvent | None:
    """A GCS notification delivered as a Pub/Sub message; None for non-finalize events."""
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise BadEventError("Pub/Sub message attributes are not an object")
    event_type = attributes.get("eventType")
    if event_type is None:
        raise BadEventError("Pub/Sub message is not a GCS notification (no eventType attribute)")
    if event_type != OBJECT_FINALIZE:
        return None
    resource: Mapping[str, Any] = {}
    raw = message.get("data")
    if raw:
        try:
            decoded = json.loads(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise BadEventError("GCS notification data is not base64 JSON") from exc
        if not isinstance(decoded, Mapping):
            raise BadEventError("GCS notification data is not a JSON object")
        resource = decoded
    return _from_resource(
        resource,
        bucket=str(attributes.get("bucketId") or ""),
        name=str(attributes.get("objectId") or ""),
        generation=str(attributes.get("objectGeneration") or ""),
    )


def parse_storage_event(event_type: str, data: Any) -> ObjectEvent | None:
    """Parse either event shape; None when the event is not about a new object."""
    if not isinstance(data, Mapping):
        raise BadEventError(f"event data of {event_type} is not a JSON object")
    if event_type == STORAGE_FINALIZED:
        return _from_resource(data)
    if event_type == PUBSUB_PUBLISHED:
        message = data.get("message")
        if not isinstance(message, Mapping):
            raise BadEventError("Pub/Sub event has no message")
        return parse_pubsub_notification(message)
    raise BadEventError(
        f"unsupported event type {event_type!r}; expected {STORAGE_FINALIZED} or {PUBSUB_PUBLISHED}"
    )


def notification_message(obj: ObjectEvent) -> tuple[bytes, dict[str, str]]:
    """The (data, attributes) GCS would publish for `obj` (JSON_API_V1): used by local watchers."""
    resource = {
        "kind": "storage#object",
        "bucket": obj.bucket,
        "name": obj.name,
        "generation": obj.generation,
        "size": str(obj.size) if obj.size is not None else None,
        "contentType": obj.content_type,
        "metadata": dict(obj.metadata),
    }
    attributes = {
        "eventType": OBJECT_FINALIZE,
        "payloadFormat": "JSON_API_V1",
        "bucketId": obj.bucket,
        "objectId": obj.name,
        "objectGeneration": obj.generation,
        "notificationConfig": f"projects/_/buckets/{obj.bucket}/notificationConfigs/local",
    }
    return json.dumps({k: v for k, v in resource.items() if v is not None}).encode(), attributes
