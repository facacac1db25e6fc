"""A registry that misbehaves on purpose: a front for a real ``docker-registry``
(it forwards every request) that can demand its own Basic or Bearer auth, speak
TLS, record what clients sent it, and let a test replace any answer (a
redirect to another host, an upload Location elsewhere, an endless manifest).

What a hostile or unusual registry does cannot be had from docker-registry
itself; everything the hooks leave alone is the real registry's answer.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Hook = Callable[["_Handler"], bool]  # True: the hook answered


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        proxy.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
            }
        )
        if proxy.auth is not None and self.headers.get("Authorization") != proxy.auth[0]:
            self.reply(401, {"WWW-Authenticate": proxy.auth[1]}, b'{"errors":[]}')
            return
        if proxy.hook is not None and proxy.hook(self):
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers.pop("Authorization", None)
        headers["Host"] = proxy.netloc  # docker-registry builds its Locations from it
        if proxy.tls is not None:
            headers["X-Forwarded-Proto"] = "https"
        if body or self.command in ("PUT", "PATCH", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            out.pop("Content-Length", None)
            if proxy.rewrite is not None:
                proxy.rewrite(self, resp.status, out)
            self.send_response(resp.status)
            for k, v in out.items():
                self.send_header(k, v)
            length = resp.headers.get("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            delay = proxy.throttle(self) if proxy.throttle is not None else 0.0
            if not delay:
                self.wfile.write(data)
                return
            for i in range(0, len(data), 65536):  # slowly: a test interrupts the transfer
                self.wfile.write(data[i : i + 65536])
                self.wfile.flush()
                proxy.sent_slowly += len(data[i : i + 65536])
                time.sleep(delay)
        finally:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: RegistryProxy


class RegistryProxy:
    """``start()`` listens on 127.0.0.1:<free port> in front of ``upstream``
    (host:port of a plain-HTTP docker-registry)."""

    def __init__(self, upstream: str, *, tls: tuple[Path, Path, Path] | None = None):
        self.upstream = upstream
        self.tls = tls
        self.auth: tuple[str, str] | None = None  # (expected Authorization, challenge)
        self.hook: Hook | None = None
        self.rewrite: Callable[[_Handler, int, dict], None] | None = None
        self.requests: list[dict] = []
        self.throttle: Callable[[_Handler], float] | None = None  # seconds per 64 KiB
        self.sent_slowly = 0
        self._httpd: _Server | None = None

    def require_basic(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = (f"Basic {token}", 'Basic realm="proxy"')

    def require_bearer(self, token: str, realm: str, service: str = "proxy") -> None:
        self.auth = (f"Bearer {token}", f'Bearer realm="{realm}",service="{service}"')

    @property
    def netloc(self) -> str:
        assert self._httpd is not None
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    host = netloc

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}"

    def start(self) -> RegistryProxy:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.proxy = self
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, name="proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> RegistryProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
