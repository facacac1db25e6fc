"""Everything a registry operation needs from the engine's configuration:
the hosts policy, the credentials file, the blob-info cache; and clients."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.registry.blobinfo import BlobInfoCache
from engine.registry.client import RegistryClient
from engine.registry.credentials import Credentials, CredentialStore, default_path
from engine.registry.hosts import RegistryHosts


@dataclass
class RegistryContext:
    root: Path
    locks_dir: Path
    auth_file: Path | None = None
    env: dict = field(default_factory=lambda: dict(os.environ))
    _hosts: RegistryHosts | None = None

    @property
    def hosts(self) -> RegistryHosts:
        if self._hosts is None:
            self._hosts = RegistryHosts.load(self.root, self.env)
        return self._hosts

    @property
    def credentials(self) -> CredentialStore:
        path = self.auth_file or default_path(self.root, self.env)
        return CredentialStore(path, self.locks_dir / "registry-auth.lock")

    @property
    def blobinfo(self) -> BlobInfoCache:
        return BlobInfoCache(
            self.root / "registry" / "blobinfo.json", self.locks_dir / "registry-blobinfo.lock"
        )

    def client(self, domain: str, credentials: Credentials | None = None) -> RegistryClient:
        """A client for ``domain``, with the given credentials or the stored ones."""
        creds = credentials if credentials is not None else self.credentials.get(domain)
        return RegistryClient(domain, hosts=self.hosts, credentials=creds)
