"""Unit tests for engine.runtime: seccomp conversion, capabilities, users, config.json."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

from engine.errors import HostNotReady, InvalidArgument
from engine.runtime import seccomp
from engine.runtime.caps import (
    CAP_BITS,
    DEFAULT_CAPS,
    caps_from_mask,
    caps_to_mask,
    host_bounding_set,
    resolve_caps,
)
from engine.runtime.spec import MASKED_PATHS, Resources, SpecInput, build_spec
from engine.runtime.users import resolve_user

HOST_PROFILE = Path(seccomp.DEFAULT_PROFILE)
needs_host_profile = pytest.mark.skipif(
    not HOST_PROFILE.exists(), reason="golang-github-containers-common not installed"
)

# A small Docker-style profile: mount/umount2 gated on CAP_SYS_ADMIN as in moby's default.
DOCKER_STYLE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {
            "architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        },
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["mount", "umount2"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["arch_prctl"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"arches": ["amd64", "x32"]},
        },
        {
            "names": ["sync_file_range2"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"arches": ["arm64"]},
        },
        {"names": ["future_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        {
            "names": ["open_by_handle_at"],
            "action": "SCMP_ACT_ERRNO",
            "errno": "EPERM",
            "excludes": {"caps": ["CAP_DAC_READ_SEARCH"]},
        },
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        },
    ],
}


def allowed(profile: dict) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


# --- seccomp ------------------------------------------------------------------------------


def test_seccomp_caps_gate_rules(tmp_path: Path) -> None:
    f = write_json(tmp_path / "p.json", DOCKER_STYLE)
    without = seccomp.load_profile_file(f, caps=DEFAULT_CAPS, arch="x86_64")
    with_admin = seccomp.load_profile_file(f, caps=[*DEFAULT_CAPS, "CAP_SYS_ADMIN"], arch="x86_64")
    assert {"mount", "umount2"}.isdisjoint(allowed(without))
    assert {"mount", "umount2"} <= allowed(with_admin)
    # excludes.caps: the EPERM rule exists only while the cap is missing.
    names = lambda p: {n for r in p["syscalls"] for n in r["names"]}  # noqa: E731
    assert "open_by_handle_at" in names(without)
    dac = seccomp.load_profile_file(f, caps=["DAC_READ_SEARCH"], arch="x86_64")
    assert "open_by_handle_at" not in names(dac)
    rule = next(r for r in without["syscalls"] if r["names"] == ["open_by_handle_at"])
    assert rule["errnoRet"] == 1 and "excludes" not in rule and "errno" not in rule
    # minKernel beyond the running kernel drops the rule; args survive conversion.
    assert "future_call" not in names(without)
    personality = next(r for r in without["syscalls"] if r["names"] == ["personality"])
    assert personality["args"] == [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]


def test_seccomp_arches(tmp_path: Path) -> None:
    f = write_json(tmp_path / "p.json", DOCKER_STYLE)
    amd = seccomp.load_profile_file(f, caps=[], arch="x86_64")
    assert amd["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "arch_prctl" in allowed(amd) and "sync_file_range2" not in allowed(amd)
    arm = seccomp.load_profile_file(f, caps=[], arch="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in allowed(arm) and "sync_file_range2" in allowed(arm)


@needs_host_profile
def test_host_default_profile() -> None:
    default = seccomp.load_default_profile(arch="x86_64", caps=set(DEFAULT_CAPS))
    assert default["defaultAction"] == "SCMP_ACT_ERRNO" and default["defaultErrnoRet"] == 38
    assert default["architectures"][0] == "SCMP_ARCH_X86_64"
    ok = allowed(default)
    assert {"read", "clone", "arch_prctl", "chroot"} <= ok  # chroot: CAP_SYS_CHROOT is default
    # containers/common gates these on CAP_SYS_ADMIN: an EPERM rule without it, ALLOW with it.
    gated = {"bpf", "fanotify_init", "perf_event_open", "quotactl"}
    denied = {n for r in default["syscalls"] if r["action"] == "SCMP_ACT_ERRNO" for n in r["names"]}
    assert gated.isdisjoint(ok) and gated <= denied
    admin = seccomp.load_default_profile(arch="x86_64", caps={*DEFAULT_CAPS, "CAP_SYS_ADMIN"})
    assert gated <= allowed(admin)
    assert gated.isdisjoint(
        n for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ERRNO" for n in r["names"]
    )
    for rule in default["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
    # Callers get their own copy to mutate.
    default["syscalls"].clear()
    assert seccomp.load_default_profile(arch="x86_64", caps=set(DEFAULT_CAPS))["syscalls"]


@needs_host_profile
def test_default_profile_is_cheap() -> None:
    seccomp._converted_cache.clear()
    seccomp._parsed_cache.clear()
    t0 = time.perf_counter()
    seccomp.load_default_profile(caps=set(DEFAULT_CAPS))
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    seccomp.load_default_profile(caps=set(DEFAULT_CAPS))
    warm = time.perf_counter() - t0
    assert cold < 0.005 and warm < 0.001, (cold, warm)


def test_seccomp_oci_form_passes_through(tmp_path: Path) -> None:
    oci = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    out = seccomp.load_profile_file(write_json(tmp_path / "oci.json", oci), caps=[])
    assert out == oci


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "Expecting property name"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction"),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}',
            "names",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "index",
        ),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["A"], "archMap": [{}]}', "either"),
    ],
)
def test_seccomp_bad_file(tmp_path: Path, content: str, problem: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(InvalidArgument) as ei:
        seccomp.load_profile_file(f, caps=[])
    assert str(f) in str(ei.value) and problem in str(ei.value)


def test_seccomp_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="No such file"):
        seccomp.load_profile_file(tmp_path / "nope.json", caps=[])


# --- capabilities ------------------------------------------------------------------------

HOST_LIKE = set(CAP_BITS) - {"CAP_SYS_RESOURCE"}  # this host's bounding set


def test_bounding_set_parsing(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t000001fffeffffff\n")
    assert host_bounding_set(str(status)) == HOST_LIKE
    assert caps_to_mask(caps_from_mask(0x1FFFEFFFFFF)) == 0x1FFFEFFFFFF
    assert host_bounding_set() <= set(CAP_BITS)


def test_resolve_caps_defaults_add_drop() -> None:
    assert resolve_caps([], [], False, bounding=HOST_LIKE) == list(DEFAULT_CAPS)
    caps = resolve_caps(
        ["net_admin", "CAP_SYS_PTRACE"], ["mknod", "CAP_NET_RAW"], False, bounding=HOST_LIKE
    )
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_PTRACE" in caps
    assert "CAP_MKNOD" not in caps and "CAP_NET_RAW" not in caps
    assert resolve_caps(["chown"], ["ALL"], False, bounding=HOST_LIKE) == ["CAP_CHOWN"]
    every = resolve_caps(["all"], ["sys_admin"], False, bounding=HOST_LIKE)
    assert set(every) == HOST_LIKE - {"CAP_SYS_ADMIN"}


def test_resolve_caps_errors() -> None:
    with pytest.raises(InvalidArgument, match="bounding set lacks"):
        resolve_caps(["SYS_RESOURCE"], [], False, bounding=HOST_LIKE)
    with pytest.raises(InvalidArgument, match="unknown capability"):
        resolve_caps(["NOT_A_CAP"], [], False, bounding=HOST_LIKE)


def test_resolve_caps_privileged() -> None:
    caps = resolve_caps([], [], True, bounding=HOST_LIKE)
    assert set(caps) == HOST_LIKE and "CAP_SYS_RESOURCE" not in caps
    assert [CAP_BITS[c] for c in caps] == sorted(CAP_BITS[c] for c in caps)
    assert set(resolve_caps([], [], True)) == host_bounding_set()


# --- users --------------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# comment\n"
        "app:x:1000:1001::/home/app:/bin/sh\n"
        "broken line\n"
        "nobody:x:65534:65534::/:/bin/false\n"
    )
    (root / "etc/group").write_text(
        "root:x:0:\nwheel:x:10:root,app\napp:x:1001:\naudio:x:29:app\nstaff:x:50:\n"
    )
    return root


@pytest.mark.parametrize(
    "user, expected",
    [
        ("", (0, 0, [10])),
        ("root", (0, 0, [10])),
        ("app", (1000, 1001, [10, 29])),
        ("1000", (1000, 1001, [10, 29])),
        ("4242", (4242, 0, [])),
        ("app:staff", (1000, 50, [])),
        ("app:77", (1000, 77, [])),
        ("4242:4343", (4242, 4343, [])),
        ("nobody", (65534, 65534, [])),
    ],
)
def test_resolve_user(rootfs: Path, user: str, expected: tuple) -> None:
    assert resolve_user(rootfs, user) == expected


def test_resolve_user_unknown(rootfs: Path) -> None:
    with pytest.raises(
        InvalidArgument, match="unable to find user ghost: no matching entries in passwd file"
    ):
        resolve_user(rootfs, "ghost")
    with pytest.raises(InvalidArgument, match="unable to find group ghosts"):
        resolve_user(rootfs, "app:ghosts")


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert resolve_user(tmp_path / "empty", "") == (0, 0, [])
    assert resolve_user(tmp_path / "empty", "123:45") == (123, 45, [])
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(tmp_path / "empty", "app")


def test_resolve_user_symlink_stays_in_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    # Absolute and ../-relative links both aim at the host file; in the root they lead nowhere.
    (root / "etc/passwd").symlink_to(outside / "passwd")
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(root, "evil")
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to("../../../../../../" + str(outside / "passwd"))
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(root, "evil")
    # A link that stays inside the rootfs is followed, as the container would.
    (root / "etc/passwd").unlink()
    (root / "etc/real").write_text("inside:x:7:8::/:/bin/sh\n")
    (root / "etc/passwd").symlink_to("/etc/real")
    assert resolve_user(root, "inside") == (7, 8, [])


def test_resolve_user_odd_files(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc/passwd").mkdir(parents=True)  # a directory, not a file
    os.mkfifo(root / "etc/group")  # must not block the reader
    assert resolve_user(root, "5:6") == (5, 6, [])
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(root, "app")


# --- config.json --------------------------------------------------------------------------


def spec_for(**kw: object) -> dict:
    kw.setdefault("args", ["/bin/true"])
    kw.setdefault("rootfs", "/tmp/rootfs")
    return build_spec(SpecInput(**kw))  # type: ignore[arg-type]


def mounts_by_dest(spec: dict) -> dict[str, dict]:
    return {m["destination"]: m for m in spec["mounts"]}


def test_spec_required_keys_and_defaults() -> None:
    spec = spec_for(
        hostname="web",
        namespaces={"pid": None, "network": "/run/netns/x", "ipc": None, "uts": None},
    )
    json.dumps(spec)  # must serialize
    assert spec["ociVersion"] == "1.0.2"
    for key in ("process", "root", "mounts", "linux"):
        assert key in spec
    proc = spec["process"]
    assert proc["args"] == ["/bin/true"] and proc["cwd"] == "/"
    assert proc["user"] == {"uid": 0, "gid": 0, "additionalGids": []}
    assert any(e.startswith("PATH=") for e in proc["env"]) and "HOSTNAME=web" in proc["env"]
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPS)
    assert spec["root"] == {"path": "/tmp/rootfs", "readonly": False}
    assert spec["hostname"] == "web"
    ns = spec["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/x"} in ns
    assert {n["type"] for n in ns} == {"pid", "network", "ipc", "uts", "mount"}
    m = mounts_by_dest(spec)
    assert list(m)[:7] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ]
    assert m["/sys"]["type"] == "sysfs" and "ro" in m["/sys"]["options"]
    assert "ro" in m["/sys/fs/cgroup"]["options"]
    assert f"size={64 << 20}" in m["/dev/shm"]["options"]
    assert "ptmxmode=0666" in m["/dev/pts"]["options"]
    assert spec["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    devs = spec["linux"]["resources"]["devices"]
    assert devs[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "access": "m"} in devs
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in devs
    assert "seccomp" not in spec["linux"]


def test_spec_host_namespaces() -> None:
    spec = spec_for(namespaces={"network": None, "uts": None})  # --pid host --ipc host
    types = {n["type"] for n in spec["linux"]["namespaces"]}
    assert types == {"network", "uts", "mount"}  # mount is always private
    m = mounts_by_dest(spec_for(namespaces={"pid": None}))  # host network and ipc
    assert m["/sys"]["type"] == "bind" and "rbind" in m["/sys"]["options"]
    assert m["/dev/shm"]["source"] == "/dev/shm"
    with pytest.raises(InvalidArgument, match="UTS"):
        spec_for(hostname="x", namespaces={"pid": None})
    with pytest.raises(InvalidArgument, match="unknown namespace"):
        spec_for(namespaces={"time": None})


def test_spec_rlimits_clamped_to_host() -> None:
    spec = spec_for()
    limits = {r["type"]: r for r in spec["process"]["rlimits"]}
    host_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 1048576 if host_nofile == resource.RLIM_INFINITY else min(1048576, host_nofile)
    assert limits["RLIMIT_NOFILE"]["hard"] == limits["RLIMIT_NOFILE"]["soft"] == expected
    assert limits["RLIMIT_NPROC"]["hard"] <= 4194304
    spec = spec_for(rlimits=[("nofile", 100, 200), ("RLIMIT_CORE", 0, 0)])
    limits = {r["type"]: r for r in spec["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"] == {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}
    assert limits["RLIMIT_CORE"]["hard"] == 0


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] == resource.RLIM_INFINITY,
    reason="no hard nofile limit",
)
def test_spec_rlimit_above_host_hard() -> None:
    host = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(InvalidArgument, match=f"host's hard limit {host}"):
        spec_for(rlimits=[("nofile", host + 1, host + 1)])
    with pytest.raises(InvalidArgument, match="soft limit"):
        spec_for(rlimits=[("nofile", 10, 5)])
    with pytest.raises(InvalidArgument, match="unknown ulimit"):
        spec_for(rlimits=[("bogus", 1, 1)])


def test_spec_privileged() -> None:
    caps = resolve_caps([], [], True)
    spec = spec_for(privileged=True, caps=caps, seccomp={"defaultAction": "SCMP_ACT_ERRNO"})
    linux = spec["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux and "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" and d["type"] == "c" for d in linux["devices"])
    m = mounts_by_dest(spec)
    assert "ro" not in m["/sys"]["options"] and "ro" not in m["/sys/fs/cgroup"]["options"]
    assert spec["process"]["capabilities"]["effective"] == caps


def test_spec_seccomp_resources_and_extras() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    spec = spec_for(
        seccomp=profile,
        cgroups_path="/berth/abc",
        resources=Resources(
            memory=64 << 20,
            memory_swap=128 << 20,
            cpu_quota=50000,
            cpu_period=100000,
            cpu_shares=512,
            pids_limit=0,
            cpuset_cpus="0",
        ),
        shm_size=1 << 20,
        tmpfs=["/run:size=10m,exec"],
        sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"},
        oom_score_adj=500,
        annotations={"berth.name": "x"},
        no_new_privileges=True,
        terminal=True,
        mounts=[
            {"destination": "/dev/shm", "type": "bind", "source": "/tmp/shm", "options": ["rbind"]}
        ],
    )
    linux = spec["linux"]
    assert linux["seccomp"] == profile and linux["cgroupsPath"] == "/berth/abc"
    r = linux["resources"]
    assert r["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}
    assert r["pids"] == {"limit": -1}
    m = mounts_by_dest(spec)
    assert m["/run"]["options"] == ["nosuid", "nodev", "size=10m", "exec"]
    assert m["/dev/shm"]["source"] == "/tmp/shm"  # user mount replaced the default
    assert sum(1 for x in spec["mounts"] if x["destination"] == "/dev/shm") == 1
    assert linux["sysctl"]["kernel.shmmax"] == "1000"
    assert spec["process"]["oomScoreAdj"] == 500 and spec["process"]["noNewPrivileges"] is True
    assert "TERM=xterm" in spec["process"]["env"]
    assert spec["annotations"] == {"berth.name": "x"}
    with pytest.raises(InvalidArgument, match="not namespaced"):
        spec_for(sysctls={"vm.swappiness": "1"})
    with pytest.raises(InvalidArgument, match="network namespace"):
        spec_for(sysctls={"net.core.somaxconn": "1"}, namespaces={"pid": None})
    with pytest.raises(InvalidArgument, match="6MB"):
        spec_for(resources=Resources(memory=1024))


def test_spec_init(tmp_path: Path) -> None:
    tini = tmp_path / "tini"
    tini.write_bytes(b"")
    spec = spec_for(args=["sleep", "1"], init=True, init_binary=str(tini))
    assert spec["process"]["args"] == ["/dev/init", "--", "sleep", "1"]
    init = mounts_by_dest(spec)["/dev/init"]
    assert init["source"] == str(tini) and "ro" in init["options"]
    with pytest.raises(HostNotReady):
        spec_for(init=True, init_binary=str(tmp_path / "missing"))


def test_spec_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        spec_for(args=[])
    with pytest.raises(InvalidArgument, match="absolute"):
        spec_for(cwd="relative")
    with pytest.raises(InvalidArgument, match="duplicate"):
        spec_for(tmpfs=["/run", "/run"])
