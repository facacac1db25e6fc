"""HTTPS registries: certificates checked against the system's CAs plus
``certs.d/<host>/*.crt``; an untrusted certificate is a clear error."""

from __future__ import annotations

import shutil

import pytest

from engine.registry.client import RegistryClient
from engine.registry.errors import Unreachable
from engine.registry.hosts import RegistryHosts

pytestmark = pytest.mark.root


class Strict(RegistryHosts):
    """As for any host that is not loopback: HTTPS only, certificates checked."""

    def is_insecure(self, domain: str) -> bool:
        return domain in self.insecure


def test_certificate_checked_against_certs_d(registry_tls, tmp_path):
    host = registry_tls.host
    with (
        RegistryClient(host, hosts=Strict(certs_dirs=())) as client,
        pytest.raises(Unreachable) as exc,
    ):
        client.ping()
    assert str(exc.value).startswith(f"cannot reach registry {host}: TLS certificate not trusted")
    certs = tmp_path / "certs.d"
    (certs / host).mkdir(parents=True)
    shutil.copy(registry_tls.registry.tls[2], certs / host / "ca.crt")
    with RegistryClient(host, hosts=Strict(certs_dirs=(certs,))) as client:
        client.ping()
        assert client.scheme == "https"


def test_push_pull_run_over_https(registry_tls, busybox_env, fresh_env):
    ref = f"{registry_tls.host}/tls/busybox:latest"
    # The engine root's certs.d is where Berth looks first.
    ca_dir = fresh_env.root / "certs.d" / registry_tls.host
    ca_dir.mkdir(parents=True)
    shutil.copy(registry_tls.registry.tls[2], ca_dir / "ca.crt")
    busybox_env.berth("tag", "busybox", ref, check=True)
    busybox_env.berth("push", "-q", ref, check=True)
    fresh_env.berth("pull", "-q", ref, check=True)
    hosts = RegistryHosts.load(fresh_env.root, {})
    assert hosts.certs_dirs[0] == fresh_env.root / "certs.d"
    run = fresh_env.berth("run", "--rm", ref, "echo", "over tls", check=True)
    assert run.stdout == "over tls\n"
