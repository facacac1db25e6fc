"""HTTP for the registry client, over ``http.client``.

``Transport`` keeps a small pool of keep-alive connections per (scheme, host),
so parallel blob fetches each get their own connection and a pull reuses
them from the manifest to the last layer. A request on a pooled connection
that the server has meanwhile closed is retried once on a new one. Bodies
that a registry could make endless are read with a limit (``read_limited``),
and URLs shown in errors lose their query and user info (``redact_url``).
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from engine import __version__
from engine.errors import InvalidArgument
from engine.registry.hosts import RegistryHosts

if TYPE_CHECKING:
    import ssl

USER_AGENT = f"berth/{__version__}"
DEFAULT_TIMEOUT = 30.0  # seconds, for connecting and for each read (Docker dials for 30 s)
BLOCKSIZE = 1 << 20  # http.client sends file bodies in blocks of this size
MAX_IDLE = 8
_STALE = (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)

Body = bytes | Iterable[bytes] | None
BodyFactory = Callable[[], Body]


def default_timeout() -> float:
    try:
        return float(os.environ.get("BERTH_REGISTRY_TIMEOUT", "") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact_url(url: str) -> str:
    """A URL fit for an error message: no user info and no query (a pre-signed
    CDN or upload URL carries its signature there), the path shortened."""
    parts = urlsplit(url)
    if not parts.scheme:
        return _one_line(parts.path, 120)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return _one_line(f"{parts.scheme}://{host}{port}{parts.path}", 120)


def describe_oserror(e: BaseException) -> str:
    """A short cause for a connection failure: "connection refused", "timed out"..."""
    import ssl

    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name ({e.strerror or e})"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({e.verify_message or e})"
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed ({e.reason or e})"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return _one_line(str(e) or type(e).__name__)


def read_limited(resp: Response, limit: int, what: str) -> bytes:
    """The whole body, refused (and the connection dropped) past ``limit``
    bytes, so a registry cannot make a client hold more than that in memory."""
    if resp.length is not None and resp.length > limit:
        resp.close()
        raise InvalidArgument(f"{what} is larger than {limit} bytes", obj=what)
    data = resp.read(limit + 1)
    if len(data) > limit:
        resp.close()
        raise InvalidArgument(f"{what} is larger than {limit} bytes", obj=what)
    resp.release()
    return data


# -- connections ------------------------------------------------------------------------------


class _Pool:
    """Idle keep-alive connections to one (scheme, host[:port])."""

    def __init__(self, scheme: str, netloc: str, context: ssl.SSLContext | None, timeout: float):
        self.scheme, self.netloc, self.context, self.timeout = scheme, netloc, context, timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def acquire(self, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop(), True
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.netloc, timeout=self.timeout, context=self.context, blocksize=BLOCKSIZE
            )
        else:
            conn = http.client.HTTPConnection(
                self.netloc, timeout=self.timeout, blocksize=BLOCKSIZE
            )
        return conn, False

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if conn.sock is not None and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class Response:
    """A response whose connection goes back to the pool once its body is read."""

    def __init__(
        self,
        raw: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        pool: _Pool,
        url: str,
        method: str,
    ):
        self.raw, self._conn, self._pool = raw, conn, pool
        self.url, self.method = url, method
        self.status, self.reason, self.headers = raw.status, raw.reason, raw.headers

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def length(self) -> int | None:
        value = self.headers.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def read(self, amt: int | None = None) -> bytes:
        data = self.raw.read(amt)
        if amt is None:
            self.release()
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        return self.raw.readinto(buf)

    def release(self) -> None:
        """Give the connection back (if the body was read to its end) or close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        raw = self.raw
        if not raw.isclosed() and raw.length is not None and raw.length <= 65536:
            try:
                raw.read()  # a small rest (or an empty HEAD body): read it, keep the connection
            except (OSError, http.client.HTTPException):
                conn.close()
                return
        if raw.isclosed() and not raw.will_close:
            self._pool.release(conn)
        else:
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def text(self, limit: int = 65536) -> str:
        try:
            data = self.raw.read(limit)
        except (OSError, http.client.HTTPException):
            data = b""
        self.release()
        return data.decode("utf-8", "replace")

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.release()
        else:
            self.close()


class Transport:
    """Pools of connections by (scheme, host, TLS verification)."""

    def __init__(self, hosts: RegistryHosts, timeout: float | None = None):
        self.hosts = hosts
        self.timeout = default_timeout() if timeout is None else timeout
        self._pools: dict[tuple[str, str, bool], _Pool] = {}
        self._lock = threading.Lock()

    def _pool(self, scheme: str, netloc: str, verify: bool) -> _Pool:
        key = (scheme, netloc, verify)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                ctx = self.hosts.ssl_context(netloc, verify=verify) if scheme == "https" else None
                pool = self._pools[key] = _Pool(scheme, netloc, ctx, self.timeout)
            return pool

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: Body = None,
        *,
        verify: bool = True,
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"unsupported URL {redact_url(url)!r}", obj=redact_url(url))
        pool = self._pool(parts.scheme, parts.netloc, verify)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        replayable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        for attempt in (0, 1):
            # A body that cannot be sent twice never goes on a connection the
            # server may have closed while it sat in the pool.
            conn, reused = pool.acquire(fresh=not replayable)
            try:
                conn.request(method, target, body=body, headers=hdrs)
                raw = conn.getresponse()
            except _STALE:
                conn.close()
                if reused and replayable and attempt == 0:
                    continue  # the server closed an idle connection: once more, on a new one
                raise
            except BaseException:
                conn.close()
                raise
            return Response(raw, conn, pool, url, method)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()


def _is_tls_mismatch(e: BaseException) -> bool:
    import ssl

    return isinstance(e, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(e)
