"""Push busybox, pull it into a fresh engine, run it: against a registry with
no auth, with htpasswd (basic) auth and with token auth."""

from __future__ import annotations

import json
import stat

import pytest

pytestmark = pytest.mark.root


def test_push_pull_run_round_trip(any_registry, busybox_env, fresh_env):
    reg = any_registry
    ref = f"{reg.host}/berth/busybox:rt"
    for env in (busybox_env, fresh_env):
        if reg.needs_login:
            p = reg.login(env)
            assert p.returncode == 0, p.stderr
            assert p.stdout.strip() == "Login Succeeded"
    busybox_env.berth("tag", "busybox", ref, check=True)
    push = busybox_env.berth("push", ref, check=True)
    assert f"The push refers to repository [{reg.host}/berth/busybox]" in push.stdout
    assert ": Pushed" in push.stdout
    assert "rt: digest: sha256:" in push.stdout

    pull = fresh_env.berth("pull", ref, check=True)
    lines = pull.stdout.splitlines()
    assert lines[0] == "rt: Pulling from berth/busybox"
    assert any(line.endswith(": Pull complete") for line in lines)
    assert lines[-2] == f"Status: Downloaded newer image for {ref}"
    assert lines[-1] == ref
    pushed_digest = push.stdout.split("digest: ")[1].split()[0]
    assert f"Digest: {pushed_digest}" in lines

    # The same image (same ID) on both sides, with the pushed digest recorded on both.
    src = json.loads(busybox_env.berth("image", "inspect", ref, check=True).stdout)[0]
    dst = json.loads(fresh_env.berth("image", "inspect", ref, check=True).stdout)[0]
    assert src["Id"] == dst["Id"]
    assert f"{reg.host}/berth/busybox@{pushed_digest}" in dst["RepoDigests"]
    assert f"{reg.host}/berth/busybox@{pushed_digest}" in src["RepoDigests"]

    run = fresh_env.berth("run", "--rm", ref, "sh", "-c", "echo pulled and running", check=True)
    assert run.stdout == "pulled and running\n"

    again = fresh_env.berth("pull", ref, check=True)
    assert f"Status: Image is up to date for {ref}" in again.stdout
    # As Docker: an image already here whole gets no per-layer lines.
    assert again.stdout.splitlines() == [
        "rt: Pulling from berth/busybox",
        f"Digest: {pushed_digest}",
        f"Status: Image is up to date for {ref}",
        ref,
    ], again.stdout

    events = fresh_env.berth(
        "events", "--format", "{{.Action}} {{.Actor.Attributes.name}}", check=True
    )
    assert f"pull {ref}" in events.stdout.splitlines()
    src_events = busybox_env.berth("events", "--format", "{{.Action}}", check=True).stdout.split()
    assert "push" in src_events


def test_login_stores_credentials_mode_0600_and_logout_forgets(registry_basic, eng_env):
    reg = registry_basic
    p = reg.login(eng_env)
    assert p.returncode == 0, p.stderr
    auth = eng_env.root / "auth.json"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    data = json.loads(auth.read_text())
    assert list(data["auths"]) == [reg.host]
    assert "alice" not in auth.read_text()  # base64, as Docker's config.json
    out = eng_env.berth("logout", reg.host, check=True)
    assert out.stdout.strip() == f"Removing login credentials for {reg.host}"
    assert json.loads(auth.read_text())["auths"] == {}
    again = eng_env.berth("logout", reg.host, check=True)
    assert again.stdout.strip() == f"Not logged in to {reg.host}"


def test_authfile_flag_and_env(registry_basic, eng_env, tmp_path):
    reg = registry_basic
    alt = tmp_path / "alt" / "auth.json"
    p = eng_env.berth(
        "login",
        "--authfile",
        str(alt),
        "-u",
        "alice",
        "--password-stdin",
        reg.host,
        input=b"wonderland\n",
    )
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(alt.stat().st_mode) == 0o600
    assert not (eng_env.root / "auth.json").exists()
    eng = eng_env.engine()
    assert eng.registry_logins(auth_file=alt) == [reg.host]


def test_image_pull_and_push_subcommands(registry_plain, busybox_env, fresh_env):
    ref = f"{registry_plain.host}/sub/busybox:v1"
    busybox_env.berth("tag", "busybox", ref, check=True)
    p = busybox_env.berth("image", "push", "-q", ref, check=True)
    assert p.stdout.strip() == ref
    p = fresh_env.berth("image", "pull", "-q", ref, check=True)
    assert p.stdout.strip() == ref
    assert fresh_env.engine().images.get(ref).id == busybox_env.engine().images.get(ref).id


def test_all_tags_push_and_pull(registry_plain, busybox_env, fresh_env):
    repo = f"{registry_plain.host}/alltags/busybox"
    for tag in ("one", "two"):
        busybox_env.berth("tag", "busybox", f"{repo}:{tag}", check=True)
    p = busybox_env.berth("push", "-a", repo, check=True)
    assert "one: digest: sha256:" in p.stdout and "two: digest: sha256:" in p.stdout
    bad = busybox_env.berth("push", "-a", f"{repo}:one")
    assert bad.returncode == 125 and "tag can't be used with --all-tags" in bad.stderr
    p = fresh_env.berth("pull", "-a", repo, check=True)
    assert "one: Pulling from alltags/busybox" in p.stdout
    assert "two: Pulling from alltags/busybox" in p.stdout
    tags = sorted(fresh_env.engine().images.get(f"{repo}:one").repo_tags)
    assert tags == [f"{repo}:one", f"{repo}:two"]
