"""Bucket watcher for the native local stack.

The GCS emulator sends no notifications, so this process lists `inbox/` and publishes a
GCS-format (`JSON_API_V1`, OBJECT_FINALIZE) message on `audio-uploaded` for each new object
generation — exactly what a GCS notification would publish on Google Cloud, plus the W3C trace
context of a new trace, so that one trace covers the drop from here to the diary note.

It also serves Prometheus metrics (on `metrics_port`) for the stack as a whole: messages
waiting on the dead-letter subscriptions (`audiary_dead_letter_messages`) and jobs per state
(`audiary_jobs_in_state`), refreshed every `watch_stats_interval_s`.

Run: python -m audiary.local.watcher
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

from opentelemetry.trace import SpanKind

from audiary.observability import metrics, telemetry
from audiary.ports import Stores
from audiary.settings import load_settings
from audiary.wire.messages import inject_trace
from audiary.wire.storage_events import ObjectEvent, notification_message
from audiary.wiring import stores

# Named, not __name__: run with -m this module is __main__, outside the `audiary` loggers.
log = logging.getLogger("audiary.local.watcher")

SERVICE = "watcher"


class BucketWatcher:
    """Publishes one notification per (object, generation) seen under the inbox prefix."""

    def __init__(self, svc: Stores, seen_file: Path | None = None) -> None:
        self.svc = svc
        self.seen_file = seen_file
        self.seen: set[str] = set()
        if seen_file is not None and seen_file.exists():
            self.seen = set(json.loads(seen_file.read_text()))

    def scan(self) -> list[ObjectEvent]:
        """Publish notifications for objects not seen before; returns what was published."""
        s = self.svc.settings
        published = []
        for info in self.svc.blobs.list(s.uploads_bucket, s.inbox_prefix):
            marker = f"{info.key}#{info.generation}"
            if marker in self.seen or info.key.endswith("/"):
                continue
            event = ObjectEvent(
                bucket=info.bucket,
                name=info.key,
                generation=info.generation,
                size=info.size,
                content_type=info.content_type,
                metadata=dict(info.metadata),
            )
            # The upload's trace starts here; ingest continues it from the attributes.
            with telemetry.tracer().start_as_current_span(
                "upload", kind=SpanKind.PRODUCER,
                attributes={"audiary.bucket": info.bucket, "audiary.object": info.key},
            ):
                data, attributes = notification_message(event)
                self.svc.publisher.publish(s.topic_audio_uploaded, data, inject_trace(attributes))
                log.info("notified %s (generation %s)", info.key, info.generation)
            self.seen.add(marker)
            published.append(event)
        if published and self.seen_file is not None:
            self.seen_file.write_text(json.dumps(sorted(self.seen)))
        return published

    def refresh_stats(self, dead_letter_subscriptions: tuple[str, ...]) -> None:
        """Count jobs per state and messages waiting on each dead-letter subscription."""
        for status, count in self.svc.jobs.count_by_status().items():
            metrics.JOBS_IN_STATE.labels(status.value).set(count)
        s = self.svc.settings
        if s.publisher_backend != "pubsub":
            return
        from audiary.adapters.pubsub import count_waiting

        for subscription in dead_letter_subscriptions:
            waiting = count_waiting(s.project_id, subscription,
                                    emulator_host=s.pubsub_emulator_host)
            metrics.DEAD_LETTER_MESSAGES.labels(subscription).set(waiting)

    def run(self, interval_s: float, stop: threading.Event, *, stats_interval_s: float = 5.0,
            dead_letter_subscriptions: tuple[str, ...] = ()) -> None:
        next_stats = 0.0
        while not stop.is_set():
            # A flaky emulator must not end the watcher: log, and try again next round.
            try:
                self.scan()
            except Exception:
                log.exception("scan failed; retrying")
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + stats_interval_s
                try:
                    self.refresh_stats(dead_letter_subscriptions)
                except Exception:
                    log.exception("counting jobs and dead letters failed; retrying")
            stop.wait(interval_s)


def main() -> None:
    from audiary.local.stack import DEAD_LETTER_SUBSCRIPTIONS

    settings = load_settings()
    telemetry.setup(SERVICE, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    watcher = BucketWatcher(stores(settings), settings.state_dir / "watcher-seen.json")
    log.info("watching gs://%s/%s", settings.uploads_bucket, settings.inbox_prefix)
    watcher.run(settings.watch_interval_s, stop, stats_interval_s=settings.watch_stats_interval_s,
                dead_letter_subscriptions=DEAD_LETTER_SUBSCRIPTIONS)


if __name__ == "__main__":
    main()
