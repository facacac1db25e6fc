"""What `run --rm` and `rm` leave behind, read from the kernel and the runtime's
state: nothing, also when the exit path skips `crun delete` and when veths are
deleted in the background."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def _runtime_records(env) -> list[str]:
    out = []
    for rt in ("crun", "runc"):
        d = env.run / "runtime" / rt
        out += [f"{rt}/{p.name}" for p in d.iterdir()] if d.exists() else []
    return out


def _cgroup_dirs(env, cid: str) -> list[str]:
    return [str(d) for d in Path("/sys/fs/cgroup").glob(f"*/{env.prefix}/{cid}")]


def _pids_of(pattern: str) -> list[str]:
    p = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return p.stdout.split()


def test_rm_leaves_no_runtime_record_cgroup_or_mount(busybox_env):
    b = busybox_env.berth
    assert b("run", "--rm", "--network", "none", "busybox", "true").returncode == 0
    assert _runtime_records(busybox_env) == []
    cid = b("run", "-d", "--network", "none", "busybox", "sleep", "300", check=True).stdout.strip()
    assert _runtime_records(busybox_env) == [f"crun/{cid}"]
    b("kill", cid, check=True)  # dies by SIGKILL: the exit path removes the record
    b("wait", cid, check=True)
    b("rm", cid, check=True)
    assert _runtime_records(busybox_env) == []
    assert _cgroup_dirs(busybox_env, cid) == []
    assert f"/containers/{cid}/" not in Path("/proc/self/mountinfo").read_text()
    assert not Path(f"/run/netns/{busybox_env.prefix}-{cid[:12]}").exists()


def test_process_outliving_init_is_killed_with_the_cgroup(busybox_env):
    # Without its own PID namespace a child survives the container's init; the
    # exit path (which no longer runs `crun delete`) must still kill it.
    marker = f"sleep 4{int(time.time() * 1000) % 100000}"
    p = busybox_env.berth(
        "run", "--rm", "--pid", "host", "--network", "none", "busybox",
        "sh", "-c", f"{marker} >/dev/null 2>&1 </dev/null & exit 0",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + 5
    while _pids_of(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_of(marker) == []
    assert _runtime_records(busybox_env) == []
    parent = Path("/sys/fs/cgroup/memory") / busybox_env.prefix
    assert [d.name for d in parent.iterdir() if d.is_dir()] == []


def test_bridge_run_plumbs_final_names_and_leaves_no_veth(net_env):
    b = net_env.berth
    ns = net_env.host_netns
    cid = b("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        info = json.loads(b("inspect", cid, check=True).stdout)[0]
        net = info["NetworkSettings"]["Networks"]["bridge"]
        inside = b("exec", cid, "ip", "-o", "addr", "show", "dev", "eth0", check=True).stdout
        assert f"inet {net['IPAddress']}/{net['IPPrefixLen']}" in inside
        link = b("exec", cid, "cat", "/sys/class/net/eth0/address", check=True).stdout.strip()
        assert link == net["MacAddress"]
        route = b("exec", cid, "ip", "route", check=True).stdout
        assert f"default via {net['Gateway']} dev eth0" in route
        veths = subprocess.run(
            ["ip", "-n", ns, "-o", "link", "show", "type", "veth"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert veths.count("master") == 1
    finally:
        b("rm", "-f", cid, check=True)
    veths = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    assert veths.strip() == ""
    assert not Path(f"/run/netns/{net_env.prefix}-{cid[:12]}").exists()


def test_bridge_deleted_or_downed_behind_our_back_is_healed_at_start(net_env):
    b = net_env.berth
    ns = net_env.host_netns
    assert b("run", "--rm", "busybox", "true").returncode == 0  # makes the default bridge
    bridge = json.loads(b("network", "inspect", "bridge", check=True).stdout)[0]
    name = bridge["Options"].get("com.docker.network.bridge.name") or f"{net_env.prefix}0"
    gw = bridge["IPAM"]["Config"][0]["Gateway"]
    subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", name], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", name, "down"], check=True)
    p = b("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gw)
    assert p.returncode == 0, p.stdout + p.stderr
    subprocess.run(["ip", "-n", ns, "link", "del", name], check=True)
    p = b("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gw)
    assert p.returncode == 0, p.stdout + p.stderr


def _root_mount_options(env, *flags: str) -> str:
    p = env.berth(
        "run", *flags, "--network", "none", "busybox", "grep", " / / ", "/proc/self/mountinfo"
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_only_rm_layers_are_volatile(busybox_env):
    assert "volatile" in _root_mount_options(busybox_env, "--rm")
    out = _root_mount_options(busybox_env, "--name", "kept")
    assert "volatile" not in out
    busybox_env.berth("rm", "kept", check=True)


def test_rm_container_keeps_files_copied_in_before_it_runs(busybox_env, tmp_path):
    b = busybox_env.berth
    cid = b("create", "--rm", "--network", "none", "busybox", "cat", "/given").stdout.strip()
    (tmp_path / "given").write_text("kept\n")
    b("cp", str(tmp_path / "given"), f"{cid}:/given", check=True)
    p = b("start", "-a", cid)
    assert p.returncode == 0 and p.stdout == "kept\n", p.stderr


def test_volatile_layer_is_mounted_again_only_if_made_this_boot(busybox_env):
    from engine import mounts
    from engine.containers import lifecycle
    from engine.containers.options import CreateOptions
    from engine.containers.records import Paths

    eng = busybox_env.engine()
    c = eng.create_container(
        CreateOptions(image="busybox", command=["true"], network="none", auto_remove=True)
    )
    p = Paths(eng.config, c.id)
    lower = eng.images.layer_dirs(eng.images.get_by_id(c.image_id))

    def mount_write_unmount(volatile: bool, name: str) -> None:
        lifecycle.prepare_overlay(p, volatile)
        mounts.mount_overlay(lower, p.upper, p.work, p.merged, volatile=volatile)
        try:
            (p.merged / name).write_text(name)
        finally:
            mounts.umount(str(p.merged))

    mount_write_unmount(True, "first")
    assert mounts.volatile_marker(p.work).exists()
    mount_write_unmount(True, "second")  # same boot: the marker goes, the layer stays
    assert sorted(f.name for f in p.upper.iterdir()) == ["first", "second"]
    (p.dir / "volatile-boot").write_text("another-boot")  # as after a host crash
    mount_write_unmount(False, "third")  # the layer may have lost writes: it starts empty
    assert sorted(f.name for f in p.upper.iterdir()) == ["third"]
    assert not mounts.volatile_marker(p.work).exists()
    eng.remove_container(c.id, force=True)
