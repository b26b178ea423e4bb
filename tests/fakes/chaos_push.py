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

import httpx

from tests.fakes.post_server import PostServer


class ChaosPush(PostServer):
    def __init__(self, targets: Mapping[str, str], *, copies: int = 3, max_delay_s: float = 1.0,
                 duplicate_probability: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.targets = dict(targets)
        self.copies = copies
        self.duplicate_probability = duplicate_probability
        self.max_delay_s = max_delay_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.sent: Counter[str] = Counter()  # pushes passed on, by target name (copies too)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def answer(self, path: str, headers: Mapping[str, str], body: bytes) -> int:
        return self._push(path.strip("/"), body)

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
