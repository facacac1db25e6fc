"""Which registries Berth may talk to, and how.

- Docker Hub (``docker.io``) is served by ``registry-1.docker.io``.
- Plain HTTP only for registries marked insecure: loopback (``localhost``,
  ``127.0.0.0/8``, ``::1``) always, others through ``BERTH_INSECURE_REGISTRIES``
  (comma- or space-separated ``host[:port]`` or CIDR) or ``insecure-registries``
  in ``<root>/registries.json`` (the key Docker's daemon.json uses). As with
  Docker, an insecure registry is tried over HTTPS first (certificate not
  checked), then over HTTP.
- Extra CAs and client certificates as Docker reads them:
  ``<dir>/<host[:port]>/*.crt`` (CAs), ``*.cert`` + ``*.key`` (client pair), with
  ``<dir>`` one of ``<root>/certs.d``, ``/etc/docker/certs.d``, ``/etc/containers/certs.d``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InvalidArgument

if TYPE_CHECKING:
    import ssl

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
CONFIG_FILE = "registries.json"
ENV_INSECURE = "BERTH_INSECURE_REGISTRIES"
SYSTEM_CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))


def split_host(domain: str) -> tuple[str, str]:
    """``host:port`` / ``[v6]:port`` -> (host, port or "")."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = domain.partition(":")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class RegistryHosts:
    insecure: tuple[str, ...] = ()
    certs_dirs: tuple[Path, ...] = SYSTEM_CERTS_DIRS
    _contexts: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, root: Path, env: Mapping[str, str] | None = None) -> RegistryHosts:
        env = os.environ if env is None else env
        entries: list[str] = []
        path = Path(root) / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read registry configuration {path}: {e}") from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"registry configuration {path}: expected a JSON object")
        listed = data.get("insecure-registries") or []
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            raise InvalidArgument(
                f"registry configuration {path}: insecure-registries must be a list of strings"
            )
        entries += listed
        entries += env.get(ENV_INSECURE, "").replace(",", " ").split()
        cleaned = []
        for e in entries:
            e = e.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
            if e:
                cleaned.append(e)
        return cls(insecure=tuple(cleaned), certs_dirs=(Path(root) / "certs.d", *SYSTEM_CERTS_DIRS))

    @staticmethod
    def endpoint(domain: str) -> str:
        """The host[:port] to connect to for a reference's domain."""
        return DOCKER_HUB_ENDPOINT if domain == DOCKER_HUB else domain

    def is_insecure(self, domain: str) -> bool:
        host, _port = split_host(domain)
        if _is_loopback(host):
            return True
        for entry in self.insecure:
            if entry == domain or entry == host:
                return True
            if "/" in entry:
                try:
                    net = ipaddress.ip_network(entry, strict=False)
                    if ipaddress.ip_address(host) in net:
                        return True
                except ValueError:
                    continue
        return False

    def schemes(self, domain: str) -> tuple[str, ...]:
        return ("https", "http") if self.is_insecure(domain) else ("https",)

    def ssl_context(self, domain: str, *, verify: bool = True) -> ssl.SSLContext:
        """The TLS context for ``domain`` (cached): extra CAs and client
        certificates from the certs.d directories; no verification for insecure ones."""
        key = (domain, verify)
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = self._contexts[key] = self._make_context(domain, verify)
            return ctx

    def _make_context(self, domain: str, verify: bool) -> ssl.SSLContext:
        import ssl

        if verify:
            ctx = ssl.create_default_context()
        else:
            # No CA store to load (that alone costs ~70 ms): nothing is verified.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for base in self.certs_dirs:
            d = base / domain
            if not d.is_dir():
                continue
            for crt in sorted(d.glob("*.crt")):
                try:
                    ctx.load_verify_locations(cafile=str(crt))
                except (OSError, ssl.SSLError) as e:
                    raise InvalidArgument(
                        f"bad CA certificate {crt} for registry {domain}: {e}"
                    ) from None
            for cert in sorted(d.glob("*.cert")):
                key_file = cert.with_suffix(".key")
                if not key_file.is_file():
                    raise InvalidArgument(f"client certificate {cert} has no key {key_file.name}")
                try:
                    ctx.load_cert_chain(str(cert), str(key_file))
                except (OSError, ssl.SSLError) as e:
                    raise InvalidArgument(
                        f"bad client certificate {cert} for registry {domain}: {e}"
                    ) from None
        return ctx
