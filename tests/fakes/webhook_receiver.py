"""A webhook receiver on 127.0.0.1 with one behaviour per path, recording every POST.

- `/ok` answers 204;
- `/flaky` answers 503 to the first two POSTs of each delivery id, then 204;
- `/silent` never answers (holds the request until the receiver stops).

`delivered(path)` counts the 2xx answers per delivery id (`webhook-id`, the Standard Webhooks
header), so a test can check that each (hook, job, event) got through once and only once.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.post_server import PostServer

FLAKY_FAILURES = 2


@dataclass(frozen=True)
class Post:
    path: str
    delivery_id: str
    body: dict[str, Any]
    status: int | None  # None: never answered


class WebhookReceiver(PostServer):
    def __init__(self) -> None:
        super().__init__()
        self.posts: list[Post] = []
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def answer(self, path: str, headers: Mapping[str, str], body: bytes) -> int | None:
        delivery = headers.get("webhook-id", "")
        status = self._answer(path, delivery)
        self._record(Post(path, delivery, json.loads(body), status))
        return status

    def _answer(self, path: str, delivery: str) -> int | None:
        if path == "/silent":
            return None
        if path == "/flaky":
            with self._lock:
                earlier = sum(1 for p in self.posts if p.path == path and p.delivery_id == delivery)
            return 503 if earlier < FLAKY_FAILURES else 204
        return 204

    def _record(self, post: Post) -> None:
        with self._lock:
            self.posts.append(post)

    def delivered(self, path: str) -> Counter[str]:
        """2xx answers per delivery id on `path`."""
        with self._lock:
            return Counter(p.delivery_id for p in self.posts
                           if p.path == path and p.status is not None and p.status < 300)

    def tried(self, path: str) -> Counter[str]:
        """POSTs per delivery id on `path`, answered or not."""
        with self._lock:
            return Counter(p.delivery_id for p in self.posts if p.path == path)
