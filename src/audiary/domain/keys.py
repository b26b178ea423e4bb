"""API keys and webhook registrations.

A key looks like `ak_<key_id>_<secret>`. Only sha256(secret) is stored: the secret is shown
once, at creation. `key_id` is public (it names the key in lists and owns jobs).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from pydantic import BaseModel

_KEY = re.compile(r"^ak_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")


class ApiKey(BaseModel):
    key_id: str
    name: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def owner(self) -> str:
        return f"key:{self.key_id}"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))


class Webhook(BaseModel):
    webhook_id: str
    owner: str
    url: str
    secret: str  # for signing deliveries; shown to the owner once, at registration
    created_at: datetime


def hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(full key to give the user, key_id, secret hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"ak_{key_id}_{secret}", key_id, hash_secret(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented.strip())
    return (match[1], match[2]) if match else None
