import base64
import json

import pytest

from audiary.errors import BadEventError
from audiary.wire.storage_events import (
    PUBSUB_PUBLISHED,
    STORAGE_FINALIZED,
    ObjectEvent,
    notification_message,
    parse_storage_event,
)

RESOURCE = {
    "kind": "storage#object",
    "bucket": "uploads",
    "name": "inbox/day one.m4a",
    "generation": "1700000000123456",
    "size": "48213",
    "contentType": "audio/mp4",
    "metadata": {"recorded": "2026-11-03"},
}


def _pubsub_data(attributes, resource=RESOURCE):
    message = {"attributes": attributes, "messageId": "1"}
    if resource is not None:
        message["data"] = base64.b64encode(json.dumps(resource).encode()).decode()
    return {"message": message, "subscription": "projects/p/subscriptions/ingest"}


ATTRS = {
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
    "bucketId": "uploads",
    "objectId": "inbox/day one.m4a",
    "objectGeneration": "1700000000123456",
}


def test_eventarc_storage_event():
    event = parse_storage_event(STORAGE_FINALIZED, RESOURCE)
    assert event == ObjectEvent(
        bucket="uploads",
        name="inbox/day one.m4a",
        generation="1700000000123456",
        size=48213,
        content_type="audio/mp4",
        metadata={"recorded": "2026-11-03"},
    )


def test_pubsub_notification_gives_the_same_event():
    assert parse_storage_event(PUBSUB_PUBLISHED, _pubsub_data(ATTRS)) == parse_storage_event(
        STORAGE_FINALIZED, RESOURCE
    )


def test_attributes_win_and_suffice_without_data():
    event = parse_storage_event(PUBSUB_PUBLISHED, _pubsub_data(ATTRS, resource=None))
    assert event is not None
    assert (event.bucket, event.name, event.generation, event.size) == (
        "uploads", "inbox/day one.m4a", "1700000000123456", None
    )


@pytest.mark.parametrize("kind", ["OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"])
def test_other_notification_types_are_ignored(kind):
    data = _pubsub_data({**ATTRS, "eventType": kind})
    assert parse_storage_event(PUBSUB_PUBLISHED, data) is None


@pytest.mark.parametrize(
    ("event_type", "data", "needle"),
    [
        ("google.cloud.storage.object.v1.deleted", RESOURCE, "unsupported event type"),
        (STORAGE_FINALIZED, "not a dict", "not a JSON object"),
        (STORAGE_FINALIZED, {"bucket": "b", "name": "n"}, "lacks generation"),
        (STORAGE_FINALIZED, {**RESOURCE, "size": "big"}, "non-numeric size"),
        (PUBSUB_PUBLISHED, {"subscription": "s"}, "has no message"),
        (PUBSUB_PUBLISHED, {"message": {"attributes": {}}}, "not a GCS notification"),
        (PUBSUB_PUBLISHED, {"message": {"attributes": ATTRS, "data": "%%%"}}, "not base64 JSON"),
    ],
)
def test_malformed_events_say_what_is_wrong(event_type, data, needle):
    with pytest.raises(BadEventError, match=needle):
        parse_storage_event(event_type, data)


def test_watcher_notification_round_trips():
    obj = ObjectEvent("uploads", "inbox/a.wav", "42", 10, "audio/wav", {"k": "v"})
    data, attributes = notification_message(obj)
    message = {"attributes": attributes, "data": base64.b64encode(data).decode()}
    assert parse_storage_event(PUBSUB_PUBLISHED, {"message": message}) == obj
