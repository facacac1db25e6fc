"""Registry authentication: ``WWW-Authenticate`` challenges and bearer tokens.

A registry answers 401 with a challenge. ``Basic`` means: send the user and
password on every request. ``Bearer realm=...,service=...,scope=...`` means:
ask the token server at ``realm`` (with the user and password, if any, as
Basic auth) for a token covering the scopes (``repository:NAME:pull,push``),
then send ``Authorization: Bearer <token>``. Tokens are cached per set of
scopes until shortly before they expire (``expires_in``, at least 60 s as in
Docker); a registry that still answers 401 to a fresh token gets a one-line
explanation, telling an expired token (from the JWT's ``exp``) apart from a
refused scope.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from engine.registry.credentials import Credentials

MIN_TOKEN_LIFETIME = 60.0
EXPIRY_MARGIN = 10.0


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """RFC 7235 challenges from one or more ``WWW-Authenticate`` header values."""
    out: list[Challenge] = []
    for value in values:
        i, n = 0, len(value)
        current: Challenge | None = None
        while i < n:
            while i < n and value[i] in " \t,":
                i += 1
            start = i
            while i < n and value[i] not in " \t,=":
                i += 1
            word = value[start:i]
            if not word:
                break
            j = i
            while j < n and value[j] in " \t":
                j += 1
            if j < n and value[j] == "=":
                i = j + 1
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] == '"':
                    i += 1
                    buf = []
                    while i < n and value[i] != '"':
                        if value[i] == "\\" and i + 1 < n:
                            i += 1
                        buf.append(value[i])
                        i += 1
                    i += 1
                    param = "".join(buf)
                else:
                    start = i
                    while i < n and value[i] not in ",":
                        i += 1
                    param = value[start:i].strip()
                if current is not None:
                    current.params[word.lower()] = param
            else:
                current = Challenge(word.lower(), {})
                out.append(current)
    return out


def pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer over Basic (a registry may offer both); None if neither is offered."""
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.monotonic() deadline
    realm: str

    def valid(self) -> bool:
        return time.monotonic() < self.expires_at - EXPIRY_MARGIN


def token_url(challenge: Challenge, scopes: Iterable[str]) -> str:
    query = []
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    for s in sorted(set(scopes)):
        query.append(("scope", s))
    realm = challenge.realm
    if not query:
        return realm
    return realm + ("&" if "?" in realm else "?") + urlencode(query)


def parse_token_response(body: bytes, realm: str) -> Token:
    """The token server's JSON: ``token`` (or OAuth2's ``access_token``), ``expires_in``."""
    from engine.registry.errors import RegistryError

    try:
        data = json.loads(body)
        value = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        value, data = None, {}
    if not isinstance(value, str) or not value:
        raise RegistryError(f"token server {realm} answered without a token", obj=realm)
    try:
        lifetime = float(data.get("expires_in") or MIN_TOKEN_LIFETIME)
    except (TypeError, ValueError):
        lifetime = MIN_TOKEN_LIFETIME
    lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
    return Token(value, time.monotonic() + lifetime, realm)


def jwt_claims(token: str) -> dict | None:
    """The claims of a JWT, unverified (only to explain a refusal); None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def expired_at(token: str, now: float | None = None) -> str | None:
    """ISO time at which a JWT expired, if it has expired; None otherwise."""
    claims = jwt_claims(token) or {}
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        return None
    if exp > (time.time() if now is None else now):
        return None
    return datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
