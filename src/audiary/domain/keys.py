"""API keys and webhook registrations.

A key looks like `ak_<key_id>_<secret>`. Only sha256(secret) is stored: the secret is shown
once, at creation. `key_id` is public (it names the key in lists and owns jobs).

A webhook's signing secret is stored as given to its owner (the sender needs it). New ones
are Standard Webhooks secrets, `whsec_` and the base64 of 32 random bytes, the key being those
bytes. Secrets made before have no prefix (`secrets.token_urlsafe`) and stay valid: their key
is their own UTF-8 bytes, as the Audiary-* signatures always used them, so their Standard
Webhooks form is `whsec_` and the base64 of those bytes (`standard_webhook_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

from pydantic import BaseModel

_KEY = re.compile(r"^ak_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# Standard Webhooks asks for 24 to 64 bytes of key.
WEBHOOK_SECRET_BYTES = 32


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
    secret: str  # for signing deliveries; shown to the owner once, at registration (see above)
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


def new_webhook_secret() -> str:
    """A webhook signing secret in the Standard Webhooks form: `whsec_<base64 of the key>`."""
    key = secrets.token_bytes(WEBHOOK_SECRET_BYTES)
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def standard_webhook_secret(secret: str | bytes) -> str:
    """The `whsec_` form of a webhook secret, new or from before the prefix.

    A secret without the prefix is its own key, byte for byte. Standard Webhooks libraries
    base64-decode any secret they are given (the Python one silently drops characters such as
    `-` and `_`), so an old secret must reach them in this form to give the same key.
    """
    raw = secret if isinstance(secret, bytes) else secret.encode()
    if raw.startswith(WEBHOOK_SECRET_PREFIX.encode()):
        return raw.decode("ascii")
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(raw).decode("ascii")
