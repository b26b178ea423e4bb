"""A webhook receiver on 127.0.0.1 with one behaviour per path, recording every POST.

- `/ok` answers 204;
- `/flaky` answers 503 to the first two POSTs of each delivery id, then 204;
- `/silent` never answers (holds the request until the receiver stops).

`delivered(path)` counts the 2xx answers per delivery id (`Audiary-Delivery`), so a test can
check that each (hook, job, event) got through once and only once.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

FLAKY_FAILURES = 2


@dataclass(frozen=True)
class Post:
    path: str
    delivery_id: str
    body: dict[str, Any]
    status: int | None  # None: never answered


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = self.headers.get("Audiary-Delivery", "")
                status = receiver._answer(self.path, delivery)
                receiver._record(Post(self.path, delivery, json.loads(raw), status))
                if status is None:
                    receiver._stopping.wait(600)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

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

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
