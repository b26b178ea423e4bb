"""Who is calling: an API key, or a Google-signed ID token of an allowed service account or
of a person allowed to use the web page."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from audiary.domain.keys import parse_key
from audiary.errors import AudiaryError
from audiary.ports import KeyStore
from audiary.settings import Settings

log = logging.getLogger(__name__)


class AuthError(AudiaryError):
    """The request carries no usable credentials (HTTP 401)."""


@dataclass(frozen=True)
class Principal:
    # "key:<key_id>", "sa:<email>" or "user:<email>": owns the jobs it creates
    owner: str
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
    """A service account calling with audience `api_audience`, or a person signed in to the
    web page with Google (audience: the page's OAuth client ID)."""
    import google.auth.transport.requests
    from google.auth import exceptions as gexc
    from google.oauth2 import id_token

    services = settings.api_audience if settings.api_service_accounts else None
    people = settings.web_google_client_id if settings.web_users else None
    audiences = [aud for aud in (services, people) if aud]
    if not audiences:
        raise AuthError("ID tokens are not accepted here (no accounts are configured)")
    expired = _expired_at(token)
    if expired is not None:
        raise AuthError(f"the ID token expired at {expired.isoformat()}; sign in again")
    try:
        claims = id_token.verify_token(
            token, google.auth.transport.requests.Request(),
            audience=audiences, certs_url=settings.google_certs_url,
        )
    except (ValueError, gexc.GoogleAuthError) as exc:
        raise AuthError(f"the ID token is not valid: {exc}") from exc
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise AuthError(f"the ID token was not issued by Google ({claims.get('iss')})")
    email = str(claims.get("email") or "")
    verified = bool(claims.get("email_verified"))
    if claims["aud"] == people:
        if not verified or not allowed_person(email, settings.web_users):
            raise AuthError(f"the Google account {email or '(no email)'} may not use this page")
        return Principal(owner=f"user:{email.lower()}")
    if not verified or email not in settings.api_service_accounts:
        raise AuthError(f"the service account {email} may not use this API")
    return Principal(owner=f"sa:{email}")


GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


def _expired_at(token: str) -> datetime | None:
    """When the token expired, if it has (read before its signature is checked, only to
    word the refusal: an expired token is refused either way)."""
    from google.auth import jwt

    try:
        exp = jwt.decode(token, verify=False).get("exp")  # type: ignore[no-untyped-call]
    except ValueError:
        return None
    if isinstance(exp, int | float) and exp < time.time():
        return datetime.fromtimestamp(exp, UTC)
    return None


def allowed_person(email: str, allowed: list[str]) -> bool:
    """Whether `email` is listed in `allowed`, itself or by its @domain (case-insensitive)."""
    email = email.lower()
    domain = "@" + email.rpartition("@")[2]
    return any(entry.lower() in (email, domain) for entry in allowed)
