"""Google-signed ID tokens, verified the way production does, against a local certs endpoint
serving the public half of a key made for the test: service accounts calling the API, and
people signed in to the web page with Google."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from google.auth import jwt

from audiary.entrypoints.api.app import create_app
from audiary.entrypoints.api.auth import allowed_person
from audiary.settings import Settings
from tests.fakes.google_identity import GoogleIdentity, signer_and_certs

ROBOT = "robot@audiary-test.iam.gserviceaccount.com"
AUDIENCE = "https://api.audiary.example"
CLIENT_ID = "1234-web.apps.googleusercontent.com"


@pytest.fixture(scope="module")
def google() -> Iterator[GoogleIdentity]:
    with GoogleIdentity(email=ROBOT) as server:
        yield server


def memory_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for port in ("JOB", "BLOB", "PUBLISHER"):
        monkeypatch.setenv(f"AUDIARY_{port}_BACKEND", "memory")


@pytest.fixture
def settings(google: GoogleIdentity, monkeypatch: pytest.MonkeyPatch) -> Settings:
    memory_backends(monkeypatch)
    return Settings(api_service_accounts=[ROBOT], api_audience=AUDIENCE,
                    web_google_client_id=CLIENT_ID, web_users=["ann@example.org", "@team.example"],
                    google_certs_url=google.certs_url, web_google_script_url=google.script_url)


@pytest.fixture
def client(settings: Settings):
    return create_app(lambda: settings).test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_allowed_service_account_is_let_in(client, google):
    response = client.get("/v1/jobs", headers=bearer(google.token(aud=AUDIENCE)))
    assert response.status_code == 200, response.json
    assert response.json == {"jobs": [], "next_page_token": None}


@pytest.mark.parametrize(
    ("claims", "needle"),
    [
        ({"email": "intruder@evil.iam.gserviceaccount.com"}, "may not use this API"),
        ({"email_verified": False}, "may not use this API"),
        ({"aud": "https://elsewhere.example"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "not issued by Google"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired at"),
    ],
)
def test_other_tokens_are_refused_with_the_reason(client, google, claims, needle):
    response = client.get("/v1/jobs", headers=bearer(google.token(**{"aud": AUDIENCE, **claims})))
    assert response.status_code == 401
    assert needle in response.json["error"]["message"]


def test_a_token_signed_by_another_key_is_refused(client):
    signer, _ = signer_and_certs()
    now = int(time.time())
    forged = jwt.encode(signer, {"iss": "https://accounts.google.com", "aud": AUDIENCE,
                                 "email": ROBOT, "email_verified": True,
                                 "iat": now, "exp": now + 600}).decode()
    response = client.get("/v1/jobs", headers=bearer(forged))
    assert response.status_code == 401
    assert "not valid" in response.json["error"]["message"]


@pytest.mark.parametrize("email", ["ann@example.org", "Bob@Team.Example"])
def test_a_person_allowed_on_the_page_gets_their_own_jobs(client, google, email):
    token = google.token(aud=CLIENT_ID, email=email)
    created = client.post("/v1/uploads", headers=bearer(token), json={
        "filename": "day.ogg", "content_type": "audio/ogg", "size_bytes": 1000})
    assert created.status_code == 201, created.json
    listed = client.get("/v1/jobs", headers=bearer(token)).json["jobs"]
    assert [job["job_id"] for job in listed] == [created.json["job_id"]]
    # Someone else, also allowed, does not see them.
    other = google.token(aud=CLIENT_ID, email="carl@team.example")
    assert client.get("/v1/jobs", headers=bearer(other)).json["jobs"] == []


def test_a_person_not_listed_is_refused_by_name(client, google):
    token = google.token(aud=CLIENT_ID, email="mallory@example.org")
    response = client.get("/v1/jobs", headers=bearer(token))
    assert response.status_code == 401
    assert response.json["error"]["message"] == (
        "the Google account mallory@example.org may not use this page")


def test_a_service_account_token_for_the_page_client_is_not_a_service_login(client, google):
    # The robot is allowed to call the API, but not as a person on the page.
    response = client.get("/v1/jobs", headers=bearer(google.token(aud=CLIENT_ID, email=ROBOT)))
    assert response.status_code == 401
    assert "may not use this page" in response.json["error"]["message"]


def test_the_page_is_told_about_google_sign_in_and_may_load_its_script(client, google):
    config = client.get("/web/config")
    assert config.status_code == 200
    assert config.json == {"google_client_id": CLIENT_ID, "google_script_url": google.script_url}
    policy = client.get("/").headers["Content-Security-Policy"]
    assert f"default-src 'self' {google.base_url};" in policy


def test_without_a_client_id_the_page_offers_keys_only(monkeypatch):
    memory_backends(monkeypatch)
    client = create_app(lambda: Settings(web_users=["ann@example.org"])).test_client()
    assert client.get("/web/config").json == {"google_client_id": None,
                                             "google_script_url": None}
    assert client.get("/").headers["Content-Security-Policy"].startswith("default-src 'self';")


@pytest.mark.parametrize(("email", "allowed"), [
    ("ann@example.org", True), ("ANN@example.org", True), ("zed@team.example", True),
    ("ann@example.org.evil", False), ("team.example@evil.org", False), ("", False)])
def test_who_counts_as_listed(email, allowed):
    assert allowed_person(email, ["ann@example.org", "@team.example"]) is allowed
