"""Fixtures for the registry tests: three real registries on 127.0.0.1 (no
auth, htpasswd, token) started once per session and always stopped; a second
engine per test to pull into; images with several layers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest

from tests.conftest import _new_env, _teardown_env
from tests.engine.registry._servers import PASSWORD, USER, Registry, TokenServer, make_tls_pair


@dataclass
class RegistryUnderTest:
    kind: str  # "plain", "basic", "token"
    registry: Registry
    token: TokenServer | None = None

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def needs_login(self) -> bool:
        return self.kind != "plain"

    def login(self, env, user: str = USER, password: str = PASSWORD):
        return env.berth(
            "login", "-u", user, "--password-stdin", self.host, input=password.encode()
        )


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry-plain"))
    reg.start()
    try:
        yield RegistryUnderTest("plain", reg)
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory):
    work = tmp_path_factory.mktemp("registry-basic")
    htpasswd = work / "htpasswd"
    out = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    htpasswd.write_text(out)
    reg = Registry(work, "htpasswd", htpasswd=htpasswd)
    reg.start()
    try:
        yield RegistryUnderTest("basic", reg)
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory):
    server = TokenServer(tmp_path_factory.mktemp("token-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory, token_server):
    reg = Registry(tmp_path_factory.mktemp("registry-token"), "token", token=token_server)
    reg.start()
    try:
        yield RegistryUnderTest("token", reg, token_server)
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory):
    """No auth, HTTPS with a certificate from a CA of the test's own (``.ca``)."""
    work = tmp_path_factory.mktemp("registry-tls")
    cert, key, ca = make_tls_pair(work)
    reg = Registry(work, tls=(cert, key, ca))
    reg.start()
    try:
        yield RegistryUnderTest("tls", reg)
    finally:
        reg.stop()


@pytest.fixture(params=["plain", "basic", "token"])
def any_registry(request):
    """Each test using this runs against all three registries."""
    return request.getfixturevalue(f"registry_{request.param}")


@pytest.fixture
def fresh_env(tmp_path):
    """A second, empty engine in the same test (to pull what the first pushed)."""
    base = tmp_path / "fresh"
    base.mkdir()
    e = _new_env(base)
    yield e
    _teardown_env(e)


@pytest.fixture(autouse=True)
def _no_ambient_registry_settings(monkeypatch):
    # The engine under test reads these; a developer's own settings must not leak in.
    for var in ("BERTH_AUTH_FILE", "BERTH_INSECURE_REGISTRIES", "BERTH_MAX_CONCURRENT_DOWNLOADS"):
        monkeypatch.delenv(var, raising=False)
