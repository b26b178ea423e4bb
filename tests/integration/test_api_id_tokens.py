"""Google-signed ID tokens, verified the way production does, against a local certs endpoint
serving the public half of a key made for the test."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from audiary.entrypoints.api.app import create_app
from audiary.settings import Settings

ROBOT = "robot@audiary-test.iam.gserviceaccount.com"
AUDIENCE = "https://api.audiary.example"


@pytest.fixture(scope="module")
def signing():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-certs")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    certs = json.dumps({"kid-1": cert.public_bytes(serialization.Encoding.PEM).decode()}).encode()

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(certs)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    signer = crypt.RSASigner.from_string(pem, key_id="kid-1")
    yield signer, f"http://127.0.0.1:{server.server_address[1]}/certs"
    server.shutdown()


def token(signer, **claims) -> str:
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": ROBOT,
               "email_verified": True, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(signer, payload).decode()


@pytest.fixture
def client(signing, monkeypatch):
    for port in ("JOB", "BLOB", "PUBLISHER"):
        monkeypatch.setenv(f"AUDIARY_{port}_BACKEND", "memory")
    settings = Settings(api_service_accounts=[ROBOT], api_audience=AUDIENCE,
                        google_certs_url=signing[1])
    return create_app(lambda: settings).test_client()


def test_allowed_service_account_is_let_in(client, signing):
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token(signing[0])}"})
    assert response.status_code == 200, response.json
    assert response.json == {"jobs": [], "next_page_token": None}


@pytest.mark.parametrize(
    ("claims", "needle"),
    [
        ({"email": "intruder@evil.iam.gserviceaccount.com"}, "may not use this API"),
        ({"email_verified": False}, "may not use this API"),
        ({"aud": "https://elsewhere.example"}, "not valid"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "not valid"),
    ],
)
def test_other_tokens_are_refused_with_the_reason(client, signing, claims, needle):
    response = client.get("/v1/jobs",
                          headers={"Authorization": f"Bearer {token(signing[0], **claims)}"})
    assert response.status_code == 401
    assert needle in response.json["error"]["message"]


def test_a_token_signed_by_another_key_is_refused(client):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    forged = token(crypt.RSASigner.from_string(pem, key_id="kid-1"))
    response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "not valid" in response.json["error"]["message"]
