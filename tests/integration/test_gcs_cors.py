"""The local GCS emulator answers a browser's cross-origin upload as the uploads bucket's CORS
rule does on Google Cloud (audiary.local.gcs_emulator, infra/buckets.py)."""

from __future__ import annotations

import httpx
import pytest

from audiary import names

from .conftest import LocalServers

pytestmark = pytest.mark.integration


def test_a_preflight_for_a_put_is_allowed_and_answers_carry_the_origin_rule(
        local_servers: LocalServers) -> None:
    base = local_servers.gcs.env["STORAGE_EMULATOR_HOST"]
    preflight = httpx.options(f"{base}/upload/storage/v1/b/any/o", headers={
        "Origin": "http://127.0.0.1:8094", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == ", ".join(
        names.UPLOAD_CORS_METHODS)
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type"
    assert preflight.headers["Access-Control-Max-Age"] == str(names.UPLOAD_CORS_MAX_AGE_S)
    ordinary = httpx.get(f"{base}/")
    assert ordinary.text == "OK"  # the emulator itself still answers as before
    assert ordinary.headers["Access-Control-Allow-Origin"] == "*"
