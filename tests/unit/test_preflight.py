"""The preflight checks against a faked host: files under tmp, scripted commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.cgroups import CgroupLayout
from engine.config import EngineConfig
from engine.errors import HostNotReady
from engine.system.check import (
    CAP_SYS_RESOURCE,
    REQUIREMENTS,
    HostProbe,
    check_caps,
    check_cgroups,
    check_forward_policy,
    check_ip_forward,
    check_netns_dir,
    check_overlay,
    check_packages,
    choose_runtime,
    is_static_elf,
    nft_forward_drops,
    preflight,
)

CFG = EngineConfig(prefix="tpf")


class FakeCommands:
    """Scripted command results keyed by the argv's first words; the rest are 'not found'."""

    def __init__(self, table: dict[tuple[str, ...], tuple[int, str, str]]):
        self.table = table
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> tuple[int, str, str]:
        self.calls.append(cmd)
        for key, result in self.table.items():
            if tuple(cmd[: len(key)]) == key:
                return result
        return 127, "", "not found"


def _layout(tmp: Path, unified_ctls: str = "", version: str = "v1") -> CgroupLayout:
    unified = tmp / "cg" / "unified"
    unified.mkdir(parents=True, exist_ok=True)
    (unified / "cgroup.controllers").write_text(unified_ctls + "\n")
    ctls = {c: tmp / "cg" / c for c in ("cpu", "memory", "pids", "freezer")}
    return CgroupLayout(
        version=version, hybrid=version == "v1", controllers=ctls, unified=unified,
        fs_root=tmp / "cg",
    )  # fmt: skip


def _host(tmp: Path, *, which: dict[str, str] | None = None, commands=None, layout=None, **kw):
    which = which if which is not None else {"crun": "/usr/bin/crun", "runc": "/usr/sbin/runc"}
    lay = layout or _layout(tmp)
    return HostProbe(
        fs_root=tmp,
        run=commands or FakeCommands({}),
        which=which.get,
        rlimits=lambda: {"nofile": 20000, "nproc": 96365},
        detect_cgroups=lambda: lay,
        **kw,
    )


def _write(tmp: Path, path: str, text: str) -> None:
    p = tmp / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


# -- packages ---------------------------------------------------------------------------------


def test_missing_packages_are_named_with_the_apt_command(tmp_path: Path) -> None:
    host = _host(tmp_path, which={"conmon": "/usr/bin/conmon", "runc": "/usr/sbin/runc"})
    _write(tmp_path, "/usr/share/containers/seccomp.json", "{}")
    found = {f.id: f for f in check_packages(host)}
    assert found["pkg-conmon"].severity == "ok"
    assert found["pkg-golang-github-containers-common"].severity == "ok"
    assert found["pkg-crun"].severity == "warn"
    assert found["pkg-crun"].hint == "apt-get install -y crun"
    assert found["pkg-tini"].severity == "warn"
    # busybox present but not a static binary: the image needs busybox-static.
    _write(tmp_path, "/bin/busybox", "#!/bin/sh\n")
    found = {f.id: f for f in check_packages(host)}
    assert found["pkg-busybox-static"].severity == "warn"
    summary = found["packages"]
    for pkg in ("crun", "busybox-static", "tini", "nftables", "redis-server"):
        assert pkg in summary.hint
    assert summary.hint.startswith("apt-get install -y ")


def test_missing_conmon_is_an_error(tmp_path: Path) -> None:
    found = {f.id: f for f in check_packages(_host(tmp_path, which={}))}
    assert found["pkg-conmon"].severity == "error"
    assert found["pkg-golang-github-containers-common"].severity == "error"
    assert {r.package for r in REQUIREMENTS} >= {"conmon", "crun", "runc", "tini"}


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="no busybox")
def test_static_elf_detection() -> None:
    sh = shutil.which("ls")
    assert sh and not is_static_elf(Path(sh))  # dynamically linked
    assert not is_static_elf(Path("/etc/hostname"))
    # Debian's busybox-static is static, the plain busybox package is not.
    assert isinstance(is_static_elf(Path("/bin/busybox")), bool)


# -- cgroups and runtime ----------------------------------------------------------------------


