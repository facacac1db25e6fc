"""What a registry's refusals and error replies mean, as one-line engine
errors that name the registry or repository and say what to do."""

from __future__ import annotations

import json

from engine.errors import EngineError, NotFound
from engine.registry import auth
from engine.registry.credentials import Credentials
from engine.registry.errors import RegistryError, Unauthorized
from engine.registry.transport import _one_line


def error_detail(text: str) -> tuple[str, str]:
    """(code, message) from a registry's ``{"errors": [...]}`` body, or ("", text)."""
    try:
        data = json.loads(text)
        errs = data.get("errors") if isinstance(data, dict) else None
        if errs and isinstance(errs, list) and isinstance(errs[0], dict):
            return str(errs[0].get("code", "")), _one_line(errs[0].get("message", ""))
        if isinstance(data, dict) and data.get("details"):
            return "", _one_line(data["details"])
    except ValueError:
        pass
    return "", _one_line(text, 200)


def refusal(
    domain: str,
    realm: str,
    credentials: Credentials | None,
    challenges: list[auth.Challenge],
    detail: tuple[str, str],
    used: str | None,
    scopes: tuple[str, ...],
    what: str,
) -> EngineError:
    """The error for a 401 that a retry with credentials did not cure: a wrong
    password, an expired token (from its ``exp``), a refused scope, no login."""
    c = auth.pick(challenges)
    code, message = detail
    login_hint = f": run 'berth login {domain}'"
    if used and used.startswith("Bearer "):
        token = used[len("Bearer ") :]
        exp = auth.expired_at(token)
        if exp:
            return Unauthorized(
                f"unauthorized: {domain} refused the token from {realm}: it expired at {exp} "
                "(check the token server's token lifetime and the clocks)",
                obj=domain,
            )
        if (c and c.params.get("error") == "insufficient_scope") or code == "DENIED":
            op = "push" if any(s.endswith(",push") for s in scopes) else "pull"
            if not credentials:
                return Unauthorized(
                    f"{op} access denied for {what}: the repository does not exist or needs a login{login_hint}",
                    obj=what,
                )
            return Unauthorized(
                f"denied: {op} access to {what} is denied for user {credentials.username!r}",
                obj=what,
            )
        return Unauthorized(
            f"unauthorized: {domain} refused the token from {realm}: {message or code or 'invalid token'}",
            obj=domain,
        )
    if used and used.startswith("Basic "):
        return Unauthorized(
            f"unauthorized: incorrect username or password for {domain}", obj=domain
        )
    if credentials and c is None:
        return Unauthorized(f"unauthorized: {domain}: {message or code}", obj=domain)
    return Unauthorized(
        f"unauthorized: authentication required by {domain}{login_hint}", obj=domain
    )


def reply_error(domain: str, status: int, reason: str, text: str, what: str) -> EngineError:
    """The error for a reply whose status was not the one expected, in Docker's words."""
    code, message = error_detail(text)
    if status == 404:
        if code == "MANIFEST_UNKNOWN":
            return NotFound(f"manifest for {what} not found: manifest unknown", obj=what)
        if code == "NAME_UNKNOWN":
            return NotFound(f"repository for {what} not found: name unknown", obj=what)
        if code == "BLOB_UNKNOWN":
            return NotFound(f"{what} not found: blob unknown to registry", obj=what)
        return NotFound(f"{what} not found on registry {domain}", obj=what)
    if status == 403 or code == "DENIED":
        return Unauthorized(
            f"denied: {message or 'requested access to the resource is denied'} ({what})",
            obj=what,
        )
    if status == 429 or code == "TOOMANYREQUESTS":
        return RegistryError(
            f"toomanyrequests: {message or 'rate limit reached'} ({what})", obj=what
        )
    detail = f"{code.lower()}: {message}" if code else message
    return RegistryError(
        f"{what}: registry {domain} answered HTTP {status} {reason}"
        + (f": {detail}" if detail else ""),
        obj=what,
    )
