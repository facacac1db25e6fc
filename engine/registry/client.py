"""A client for the OCI distribution API (connections: transport.py).

``RegistryClient`` speaks to one registry: it finds the scheme on first
contact (HTTPS, then HTTP for registries marked insecure), answers 401
challenges (basic or bearer token, see auth.py) and turns the registry's
error replies into one-line engine errors that name the repository.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from urllib.parse import quote, urljoin, urlsplit

from engine.errors import EngineError
from engine.registry import auth
from engine.registry.credentials import Credentials
from engine.registry.errors import RegistryError, Unauthorized, Unreachable
from engine.registry.hosts import RegistryHosts
from engine.registry.manifests import MAX_MANIFEST
from engine.registry.replies import error_detail, refusal, reply_error
from engine.registry.transport import (  # noqa: F401  (describe_oserror: re-exported)
    Body,
    BodyFactory,
    Response,
    Transport,
    _is_tls_mismatch,
    _one_line,
    describe_oserror,
    read_limited,
    redact_url,
)

MAX_REDIRECTS = 5
MAX_TAG_LIST = 4 << 20  # one page of a tag list
MAX_TAG_PAGES = 1000  # 100,000 tags at Docker Hub's page size
_REDIRECTS = (301, 302, 303, 307, 308)


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


# -- the registry client ----------------------------------------------------------------------


class RegistryClient:
    """One registry (a reference's domain), used by one pull or push.

    Thread-safe: parallel blob transfers share the scheme, challenge and tokens.
    """

    def __init__(
        self,
        domain: str,
        *,
        hosts: RegistryHosts,
        credentials: Credentials | None = None,
        transport: Transport | None = None,
    ):
        self.domain = domain
        self.hosts = hosts
        self.netloc = hosts.endpoint(domain)
        self.credentials = credentials
        self.insecure = hosts.is_insecure(domain)
        self.transport = transport or Transport(hosts)
        self._own_transport = transport is None
        self._schemes = hosts.schemes(domain)
        self.scheme: str | None = None
        self._scheme_lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._challenge: auth.Challenge | None = None
        self._tokens: dict[frozenset, auth.Token] = {}

    def close(self) -> None:
        if self._own_transport:
            self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Sending --------------------------------------------------------------------------
    def _is_ours(self, url: str) -> bool:
        """An absolute URL on this registry's own host and port (not a CDN,
        not an upload service elsewhere): the only place credentials go."""
        return urlsplit(url).netloc == self.netloc

    def _refuse_plain_http(self, url: str, what: str) -> None:
        """Plain HTTP only to hosts marked insecure, whoever names the URL (a
        redirect, an upload Location, a token realm): over it a password or a
        token would cross the network in clear, and content could be swapped."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.hosts.is_insecure(parts.netloc):
            raise RegistryError(
                f"registry {self.domain} sent {what} {redact_url(url)}: refused, plain HTTP "
                f"to {parts.netloc}, which is not marked insecure",
                obj=self.domain,
            )

    def _send(self, method: str, target: str, headers: dict, body: Body) -> Response:
        """``target`` is a path on this registry or an absolute URL (a Location)."""
        if "://" in target:
            self._refuse_plain_http(target, "the location")
            try:
                return self.transport.send(
                    method,
                    target,
                    headers,
                    body,
                    verify=not (self.insecure and self._is_ours(target)),
                )
            except OSError as e:
                host = urlsplit(target).netloc
                what = f"registry {self.domain}" if host == self.netloc else host
                raise Unreachable(
                    f"cannot reach {what}: {describe_oserror(e)}", obj=self.domain
                ) from None
        if self.scheme is not None:
            return self._send(method, f"{self.scheme}://{self.netloc}{target}", headers, body)
        with self._scheme_lock:
            if self.scheme is not None:
                return self._send(method, f"{self.scheme}://{self.netloc}{target}", headers, body)
            failures = []
            for scheme in self._schemes:
                url = f"{scheme}://{self.netloc}{target}"
                try:
                    resp = self.transport.send(method, url, headers, body, verify=not self.insecure)
                except OSError as e:
                    failures.append((scheme, e))
                    continue
                self.scheme = scheme
                return resp
        causes = "; ".join(f"{s}: {describe_oserror(e)}" for s, e in failures)
        if len(failures) == 1:
            causes = describe_oserror(failures[0][1])
        hint = ""
        if not self.insecure and any(_is_tls_mismatch(e) for _, e in failures):
            hint = (
                " (if it serves plain HTTP, list it in BERTH_INSECURE_REGISTRIES"
                " or in insecure-registries of <root>/registries.json)"
            )
        raise Unreachable(f"cannot reach registry {self.domain}: {causes}{hint}", obj=self.domain)

    def request(
        self,
        method: str,
        target: str,
        *,
        scopes: Iterable[str] = (),
        headers: dict | None = None,
        body: Body | BodyFactory = None,
        ok: Iterable[int] = (200,),
        what: str = "",
    ) -> Response:
        """Send with authentication (answering one 401), follow redirects of
        GET/HEAD, and raise an engine error unless the status is in ``ok``."""
        scopes = tuple(scopes)
        ok = tuple(ok)
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            # A Location on another host (an upload service, a CDN) gets no credentials.
            used = self._authorization(scopes) if self._is_ours_target(target) else None
            if used:
                hdrs["Authorization"] = used
            resp = self._send(method, target, hdrs, body() if callable(body) else body)
            if resp.status != 401:
                break
            challenges = auth.parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
            detail = error_detail(resp.text())
            if (
                attempt == 0
                and self._is_ours_target(target)
                and self._authenticate(challenges, scopes, used)
            ):
                continue
            raise self._refused(challenges, detail, used, scopes, what)
        redirects = 0
        while resp.status in _REDIRECTS and method in ("GET", "HEAD") and resp.header("Location"):
            redirects += 1
            if redirects > MAX_REDIRECTS:
                resp.close()
                raise RegistryError(
                    f"{what or redact_url(target)}: too many redirects from {self.domain}"
                )
            location = urljoin(resp.url, resp.header("Location") or "")
            resp.release()
            hdrs = dict(headers or {})
            if self._is_ours(location):  # credentials never go to another host (a CDN)
                used = self._authorization(scopes)
                if used:
                    hdrs["Authorization"] = used
            resp = self._send(method, location, hdrs, None)
        if resp.status not in ok:
            raise self._error(resp, what or redact_url(target))
        return resp

    def _is_ours_target(self, target: str) -> bool:
        return "://" not in target or self._is_ours(target)

    # Authentication ---------------------------------------------------------------------
    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        c = self._challenge
        if c is None:
            return None  # anonymous until the registry asks
        if c.scheme == "basic":
            return auth.basic_header(self.credentials) if self.credentials else None
        key = frozenset(scopes)
        token = self._tokens.get(key)
        if token is None or not token.valid():
            with self._auth_lock:
                token = self._tokens.get(key)
                if token is None or not token.valid():
                    token = self._tokens[key] = self._fetch_token(c, scopes)
        return "Bearer " + token.value

    def _authenticate(
        self, challenges: list[auth.Challenge], scopes: tuple[str, ...], used: str | None
    ) -> bool:
        """Learn from a 401; True if a retry may succeed."""
        c = auth.pick(challenges)
        if c is None:
            return False
        with self._auth_lock:
            if c.scheme == "basic":
                self._challenge = c
                return bool(self.credentials) and not (used or "").startswith("Basic ")
            self._challenge = c
            key = frozenset(scopes)
            cached = self._tokens.get(key)
            if cached is not None and used != "Bearer " + cached.value and cached.valid():
                return True  # another thread has just fetched a new one
            wanted = set(scopes)
            if c.params.get("scope"):
                wanted |= set(c.params["scope"].split(" "))
            self._tokens[key] = self._fetch_token(c, tuple(wanted))
            return True

    def _fetch_token(self, c: auth.Challenge, scopes: Iterable[str]) -> auth.Token:
        realm = c.realm
        if not realm.startswith(("http://", "https://")):
            raise RegistryError(
                f"registry {self.domain} sent a bearer challenge without a usable realm ({realm!r})",
                obj=self.domain,
            )
        self._refuse_plain_http(realm, "a token realm")
        headers = {}
        if self.credentials:
            headers["Authorization"] = auth.basic_header(self.credentials)
        url = auth.token_url(c, scopes)
        try:
            resp = self.transport.send(
                "GET", url, headers, verify=not (self.insecure and self._is_ours(url))
            )
        except OSError as e:
            raise Unreachable(
                f"cannot reach the token server {realm}: {describe_oserror(e)}", obj=realm
            ) from None
        body = resp.text(1 << 20).encode()
        if resp.status in (401, 403):
            if self.credentials:
                raise Unauthorized(
                    f"unauthorized: incorrect username or password for {self.domain} "
                    f"(token server {realm} refused user {self.credentials.username!r})",
                    obj=self.domain,
                )
            raise Unauthorized(
                f"unauthorized: {self.domain} needs a login: run 'berth login {self.domain}'",
                obj=self.domain,
            )
        if resp.status != 200:
            code, message = error_detail(body.decode("utf-8", "replace"))
            raise RegistryError(
                f"token server {realm} answered HTTP {resp.status} {resp.reason}: {message or code}",
                obj=realm,
            )
        return auth.parse_token_response(body, realm)

    def _refused(
        self,
        challenges: list[auth.Challenge],
        detail: tuple[str, str],
        used: str | None,
        scopes: tuple[str, ...],
        what: str,
    ) -> EngineError:
        realm = self._challenge.realm if self._challenge else ""
        return refusal(self.domain, realm, self.credentials, challenges, detail, used, scopes, what)

    def _error(self, resp: Response, what: str) -> EngineError:
        return reply_error(self.domain, resp.status, resp.reason, resp.text(), what)

    # The distribution API -------------------------------------------------------------
    def ping(self) -> None:
        """``GET /v2/`` (authenticated if the registry asks): what ``login`` checks."""
        self.request("GET", "/v2/", what=f"registry {self.domain}").release()

    def get_manifest(
        self, repo: str, reference: str, accept: Iterable[str], what: str
    ) -> tuple[bytes, str, str]:
        """(body, Content-Type, Docker-Content-Digest or "")."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scopes=(pull_scope(repo),),
            headers={"Accept": ", ".join(accept)},
            what=what,
        )
        body = read_limited(resp, MAX_MANIFEST, f"manifest for {what}")
        ctype = (resp.header("Content-Type") or "").split(";")[0].strip()
        return body, ctype, resp.header("Docker-Content-Digest") or ""

    def put_manifest(
        self, repo: str, reference: str, data: bytes, media_type: str, what: str
    ) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scopes=(push_scope(repo),),
            headers={"Content-Type": media_type, "Content-Length": str(len(data))},
            body=data,
            ok=(200, 201, 202),
            what=what,
        )
        digest = resp.header("Docker-Content-Digest") or ""
        resp.release()
        return digest

    def blob_exists(
        self, repo: str, digest: str, scopes: Iterable[str] | None = None
    ) -> int | None:
        """The blob's size if the repository has it, None if not."""
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scopes=tuple(scopes) if scopes is not None else (pull_scope(repo),),
            ok=(200, 404),
            what=f"blob {digest}",
        )
        resp.release()
        if resp.status != 200:
            return None
        return resp.length if resp.length is not None else -1

    def get_blob(self, repo: str, digest: str, offset: int = 0) -> Response:
        headers = {"Range": f"bytes={offset}-"} if offset else None
        return self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scopes=(pull_scope(repo),),
            headers=headers,
            ok=(200, 206),
            what=f"blob {digest} of {self.domain}/{repo}",
        )

    def start_upload(
        self, repo: str, *, mount: str | None = None, from_repo: str | None = None
    ) -> str | None:
        """POST an upload; with ``mount``/``from_repo`` ask for a cross-repository
        mount first. None when the blob was mounted, else the upload's Location."""
        scopes = [push_scope(repo)]
        target = f"/v2/{repo}/blobs/uploads/"
        if mount and from_repo:
            scopes.append(pull_scope(from_repo))
            target += f"?mount={quote(mount)}&from={quote(from_repo)}"
        resp = self.request(
            "POST",
            target,
            scopes=scopes,
            headers={"Content-Length": "0"},
            ok=(201, 202),
            what=f"{self.domain}/{repo}",
        )
        resp.release()
        if resp.status == 201 and mount:
            return None
        location = resp.header("Location")
        if not location:
            raise RegistryError(f"registry {self.domain} started an upload without a Location")
        return urljoin(resp.url, location)

    def patch_upload(self, repo: str, location: str, body: Body, length: int | None = None) -> str:
        headers = {"Content-Type": "application/octet-stream"}
        if length is not None:
            headers["Content-Length"] = str(length)
        resp = self.request(
            "PATCH",
            location,
            scopes=(push_scope(repo),),
            headers=headers,
            body=body,
            ok=(202, 204),
            what=f"upload to {self.domain}/{repo}",
        )
        resp.release()
        return urljoin(resp.url, resp.header("Location") or location)

    def finish_upload(
        self, repo: str, location: str, digest: str, body: Body = None, length: int = 0
    ) -> None:
        sep = "&" if "?" in location else "?"
        resp = self.request(
            "PUT",
            f"{location}{sep}digest={quote(digest)}",
            scopes=(push_scope(repo),),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
            body=body,
            ok=(201, 204),
            what=f"blob {digest} for {self.domain}/{repo}",
        )
        resp.release()

    def list_tags(self, repo: str, what: str) -> list[str]:
        tags: list[str] = []
        target: str | None = f"/v2/{repo}/tags/list"
        seen: set[str] = set()
        while target:
            # A registry whose pages never end (or come round again) must not keep us here.
            if len(seen) >= MAX_TAG_PAGES or target in seen:
                raise RegistryError(
                    f"{what}: the tag list of registry {self.domain} did not end after "
                    f"{len(seen)} pages; refused",
                    obj=what,
                )
            seen.add(target)
            resp = self.request("GET", target, scopes=(pull_scope(repo),), what=what)
            link = resp.header("Link") or ""
            try:
                data = json.loads(read_limited(resp, MAX_TAG_LIST, f"tag list of {what}"))
                tags += [t for t in data.get("tags") or [] if isinstance(t, str)]
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: registry {self.domain} sent a bad tag list") from None
            target = None
            if 'rel="next"' in link and "<" in link:
                target = urljoin(resp.url, link[link.index("<") + 1 : link.index(">")])
        return tags
