"""Clear one-line errors: wrong password (login and pull, basic and token),
expired token, no login, unknown image or repository, unreachable registry,
plain HTTP to a registry not marked insecure."""

from __future__ import annotations

import json

import pytest

from engine.errors import NotFound
from engine.registry.errors import Unauthorized, Unreachable
from tests.conftest import _new_env, _teardown_env
from tests.engine.registry._servers import PASSWORD, USER, free_port

pytestmark = pytest.mark.root


def _one_line_error(p) -> str:
    assert p.returncode == 125, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture(scope="module")
def pushed(registry_plain, registry_basic, registry_token, tmp_path_factory):
    """busybox pushed as <host>/auth/busybox:latest to each registry, once for the module."""
    env = _new_env(tmp_path_factory.mktemp("auth-source"))
    try:
        eng = env.engine()
        eng.bootstrap_image("busybox")
        out = {}
        for reg in (registry_plain, registry_basic, registry_token):
            ref = f"{reg.host}/auth/busybox:latest"
            eng.tag_image("busybox", ref)
            creds = {"username": USER, "password": PASSWORD} if reg.needs_login else None
            eng.push_image(ref, credentials=creds)
            out[reg.kind] = ref
        yield out
    finally:
        _teardown_env(env)


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_password_on_login(kind, request, eng_env):
    reg = request.getfixturevalue(f"registry_{kind}")
    p = reg.login(eng_env, USER, "not-the-password")
    err = _one_line_error(p)
    assert "incorrect username or password" in err
    assert reg.host in err
    assert not (eng_env.root / "auth.json").exists()


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_password_on_pull(kind, request, pushed, fresh_env):
    reg = request.getfixturevalue(f"registry_{kind}")
    eng = fresh_env.engine()
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        eng.pull_image(pushed[kind], credentials={"username": USER, "password": "wrong"})
    # The CLI, with wrong credentials stored by hand (as a stale login would leave them).
    import base64

    (fresh_env.root).mkdir(parents=True, exist_ok=True)
    stale = base64.b64encode(f"{USER}:stale".encode()).decode()
    (fresh_env.root / "auth.json").write_text(json.dumps({"auths": {reg.host: {"auth": stale}}}))
    err = _one_line_error(fresh_env.berth("pull", pushed[kind]))
    assert "incorrect username or password" in err


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_pull_without_login(kind, request, pushed, fresh_env):
    reg = request.getfixturevalue(f"registry_{kind}")
    err = _one_line_error(fresh_env.berth("pull", pushed[kind]))
    assert f"berth login {reg.host}" in err
    assert not fresh_env.engine().images.exists(pushed[kind])


def test_expired_token(registry_token, pushed, fresh_env):
    reg = registry_token
    login = reg.login(fresh_env)
    assert login.returncode == 0, login.stderr
    reg.token.expired = True
    try:
        err = _one_line_error(fresh_env.berth("pull", pushed["token"]))
        assert "expired" in err
        assert reg.token.realm in err
        assert not fresh_env.engine().images.exists(pushed["token"])
        # login checks the token on the registry too
        err = _one_line_error(reg.login(fresh_env))
        assert "expired" in err
    finally:
        reg.token.expired = False


def test_token_server_used_with_scopes(registry_token, pushed, fresh_env):
    reg = registry_token
    reg.login(fresh_env)
    reg.token.requests.clear()
    fresh_env.berth("pull", "-q", pushed["token"], check=True)
    scopes = [s for r in reg.token.requests for s in r["scopes"]]
    assert "repository:auth/busybox:pull" in scopes
    assert all(r["user"] == USER for r in reg.token.requests)


def test_unknown_tag_and_unknown_repository(registry_plain, pushed, eng_env):
    host = registry_plain.host
    err = _one_line_error(eng_env.berth("pull", f"{host}/auth/busybox:nosuchtag"))
    assert err == f"Error: manifest for {host}/auth/busybox:nosuchtag not found: manifest unknown"
    err = _one_line_error(eng_env.berth("pull", f"{host}/no/such/repo"))
    assert f"{host}/no/such/repo:latest" in err and "not found" in err
    with pytest.raises(NotFound):
        eng_env.engine().pull_image(f"{host}/auth/busybox:nosuchtag")


def test_unknown_digest(registry_plain, pushed, eng_env):
    ref = f"{registry_plain.host}/auth/busybox@sha256:{'0' * 64}"
    err = _one_line_error(eng_env.berth("pull", ref))
    assert "not found" in err


def test_unreachable_registry(eng_env):
    port = free_port()  # nothing listens there
    err = _one_line_error(eng_env.berth("pull", f"127.0.0.1:{port}/busybox"))
    assert (
        err
        == f"Error: cannot reach registry 127.0.0.1:{port}: https: connection refused; http: connection refused"
    )
    with pytest.raises(Unreachable):
        eng_env.engine().login(f"127.0.0.1:{port}", USER, PASSWORD)


def test_plain_http_only_for_insecure_registries(registry_plain, pushed, eng_env):
    """A registry not marked insecure is spoken to over HTTPS only: against a
    plain-HTTP registry that fails, with a hint. (Loopback is insecure by
    default, so this policy treats it as any other host.)"""
    from engine.registry.client import RegistryClient
    from engine.registry.hosts import RegistryHosts

    class Strict(RegistryHosts):
        def is_insecure(self, domain: str) -> bool:
            return domain in self.insecure

    strict = Strict()
    assert strict.schemes(registry_plain.host) == ("https",)
    with (
        RegistryClient(registry_plain.host, hosts=strict) as client,
        pytest.raises(Unreachable) as exc,
    ):
        client.ping()
    assert "TLS" in str(exc.value) and "BERTH_INSECURE_REGISTRIES" in str(exc.value)
    # Marked insecure: HTTPS first, then plain HTTP.
    allowed = Strict(insecure=(registry_plain.host,))
    with RegistryClient(registry_plain.host, hosts=allowed) as client:
        client.ping()
        assert client.scheme == "http"


def test_insecure_policy_sources(tmp_path):
    from engine.registry.hosts import RegistryHosts

    (tmp_path / "registries.json").write_text(
        json.dumps({"insecure-registries": ["reg.lan:5000", "10.9.0.0/16"]})
    )
    hosts = RegistryHosts.load(tmp_path, {"BERTH_INSECURE_REGISTRIES": "other.lan, 192.168.7.7:80"})
    assert hosts.schemes("reg.lan:5000") == ("https", "http")
    assert hosts.schemes("reg.lan:5001") == ("https",)
    assert hosts.schemes("10.9.3.4:5000") == ("https", "http")
    assert hosts.schemes("other.lan") == ("https", "http")
    assert hosts.schemes("192.168.7.7:80") == ("https", "http")
    assert hosts.schemes("registry.example.com") == ("https",)
    for loopback in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"):
        assert hosts.schemes(loopback) == ("https", "http")
    assert RegistryHosts.load(tmp_path / "none", {}).schemes("reg.lan:5000") == ("https",)
