"""Who is calling: an API key, or a Google-signed ID token of an allowed service account."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from audiary.domain.keys import parse_key
from audiary.errors import AudiaryError
from audiary.ports import KeyStore
from audiary.settings import Settings

log = logging.getLogger(__name__)


class AuthError(AudiaryError):
    """The request carries no usable credentials (HTTP 401)."""


@dataclass(frozen=True)
class Principal:
    owner: str  # "key:<key_id>" or "sa:<email>": owns the jobs it creates
    key_id: str | None = None


def credentials_of(authorization: str | None, api_key_header: str | None) -> str:
    if api_key_header:
        return api_key_header.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise AuthError("the Authorization header must be 'Bearer <API key or ID token>'")
    raise AuthError(
        "no credentials: send 'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'"
    )


def authenticate(token: str, keys: KeyStore, settings: Settings) -> Principal:
    """The principal behind `token`, or `AuthError` saying what is wrong with it."""
    if token.startswith("ak_"):
        parsed = parse_key(token)
        if parsed is None:
            raise AuthError("the API key is malformed")
        key = keys.get_key(parsed[0])
        if key is None or not key.matches(parsed[1]):
            raise AuthError("the API key is not valid")
        if key.revoked_at is not None:
            raise AuthError(f"the API key {key.key_id} was revoked")
        return Principal(owner=key.owner, key_id=key.key_id)
    if token.count(".") == 2:
        return _id_token(token, settings)
    raise AuthError("the credentials are neither an Audiary API key nor a Google ID token")


def _id_token(token: str, settings: Settings) -> Principal:
    import google.auth.transport.requests
    from google.auth import exceptions as gexc
    from google.oauth2 import id_token

    if not settings.api_service_accounts or not settings.api_audience:
        raise AuthError("ID tokens are not accepted here (no service accounts configured)")
    try:
        claims = id_token.verify_token(
            token, google.auth.transport.requests.Request(),
            audience=settings.api_audience, certs_url=settings.google_certs_url,
        )
    except (ValueError, gexc.GoogleAuthError) as exc:
        raise AuthError(f"the ID token is not valid: {exc}") from exc
    email = claims.get("email")
    if not claims.get("email_verified") or email not in settings.api_service_accounts:
        raise AuthError(f"the service account {email} may not use this API")
    return Principal(owner=f"sa:{email}")
