"""A minimal blocking websocket client (RFC 6455) for the dashboard benchmarks: text
and binary frames, client-side masking, no extensions. Enough to drive the logs and
terminal sockets from a benchmark without a browser."""

from __future__ import annotations

import base64
import os
import socket
import struct


class WebSocketClosed(Exception):
    def __init__(self, code: int, status: str = ""):
        super().__init__(f"websocket closed ({code}) {status}")
        self.code = code


class WebSocket:
    def __init__(self, host: str, port: int, path: str, *, cookie: str = "", timeout: float = 30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{host}:{port}\r\n"
            + (f"Cookie: {cookie}\r\n" if cookie else "")
            + "\r\n"
        )
        self.sock.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed(0, buf.split(b"\r\n", 1)[0].decode(errors="replace"))
            buf += chunk
        status, _, rest = buf.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise WebSocketClosed(0, status.split(b"\r\n", 1)[0].decode(errors="replace"))
        self.buf = rest

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise WebSocketClosed(1006, "connection lost")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str | bytes:
        """The next message: str (text) or bytes (binary). Raises WebSocketClosed."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WebSocketClosed(code)
            if op == 0x9:  # ping
                self._send(0xA, payload)
                continue
            if op in (0x1, 0x2):
                kind = op
            parts.append(payload)
            if b0 & 0x80:
                data = b"".join(parts)
                return data.decode() if kind == 0x1 else data

    def _send(self, op: int, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def close(self) -> None:
        try:
            self._send(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()