def test_hybrid_hugetlb_is_explained_and_fixed_only_with_fix(tmp_path: Path) -> None:
    bad, good = _layout(tmp_path, "hugetlb"), _layout(tmp_path / "g")
    fixes: list[CgroupLayout] = []

    def fix(layout: CgroupLayout) -> CgroupLayout:
        fixes.append(layout)
        return good

    host = _host(tmp_path, layout=bad, fix_cgroups=fix)
    out, layout = check_cgroups(host, fix=False)
    hug = [f for f in out if f.id == "cgroups-hugetlb"][0]
    assert hug.severity == "warn" and "crun" in hug.message and "mount -t cgroup" in hug.message
    assert not hug.fixed and fixes == [] and layout is bad
    out, layout = check_cgroups(host, fix=True)
    hug = [f for f in out if f.id == "cgroups-hugetlb"][0]
    assert hug.fixed and fixes == [bad] and layout is good


def test_hugetlb_fix_failure_is_an_error(tmp_path: Path) -> None:
    def fail(_layout: CgroupLayout) -> CgroupLayout:
        raise HostNotReady("mount: EBUSY")

    host = _host(tmp_path, layout=_layout(tmp_path, "hugetlb"), fix_cgroups=fail)
    out, _ = check_cgroups(host, fix=True)
    hug = [f for f in out if f.id == "cgroups-hugetlb"][0]
    assert hug.severity == "error" and not hug.fixed and "EBUSY" in hug.message


VERSIONS = FakeCommands(
    {
        ("/usr/bin/crun", "--version"): (0, "crun version 1.8.1\ncommit: x\n", ""),
        ("/usr/sbin/runc", "--version"): (0, "runc version 1.1.5\n", ""),
    }
)


@pytest.mark.parametrize(
    ("runtime", "hugetlb", "which", "want"),
    [
        ("", "", None, "crun"),
        ("", "hugetlb", None, "runc"),
        ("", "", {"runc": "/usr/sbin/runc"}, "runc"),
        ("runc", "", None, "runc"),
        ("crun", "hugetlb", None, None),
        ("", "hugetlb", {"crun": "/usr/bin/crun"}, None),
        ("", "", {}, None),
    ],
)
def test_choose_runtime(tmp_path: Path, runtime: str, hugetlb: str, which, want) -> None:
    cfg = EngineConfig(prefix="tpf", runtime=runtime)
    host = _host(tmp_path, which=which, commands=VERSIONS)
    name, why = choose_runtime(cfg, _layout(tmp_path, hugetlb), host)
    assert name == want, why
    if hugetlb and want != "crun":
        assert "hybrid" in why


def test_crun_that_does_not_run_is_skipped(tmp_path: Path) -> None:
    cmds = FakeCommands(
        {("/usr/bin/crun",): (1, "", "boom"), ("/usr/sbin/runc",): (0, "runc 1\n", "")}
    )
    name, why = choose_runtime(CFG, _layout(tmp_path), _host(tmp_path, commands=cmds))
    assert name == "runc" and "crun does not run" in why


# -- kernel ------------------------------------------------------------------------------------


def test_overlay_from_proc_filesystems(tmp_path: Path) -> None:
    host = _host(tmp_path)
    _write(tmp_path, "/proc/filesystems", "nodev\tproc\n\text4\n")
    assert check_overlay(host, fix=False).severity == "error"
    _write(tmp_path, "/proc/filesystems", "nodev\tproc\nnodev\toverlay\n")
    assert check_overlay(host, fix=False).severity == "ok"


def test_cap_sys_resource_outside_bounding_set(tmp_path: Path) -> None:
    full = (1 << 41) - 1
    _write(
        tmp_path,
        "/proc/self/status",
        f"Name:\tx\nCapBnd:\t{full & ~(1 << CAP_SYS_RESOURCE):016x}\n",
    )
    f = check_caps(_host(tmp_path))
    assert f.severity == "ok" and "outside" in f.message and "--privileged" in f.message
    _write(tmp_path, "/proc/self/status", f"CapBnd:\t{full:016x}\n")
    assert "outside" not in check_caps(_host(tmp_path)).message


