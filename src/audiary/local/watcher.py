"""Bucket watcher for the native local stack.

The GCS emulator sends no notifications, so this process lists `inbox/` and publishes a
GCS-format (`JSON_API_V1`, OBJECT_FINALIZE) message on `audio-uploaded` for each new object
generation — exactly what a GCS notification would publish on Google Cloud.

Run: python -m audiary.local.watcher
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

from audiary.domain.events import ObjectEvent, notification_message
from audiary.logs import setup_logging
from audiary.settings import load_settings
from audiary.wiring import Services, services

log = logging.getLogger(__name__)


class BucketWatcher:
    """Publishes one notification per (object, generation) seen under the inbox prefix."""

    def __init__(self, svc: Services, seen_file: Path | None = None) -> None:
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
            data, attributes = notification_message(event)
            self.svc.publisher.publish(s.topic_audio_uploaded, data, attributes)
            self.seen.add(marker)
            published.append(event)
            log.info("notified %s (generation %s)", info.key, info.generation)
        if published and self.seen_file is not None:
            self.seen_file.write_text(json.dumps(sorted(self.seen)))
        return published

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # a flaky emulator must not end the watcher
                log.exception("scan failed; retrying")
            stop.wait(interval_s)


def main() -> None:
    setup_logging()
    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    watcher = BucketWatcher(services(settings), settings.state_dir / "watcher-seen.json")
    log.info("watching gs://%s/%s", settings.uploads_bucket, settings.inbox_prefix)
    watcher.run(settings.watch_interval_s, stop)


if __name__ == "__main__":
    main()
