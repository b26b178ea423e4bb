"""The API on the native stack: a key made with the CLI, `audiary --api` end to end, and a
signed webhook checked by an independent receiver (the `standardwebhooks` library, and the
deprecated Audiary-* headers by the old recipe)."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audiary.entrypoints.cli.main import cli
from tests.media import DEMO_SAMPLE, decode, encode

pytestmark = pytest.mark.e2e


def library_accepts(secret: str, headers, body: bytes) -> bool:
    """The README's verification recipe: any Standard Webhooks verifier, here the Python one."""
    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        return False
    return True


def receiver_accepts(secret: bytes, headers, body: bytes) -> bool:
    """The deprecated Audiary-* headers' recipe, written out here rather than imported."""
    timestamp = headers.get("Audiary-Timestamp", "")
    signature = headers.get("Audiary-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v1={expected}", signature)


@pytest.fixture
def receiver():
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_api_drop_wait_notes_and_signed_webhook(stack, svc, tmp_path, receiver):
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "e2e"], catch_exceptions=False)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ak_")
    assert key.split("_")[1] in runner.invoke(cli, ["keys", "list"]).output

    api = f"http://{stack.settings.host}:{stack.settings.api_port}"
    url, received = receiver
    hook = httpx.post(f"{api}/v1/webhooks", json={"url": url},
                      headers={"Authorization": f"Bearer {key}"}).json()

    path = encode(decode(DEMO_SAMPLE, seconds=20.0), tmp_path / "via-api.mp3")
    dropped = runner.invoke(cli, ["--api", api, "--key", key, "drop", str(path), "--wait",
                                  "--timeout", "300"], catch_exceptions=False)
    assert dropped.exit_code == 0, dropped.output
    job_id = dropped.stdout.strip().splitlines()[0]

    note = json.loads(runner.invoke(cli, ["--api", api, "--key", key, "notes", job_id,
                                          "--format", "json"]).output)
    assert note["job_id"] == job_id
    text = runner.invoke(cli, ["--api", api, "--key", key, "transcript", job_id]).output
    assert "sarah" in text.lower()

    headers, body = received.get(timeout=60)
    assert hook["secret"].startswith("whsec_")
    assert library_accepts(hook["secret"], headers, body)
    assert not library_accepts("whsec_" + "A" * 43 + "=", headers, body)
    assert not library_accepts(hook["secret"], headers, body.replace(b"DONE", b"FAIL"))
    # One id per (job, hook, event), in both the standard and the deprecated header.
    delivery = f"{job_id}-{hook['webhook_id']}-job.finished"
    assert headers["webhook-id"] == headers["Audiary-Delivery"] == delivery
    assert receiver_accepts(hook["secret"].encode(), headers, body)
    assert not receiver_accepts(b"wrong secret", headers, body)
    assert not receiver_accepts(hook["secret"].encode(), headers, body.replace(b"DONE", b"FAIL"))
    event = json.loads(body)
    assert (event["event"], event["job_id"], event["status"]) == ("job.finished", job_id, "DONE")

    revoked = runner.invoke(cli, ["keys", "revoke", key.split("_")[1]])
    assert revoked.exit_code == 0
    refused = runner.invoke(cli, ["--api", api, "--key", key, "status", job_id])
    assert refused.exit_code == 1
    assert "revoked" in refused.output