# -- networking --------------------------------------------------------------------------------

RULESET = """table ip filter {
\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy drop;
\t\tcounter packets 0 bytes 0 jump DOCKER-USER
\t}
\tchain INPUT {
\t\ttype filter hook input priority filter; policy drop;
\t}
}
table inet mine {
\tchain fwd {
\t\ttype filter hook forward priority 0; policy accept;
\t}
}
"""


def test_nft_forward_drop_parsing() -> None:
    assert nft_forward_drops(RULESET) == ["ip filter/FORWARD"]
    assert (
        nft_forward_drops(RULESET.replace("policy drop;\n\t\tcounter", "policy accept;\n\t\tc"))
        == []
    )
    assert nft_forward_drops("") == []


def test_docker_forward_drop_is_a_warning_with_a_hint(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/4242/comm", "dockerd\n")
    _write(tmp_path, "/proc/1/comm", "init\n")
    cmds = FakeCommands(
        {
            ("iptables", "-S", "FORWARD"): (0, "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n", ""),
            ("nft", "list", "ruleset"): (0, RULESET, ""),
        }
    )
    f = check_forward_policy(CFG, _host(tmp_path, commands=cmds))
    assert f.severity == "warn"
    assert "Docker daemon, pid 4242" in f.message
    assert f.message.count("FORWARD") == 1  # iptables-nft's chain is not named twice
    assert "DOCKER-USER -i tpf+" in f.hint


def test_forward_policy_ok_and_host_netns_prefix(tmp_path: Path) -> None:
    cmds = FakeCommands(
        {("ip", "netns", "exec", "hostns", "iptables"): (0, "-P FORWARD ACCEPT\n", "")}
    )
    host = _host(tmp_path, commands=cmds, netns_exec=["ip", "netns", "exec", "hostns"])
    assert check_forward_policy(CFG, host).severity == "ok"
    assert all(c[:4] == ["ip", "netns", "exec", "hostns"] for c in cmds.calls)


def test_forward_drop_without_docker(tmp_path: Path) -> None:
    cmds = FakeCommands({("nft", "list", "ruleset"): (0, RULESET, "")})
    f = check_forward_policy(CFG, _host(tmp_path, commands=cmds))
    assert f.severity == "warn" and "Docker" not in f.message and "ip filter/FORWARD" in f.message
    assert "iptables -P FORWARD ACCEPT" in f.hint


def test_ip_forward(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/sys/net/ipv4/ip_forward", "0\n")
    f = check_ip_forward(_host(tmp_path))
    assert f.severity == "warn" and "sysctl" in f.hint
    _write(tmp_path, "/proc/sys/net/ipv4/ip_forward", "1\n")
    assert check_ip_forward(_host(tmp_path)).severity == "ok"


def test_netns_dir(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    host = _host(tmp_path)
    f = check_netns_dir(host, fix=False)
    assert f.severity == "ok" and "first use" in f.message
    f = check_netns_dir(host, fix=True)
    assert f.fixed and (tmp_path / "run/netns").is_dir()
    assert check_netns_dir(host, fix=False).message.endswith("is usable")
    (tmp_path / "run/netns").rmdir()
    (tmp_path / "run/netns").write_text("")
    assert check_netns_dir(host, fix=True).severity == "error"


def test_preflight_on_a_fake_host_touches_nothing_real(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/filesystems", "nodev\toverlay\n")
    _write(tmp_path, "/proc/sys/user/max_user_namespaces", "100\n")
    _write(tmp_path, "/proc/sys/net/ipv4/ip_forward", "1\n")
    (tmp_path / "run").mkdir()
    host = _host(tmp_path, commands=VERSIONS)
    found = preflight(CFG, fix=False, host=host)
    ids = [f.id for f in found]
    for want in ("cgroups", "runtime", "overlayfs", "userns", "capabilities", "rlimits",
                 "forward-policy", "ip-forward", "netns-dir"):  # fmt: skip
        assert want in ids
    rt = [f for f in found if f.id == "runtime"][0]
    assert rt.obj == "crun" and "1.8.1" in rt.message
    assert "nofile 20000" in [f for f in found if f.id == "rlimits"][0].message
