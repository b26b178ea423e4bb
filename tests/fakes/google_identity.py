"""Google's side of an ID-token sign-in, on 127.0.0.1: a signing key made for the test, its
public certificate at `/certs` (what the API verifies against, as it does Google's), and a
stand-in for the Google Identity Services script at `/gsi/client` (the real one can't be
loaded here) that speaks its interface: `google.accounts.id.initialize({client_id, callback})`
and `renderButton(element)`; clicking the button hands `callback` an ID token signed by the
test key for the page's client ID and `GoogleIdentity.email`.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

GSI_CLIENT = """
window.google = { accounts: { id: {
  initialize(options) { this.options = options; },
  renderButton(element) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "google-test-button";
    button.textContent = "Sign in with Google";
    button.onclick = async () => {
      const aud = encodeURIComponent(this.options.client_id);
      const answer = await fetch(`${ORIGIN}/token?aud=${aud}`);
      this.options.callback({ credential: await answer.text(), select_by: "btn" });
    };
    element.append(button);
  },
} } };
"""


def signer_and_certs() -> tuple[crypt.RSASigner, bytes]:
    """A fresh RSA signing key and its certificate in the form Google serves (kid -> PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-certs")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    certs = json.dumps({"kid-1": cert.public_bytes(serialization.Encoding.PEM).decode()})
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return crypt.RSASigner.from_string(pem, key_id="kid-1"), certs.encode()


class GoogleIdentity:
    def __init__(self, email: str = "diarist@example.org") -> None:
        self.email = email
        self.signer, certs = signer_and_certs()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/certs":
                    self._send(certs, "application/json")
                elif url.path == "/gsi/client":
                    script = f"const ORIGIN = {json.dumps(owner.base_url)};\n{GSI_CLIENT}"
                    self._send(script.encode(), "text/javascript")
                elif url.path == "/token":
                    aud = parse_qs(url.query)["aud"][0]
                    self._send(owner.token(aud=aud).encode(), "text/plain")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def certs_url(self) -> str:
        return f"{self.base_url}/certs"

    @property
    def script_url(self) -> str:
        return f"{self.base_url}/gsi/client"

    def token(self, **claims: Any) -> str:
        """An ID token as Google would sign it for `email`; `claims` override any field."""
        now = int(time.time())
        payload = {"iss": "https://accounts.google.com", "email": self.email,
                   "email_verified": True, "iat": now, "exp": now + 600, **claims}
        return jwt.encode(self.signer, payload).decode()

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
