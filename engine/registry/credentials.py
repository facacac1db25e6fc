"""Registry credentials: ``berth login`` writes them, pulls and pushes read them.

One JSON file in the shape of Docker's ``config.json``::

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

Docker Hub's key is ``https://index.docker.io/v1/``, as Docker writes it.
By default the file is ``<root>/auth.json``: the engine root is shared by the
CLI, the dashboard and its workers on a host, so a login there serves them
all (the root is root's only). ``BERTH_AUTH_FILE`` (or ``--authfile``) names
another file, such as ``~/.config/berth/auth.json`` for a per-user login.
The file is created with mode 0600 and replaced atomically under a lock;
keys Berth does not know (``credHelpers``...) are kept as they are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidArgument
from engine.locks import file_lock

AUTH_FILE = "auth.json"
ENV_AUTH_FILE = "BERTH_AUTH_FILE"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(username={self.username!r}, password=***)"


def server_key(server: str) -> str:
    """The key a server is stored under: ``host[:port]``, or Docker Hub's URL."""
    s = (server or "").strip()
    for scheme in ("https://", "http://"):
        if s.startswith(scheme):
            s = s[len(scheme) :]
    s = s.split("/", 1)[0].lower()
    if not s or s in _HUB_NAMES:
        return DOCKER_HUB_KEY
    return s


def default_path(root: Path, env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env[ENV_AUTH_FILE]) if env.get(ENV_AUTH_FILE) else Path(root) / AUTH_FILE


class CredentialStore:
    def __init__(self, path: Path, lock_path: Path):
        self.path = Path(path)
        self.lock_path = Path(lock_path)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read the credentials file {self.path}: {e}") from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"credentials file {self.path}: expected a JSON object")
        return data

    def _write(self, data: dict) -> None:
        """Replace the file atomically; called with the lock held, so any staging
        file of an earlier writer is one that was killed: it holds a password, it goes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.urandom(16).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask said
                json.dump(data, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, server: str) -> Credentials | None:
        key = server_key(server)
        auths = self._read().get("auths") or {}
        for k, entry in auths.items():
            if server_key(k) != key or not isinstance(entry, dict):
                continue
            if entry.get("username") and entry.get("password") is not None:
                return Credentials(entry["username"], entry["password"])
            raw = entry.get("auth")
            if not raw:
                continue
            try:
                user, sep, password = base64.b64decode(raw).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(
                    f"credentials file {self.path}: the entry for {k} is not base64 of user:password"
                ) from None
            if sep:
                return Credentials(user, password)
        return None

    def store(self, server: str, creds: Credentials) -> str:
        key = server_key(server)
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        with file_lock(self.lock_path):
            data = self._read()
            auths = data.setdefault("auths", {})
            for k in [k for k in auths if server_key(k) == key]:
                del auths[k]
            auths[key] = {"auth": token}
            self._write(data)
        return key

    def remove(self, server: str) -> bool:
        key = server_key(server)
        with file_lock(self.lock_path):
            data = self._read()
            auths = data.get("auths") or {}
            gone = [k for k in auths if server_key(k) == key]
            if not gone:
                return False
            for k in gone:
                del auths[k]
            self._write(data)
        return True

    def servers(self) -> list[str]:
        return sorted((self._read().get("auths") or {}).keys())
