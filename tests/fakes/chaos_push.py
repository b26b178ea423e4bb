"""A push proxy between the Pub/Sub emulator and the services that multiplies and shuffles.

Point a push subscription at `proxy.url(name)`: each push it gets is passed on to
`targets[name]` (and the service's answer given back to Pub/Sub, so failures are still
retried), after a random pause, and `copies - 1` more copies of it are sent on their own after
other random pauses, as new messages (ids of their own, as a message published twice would
have). Services therefore see every message `copies` times (or, with `duplicate_probability`,
that share of the messages), out of order with the others.

    with ChaosPush({"summarize": "http://127.0.0.1:8093/"}, seed=1) as proxy:
        ensure_push_subscription(..., push_endpoint=proxy.url("summarize"))
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import httpx


class ChaosPush:
    def __init__(self, targets: Mapping[str, str], *, copies: int = 3, max_delay_s: float = 1.0,
                 duplicate_probability: float = 1.0, seed: int = 0) -> None:
        self.targets = dict(targets)
        self.copies = copies
        self.duplicate_probability = duplicate_probability
        self.max_delay_s = max_delay_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent: Counter[str] = Counter()  # pushes passed on, by target name (copies too)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = proxy._push(self.path.strip("/"), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def _delay(self) -> float:
        with self._lock:
            return self._random.uniform(0, self.max_delay_s)

    def _forward(self, name: str, body: bytes) -> int:
        with self._lock:
            self.sent[name] += 1
        try:
            return httpx.post(self.targets[name], content=body, timeout=600,
                              headers={"Content-Type": "application/json"}).status_code
        except httpx.HTTPError:
            return 503

    def _push(self, name: str, body: bytes) -> int:
        if name not in self.targets:
            return 404
        envelope = json.loads(body)
        message_id = envelope["message"].get("messageId", "")
        with self._lock:
            copies = self.copies if self._random.random() < self.duplicate_probability else 1
        for n in range(1, copies):
            copy = json.loads(body)
            copy["message"]["messageId"] = copy["message"]["message_id"] = f"{message_id}-copy{n}"
            thread = threading.Thread(target=self._later, args=(name, json.dumps(copy).encode()),
                                      daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()
        if self._stopping.wait(self._delay()):
            return 503
        return self._forward(name, body)

    def _later(self, name: str, body: bytes) -> None:
        if not self._stopping.wait(self._delay()):
            self._forward(name, body)

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until every copy sent so far has been answered (copies may make more)."""
        while True:
            with self._lock:
                pending = [t for t in self._threads if t.is_alive()]
            if not pending:
                return
            for thread in pending:
                thread.join(timeout_s)
                if thread.is_alive():
                    raise TimeoutError(f"a copy was not answered within {timeout_s:.0f} s")

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
