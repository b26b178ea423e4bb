"""The native stack's Cloud Scheduler stand-in calls the sweeper on its timer, and keeps going
when a call fails."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import SecretStr

from audiary.local.emulators import free_port
from audiary.local.scheduler import Schedule, run, schedules, sweeper_url, tick
from audiary.settings import Settings
from tests.e2e.conftest import poll


class Sweeper:
    """A local HTTP server standing in for the sweeper function: counts POSTs, fails the
    first one."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.secrets: list[str | None] = []
        sweeper = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sweeper.calls.append(self.path)
                sweeper.secrets.append(self.headers.get("X-Audiary-Review-Secret"))
                self.send_response(500 if len(sweeper.calls) == 1 else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


def test_the_timer_posts_again_and_again_after_a_failed_call():
    sweeper = Sweeper()
    stop = threading.Event()
    timer = threading.Thread(target=run, args=(Schedule("sweep", sweeper.url, 0.05), stop),
                             daemon=True)
    timer.start()
    try:
        poll(lambda: len(sweeper.calls), lambda n: n >= 3, 10)
    finally:
        stop.set()
        timer.join(5)
        sweeper.server.shutdown()
    assert not timer.is_alive()
    assert set(sweeper.calls) == {"/"}


def test_a_call_to_nothing_is_reported_not_raised():
    assert tick(Schedule("sweep", f"http://127.0.0.1:{free_port()}/", 1), timeout_s=2) is False


def test_the_default_url_is_the_native_sweeper():
    assert sweeper_url(Settings(host="127.0.0.1", sweeper_port=8123)) == "http://127.0.0.1:8123/"


def test_the_review_sync_is_called_with_the_secret_only_when_one_is_set():
    plain = Settings(host="127.0.0.1", sweeper_port=8123, review_port=8124,
                     learning_port=8125, learning_interval_s=7.0)
    assert [s.name for s in schedules(plain)] == ["sweep", "learning"]
    learning = schedules(plain)[1]
    assert (learning.url, learning.interval_s, learning.headers) == (
        "http://127.0.0.1:8125/schedule", 7.0, {})
    with_secret = plain.model_copy(update={"review_secret": SecretStr("shh"),
                                           "review_sync_interval_s": 0.05})
    sweep, _, sync = schedules(with_secret)
    assert (sync.url, sync.interval_s) == ("http://127.0.0.1:8124/sync", 0.05)
    server = Sweeper()
    try:
        tick(Schedule(sync.name, server.url, 1, sync.headers), timeout_s=2)
    finally:
        server.server.shutdown()
    assert server.secrets == ["shh"]
    assert sweep.headers == {}
