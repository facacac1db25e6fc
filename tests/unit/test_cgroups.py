"""One suite for both cgroup drivers, run against a fake v1 tree and a fake v2 tree.

The fake trees are plain directories in tmp_path holding files in the kernel's
formats; ``FakeKernel`` stands in for the two cgroupfs behaviours a plain
directory lacks (control files appearing on mkdir, EBUSY on rmdir).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cgroups import (
    Cgroup,
    CgroupLayout,
    CgroupStats,
    Resources,
    V1Cgroup,
    V2Cgroup,
    _fs,
    cpu_percent,
    detect,
    hugetlb_problem,
    list_children,
    monitor_cgroup,
    oci_cgroups_path,
    open_cgroup,
    read_system_cpu_ns,
    shares_to_weight,
    weight_to_shares,
)
from engine.errors import (
    Conflict,
    HostNotReady,
    InvalidArgument,
    InvalidState,
    NotFound,
    Unsupported,
)

MiB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"

# /proc/self/mountinfo of this host kind (v1 hybrid), with the cgroup root replaced.
V1_MOUNTINFO = """\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
24 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / {root}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / {root}/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / {root}/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / {root}/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / {root}/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Debian 12 / systemd, pure v2.
V2_MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
29 23 0:26 / {root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# Ubuntu 18.04-style hybrid: co-mounted controllers, systemd's options, and a
# bind mount of the memory hierarchy elsewhere that must be ignored.
COMOUNT_MOUNTINFO = """\
30 23 0:26 / {root} ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / {root}/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / {root}/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / {root}/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / {root}/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
37 30 0:33 / {root}/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
90 80 0:33 / /var/lib/x/rootfs/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""

V1_FILES = {
    "cpu": {
        "cpu.shares": "1024\n",
        "cpu.cfs_period_us": "100000\n",
        "cpu.cfs_quota_us": "-1\n",
        "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n",
    },
    "cpuacct": {
        "cpuacct.usage": "0\n",
        "cpuacct.usage_user": "0\n",
        "cpuacct.usage_sys": "0\n",
        "cpuacct.stat": "user 0\nsystem 0\n",
    },
    "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n"},
    "memory": {
        "memory.limit_in_bytes": V1_UNLIMITED + "\n",
        "memory.memsw.limit_in_bytes": V1_UNLIMITED + "\n",
        "memory.soft_limit_in_bytes": V1_UNLIMITED + "\n",
        "memory.usage_in_bytes": "0\n",
        "memory.max_usage_in_bytes": "0\n",
        "memory.stat": "cache 0\nrss 0\ninactive_file 0\ntotal_cache 0\ntotal_rss 0\ntotal_inactive_file 0\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "devices": {"devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED\n"},
    "blkio": {"blkio.throttle.io_service_bytes_recursive": "Total 0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "systemd": {},
    # The hybrid host's cgroup2 side: no controllers, but freeze/events/PSI-less files.
    "unified": {"cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0\n"},
}

V2_CONTROLLER_FILES = {
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n"},
    "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n"},
    "io": {"io.stat": "", "io.max": ""},
    "memory": {
        "memory.max": "max\n",
        "memory.swap.max": "max\n",
        "memory.low": "0\n",
        "memory.current": "0\n",
        "memory.peak": "0\n",
        "memory.stat": "anon 0\nfile 0\ninactive_anon 0\nactive_anon 0\ninactive_file 0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    },
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
}
V2_CORE_FILES = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "\n",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0\n",
    "cgroup.kill": "",
    "cgroup.type": "domain\n",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "io.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}


class FakeKernel(_fs.FsOps):
    """cgroupfs semantics for a directory tree: files appear on mkdir, rmdir refuses busy cgroups."""

    def __init__(self, version: str, root: Path) -> None:
        self.version = version
        self.root = root

    def populate(self, d: Path, is_root: bool = False) -> None:
        if self.version == "v1":
            hierarchy = d.relative_to(self.root).parts[0]
            files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0\n"}
            files.update(V1_FILES[hierarchy])
            if is_root and hierarchy == "cpuset":
                files.update({"cpuset.cpus": "0-1\n", "cpuset.mems": "0\n"})
            if is_root and hierarchy == "unified":
                files["cgroup.controllers"] = "hugetlb\n"
        else:
            files = dict(V2_CORE_FILES)
            if is_root:
                enabled = "cpuset cpu io memory hugetlb pids rdma misc".split()
            else:
                parent = (d.parent / "cgroup.subtree_control").read_text()
                enabled = [c.lstrip("+") for c in parent.split()]
            files["cgroup.controllers"] = " ".join(enabled) + "\n"
            for ctl in enabled:
                files.update(V2_CONTROLLER_FILES.get(ctl, {}))
        for name, text in files.items():
            (d / name).write_text(text)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        self.populate(path)

    def rmdir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        busy = (
            any(p.is_dir() for p in path.iterdir()) or (path / "cgroup.procs").read_text().strip()
        )
        if busy:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        shutil.rmtree(path)

    def settle(self) -> None:
        """What the v2 kernel does asynchronously: report frozen once cgroup.freeze says so."""
        if self.version != "v2":
            return
        for freeze in self.root.rglob("cgroup.freeze"):
            want = freeze.read_text().strip()
            (freeze.parent / "cgroup.events").write_text(f"populated 1\nfrozen {want}\n")


@dataclass
class FakeHost:
    version: str
    root: Path
    layout: CgroupLayout
    kernel: FakeKernel

    def file(self, cg: Cgroup, controller: str, name: str) -> Path:
        mount = self.layout.controllers[controller] if self.version == "v1" else self.layout.unified
        return mount / cg.path / name

    def read(self, cg: Cgroup, controller: str, name: str) -> str:
        return self.file(cg, controller, name).read_text().strip()

    def write(self, cg: Cgroup, controller: str, name: str, text: str) -> None:
        self.file(cg, controller, name).write_text(text)


def build_fake(tmp_path: Path, version: str) -> FakeHost:
    root = tmp_path / "cgroup"
    root.mkdir()
    kernel = FakeKernel(version, root)
    template = V1_MOUNTINFO if version == "v1" else V2_MOUNTINFO
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(template.format(root=root))
    if version == "v1":
        for name in V1_FILES:
            (root / name).mkdir()
            kernel.populate(root / name, is_root=True)
    else:
        kernel.populate(root, is_root=True)
    return FakeHost(version, root, detect(root, mountinfo), kernel)


@pytest.fixture(params=["v1", "v2"])
def host(request, tmp_path, monkeypatch) -> FakeHost:
    fake = build_fake(tmp_path, request.param)
    monkeypatch.setattr(_fs, "OPS", fake.kernel)
    return fake


@pytest.fixture
def sleeper():
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


# -- detect ----------------------------------------------------------------------


def test_detect(host: FakeHost):
    layout = host.layout
    assert layout.version == host.version
    if host.version == "v1":
        assert layout.hybrid
        assert layout.unified == host.root / "unified"
        assert layout.controllers["memory"] == host.root / "memory"
        assert layout.controllers["cpu"] == host.root / "cpu"
        assert layout.controllers["cpuacct"] == host.root / "cpuacct"
        assert set(layout.controllers) == {
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        }  # fmt: skip
        assert layout.named == {"name=systemd": host.root / "systemd"}
        assert len(layout.hierarchies()) == 10
        assert "hugetlb" in (hugetlb_problem(layout) or "")
    else:
        assert not layout.hybrid
        assert layout.unified == host.root
        assert set(layout.controllers) >= {"cpu", "memory", "pids", "io", "cpuset"}
        assert all(d == host.root for d in layout.controllers.values())
        assert layout.hierarchies() == [host.root]
        assert hugetlb_problem(layout) is None


def test_detect_comounted_and_escaped(tmp_path):
    root = tmp_path / "cg root"  # a space, escaped as \040 in mountinfo
    for d in ("unified", "systemd", "cpu,cpuacct", "net_cls,net_prio", "memory"):
        (root / d).mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(COMOUNT_MOUNTINFO.format(root=str(root).replace(" ", "\\040")))
    layout = detect(root, mountinfo)
    assert layout.version == "v1" and layout.hybrid
    assert layout.controllers["cpu"] == layout.controllers["cpuacct"] == root / "cpu,cpuacct"
    assert layout.controllers["net_prio"] == root / "net_cls,net_prio"
    assert layout.controllers["memory"] == root / "memory"  # not the bind mount elsewhere
    assert "xattr" not in layout.controllers
    assert layout.named == {"name=systemd": root / "systemd"}
    # Co-mounted controllers share one directory: listed once.
    assert len(layout.hierarchies()) == 5
    assert hugetlb_problem(layout) is None  # unified lists no controller


def test_detect_without_cgroups(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 254:1 / / rw,relatime - ext4 /dev/vda rw\n")
    with pytest.raises(HostNotReady):
        detect(tmp_path / "cgroup", mountinfo)


# -- create / exists / paths -----------------------------------------------------


def test_create_and_exists(host: FakeHost):
    cg = open_cgroup(host.layout, "berth/abc123")
    assert isinstance(cg, V1Cgroup if host.version == "v1" else V2Cgroup)
    assert not cg.exists()
    cg.create()
    cg.create()  # repeatable
    assert cg.exists()
    assert all(d.is_dir() for d in cg.dirs())
    if host.version == "v1":
        # New v1 cpusets inherit cpus/mems, or they would refuse tasks.
        assert host.read(cg, "cpuset", "cpuset.cpus") == "0-1"
        assert host.read(cg, "cpuset", "cpuset.mems") == "0"
        assert (host.root / "systemd" / "berth" / "abc123").is_dir()
        assert (host.root / "unified" / "berth" / "abc123").is_dir()
    else:
        # Controllers delegated down the path, so the leaf has its files.
        for d in (host.root, host.root / "berth"):
            enabled = (d / "cgroup.subtree_control").read_text()
            assert {"+memory", "+pids", "+cpu", "+io", "+cpuset"} <= set(enabled.split())
        assert host.file(cg, "memory", "memory.max").exists()


@pytest.mark.parametrize("bad", ["", "/", "../etc", "berth/../x", "a//b"])
def test_rejects_bad_paths(host: FakeHost, bad: str):
    with pytest.raises(InvalidArgument):
        open_cgroup(host.layout, bad)


def test_missing_cgroup_is_not_found(host: FakeHost):
    cg = open_cgroup(host.layout, "berth/nope")
    with pytest.raises(NotFound):
        cg.stats()
    with pytest.raises(NotFound):
        cg.limits()
    with pytest.raises(NotFound):
        cg.apply(Resources(memory=64 * MiB))


# -- apply / limits --------------------------------------------------------------


def _made(host: FakeHost, path: str = "berth/abc123") -> Cgroup:
    cg = open_cgroup(host.layout, path)
    cg.create()
    return cg


def test_apply_writes_the_right_files(host: FakeHost):
    cg = _made(host)
    cg.apply(
        Resources(
            memory=256 * MiB,
            memory_swap=512 * MiB,
            memory_reservation=128 * MiB,
            cpu_quota=50000,
            cpu_period=100000,
            cpu_shares=512,
            cpuset_cpus="0",
            pids_limit=100,
        )
    )
    if host.version == "v1":
        expected = {
            ("memory", "memory.limit_in_bytes"): str(256 * MiB),
            ("memory", "memory.memsw.limit_in_bytes"): str(512 * MiB),
            ("memory", "memory.soft_limit_in_bytes"): str(128 * MiB),
            ("cpu", "cpu.cfs_quota_us"): "50000",
            ("cpu", "cpu.cfs_period_us"): "100000",
            ("cpu", "cpu.shares"): "512",
            ("cpuset", "cpuset.cpus"): "0",
            ("pids", "pids.max"): "100",
        }
    else:
        expected = {
            ("memory", "memory.max"): str(256 * MiB),
            ("memory", "memory.swap.max"): str(256 * MiB),  # swap alone = (mem+swap) - mem
            ("memory", "memory.low"): str(128 * MiB),
            ("cpu", "cpu.max"): "50000 100000",
            ("cpu", "cpu.weight"): "20",  # 1 + (512-2)*9999/262142, as crun converts
            ("cpuset", "cpuset.cpus"): "0",
            ("pids", "pids.max"): "100",
        }
    assert {k: host.read(cg, *k) for k in expected} == expected

    got = cg.limits()
    assert got.memory == 256 * MiB
    assert got.memory_swap == 512 * MiB
    assert got.memory_reservation == 128 * MiB
    assert (got.cpu_quota, got.cpu_period, got.cpu_weight) == (50000, 100000, 20)
    assert (got.cpuset_cpus, got.pids_limit) == ("0", 100)


def test_apply_unlimited(host: FakeHost):
    cg = _made(host)
    cg.apply(Resources(memory=64 * MiB, memory_swap=128 * MiB, cpu_quota=20000, pids_limit=10))
    cg.apply(Resources(memory=-1, cpu_quota=-1, pids_limit=0))
    if host.version == "v1":
        assert host.read(cg, "memory", "memory.limit_in_bytes") == "-1"
        assert host.read(cg, "memory", "memory.memsw.limit_in_bytes") == "-1"
        assert host.read(cg, "cpu", "cpu.cfs_quota_us") == "-1"
    else:
        assert host.read(cg, "memory", "memory.max") == "max"
        assert host.read(cg, "memory", "memory.swap.max") == "max"
        assert host.read(cg, "cpu", "cpu.max") == "max 100000"
    assert host.read(cg, "pids", "pids.max") == "max"
    got = cg.limits()
    assert (got.memory, got.cpu_quota, got.pids_limit) == (-1, -1, -1)


def test_apply_period_only_keeps_quota(host: FakeHost):
    cg = _made(host)
    cg.apply(Resources(cpu_quota=25000))
    cg.apply(Resources(cpu_period=50000))
    got = cg.limits()
    assert (got.cpu_quota, got.cpu_period) == (25000, 50000)


def test_apply_none_leaves_everything(host: FakeHost):
    cg = _made(host)
    before = {p: p.read_text() for d in cg.dirs() for p in d.iterdir()}
    cg.apply(Resources())
    assert {p: p.read_text() for d in cg.dirs() for p in d.iterdir()} == before


@pytest.mark.parametrize(
    "res",
    [
        Resources(memory=0),
        Resources(memory=-5),
        Resources(cpu_period=10),
        Resources(cpu_quota=10),
        Resources(cpu_shares=1),
        Resources(cpu_weight=20000),
        Resources(memory=128 * MiB, memory_swap=64 * MiB),
    ],
)
def test_apply_rejects_bad_values(host: FakeHost, res: Resources):
    cg = _made(host)
    with pytest.raises(InvalidArgument):
        cg.apply(res)


def test_apply_missing_controller_file_is_unsupported(host: FakeHost):
    cg = _made(host)
    host.file(cg, "pids", "pids.max").unlink()
    with pytest.raises(Unsupported):
        cg.apply(Resources(pids_limit=5))


def test_v1_memory_and_swap_write_order(host: FakeHost, monkeypatch):
    if host.version != "v1":
        pytest.skip("write order matters on v1 only (memory <= memsw at all times)")
    cg = _made(host)
    cg.apply(Resources(memory=64 * MiB, memory_swap=128 * MiB))
    writes: list[str] = []
    real_write = _fs.write

    def record(path, value, obj):
        writes.append(path.name)
        real_write(path, value, obj)

    monkeypatch.setattr(_fs, "write", record)
    cg.apply(Resources(memory=256 * MiB, memory_swap=512 * MiB))  # growing: memsw first
    assert writes == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    writes.clear()
    cg.apply(Resources(memory=32 * MiB, memory_swap=64 * MiB))  # shrinking: memory first
    assert writes == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_v2_swap_needs_memory(host: FakeHost):
    if host.version != "v2":
        pytest.skip("v1 takes memsw as given")
    cg = _made(host)
    with pytest.raises(InvalidArgument):
        cg.apply(Resources(memory_swap=128 * MiB))
    cg.apply(Resources(memory=64 * MiB))
    cg.apply(Resources(memory_swap=100 * MiB))  # uses the memory.max already set
    assert host.read(cg, "memory", "memory.swap.max") == str(36 * MiB)


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (512, 20), (262144, 10000)])
def test_shares_weight_conversion(shares: int, weight: int):
    assert shares_to_weight(shares) == weight
    assert shares_to_weight(weight_to_shares(weight)) == weight


def test_cpu_shares_become_weight(host: FakeHost):
    cg = _made(host)
    cg.apply(Resources(cpu_shares=1024))
    if host.version == "v1":
        assert host.read(cg, "cpu", "cpu.shares") == "1024"
    else:
        assert host.read(cg, "cpu", "cpu.weight") == "39"
    assert cg.limits().cpu_weight == 39


# -- stats -----------------------------------------------------------------------

V1_MEMORY_STAT = """\
cache 15138816
rss 73400320
rss_huge 0
shmem 0
mapped_file 2162688
dirty 0
writeback 0
swap 0
pgpgin 34887
pgpgout 13257
pgfault 41451
pgmajfault 33
inactive_anon 73400320
active_anon 0
inactive_file 10485760
active_file 4653056
unevictable 0
hierarchical_memory_limit 268435456
hierarchical_memsw_limit 9223372036854771712
total_cache 31457280
total_rss 73400320
total_rss_huge 0
total_shmem 0
total_mapped_file 2162688
total_dirty 0
total_writeback 0
total_swap 0
total_pgpgin 34887
total_pgpgout 13257
total_pgfault 41451
total_pgmajfault 33
total_inactive_anon 73400320
total_active_anon 0
total_inactive_file 20971520
total_active_file 10485760
total_unevictable 0
"""

V2_MEMORY_STAT = """\
anon 73400320
file 31457280
kernel 1818624
kernel_stack 65536
pagetables 237568
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 2162688
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
inactive_anon 73400320
active_anon 0
inactive_file 20971520
active_file 10485760
unevictable 0
slab_reclaimable 1069056
slab_unreclaimable 322368
slab 1391424
pgfault 41451
pgmajfault 33
"""

STATS_SAMPLES = {
    "v1": {
        ("cpuacct", "cpuacct.usage"): "5000000000\n",
        ("cpuacct", "cpuacct.usage_user"): "3000000000\n",
        ("cpuacct", "cpuacct.usage_sys"): "2000000000\n",
        ("cpuacct", "cpuacct.stat"): "user 300\nsystem 200\n",
        ("cpu", "cpu.stat"): (
            "nr_periods 120\nnr_throttled 7\nthrottled_time 350000000\nnr_bursts 0\nburst_time 0\n"
        ),
        ("memory", "memory.usage_in_bytes"): "104857600\n",
        ("memory", "memory.stat"): V1_MEMORY_STAT,
        ("memory", "memory.limit_in_bytes"): "268435456\n",
        ("memory", "memory.max_usage_in_bytes"): "157286400\n",
        ("memory", "memory.oom_control"): "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ("pids", "pids.current"): "3\n",
        ("pids", "pids.max"): "100\n",
        ("blkio", "blkio.throttle.io_service_bytes_recursive"): (
            "8:16 Read 1024\n8:16 Write 0\n8:16 Sync 1024\n8:16 Async 0\n8:16 Discard 0\n8:16 Total 1024\n"
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 12288\n"
            "Total 13312\n"
        ),
    },
    "v2": {
        ("cpu", "cpu.stat"): (
            "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\n"
            "core_sched.force_idle_usec 0\nnr_periods 120\nnr_throttled 7\n"
            "throttled_usec 350000\nnr_bursts 0\nburst_usec 0\n"
        ),
        ("memory", "memory.current"): "104857600\n",
        ("memory", "memory.stat"): V2_MEMORY_STAT,
        ("memory", "memory.max"): "268435456\n",
        ("memory", "memory.peak"): "157286400\n",
        ("memory", "memory.events"): "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n",
        ("pids", "pids.current"): "3\n",
        ("pids", "pids.max"): "100\n",
        ("io", "io.stat"): (
            "8:16 rbytes=1024 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
        ),
        ("cpu", "cpu.pressure"): (
            "some avg10=1.50 avg60=0.80 avg300=0.20 total=123456\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        ),
        ("memory", "memory.pressure"): (
            "some avg10=0.30 avg60=0.10 avg300=0.00 total=4567\n"
            "full avg10=0.10 avg60=0.00 avg300=0.00 total=1234\n"
        ),
        ("io", "io.pressure"): (
            "some avg10=0.10 avg60=0.00 avg300=0.00 total=99\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        ),
    },
}

EXPECTED_STATS = dict(
    cpu_usage_ns=5_000_000_000,
    cpu_user_ns=3_000_000_000,
    cpu_system_ns=2_000_000_000,
    nr_periods=120,
    throttled_periods=7,
    throttled_time_ns=350_000_000,
    memory_usage=100 * MiB - 20 * MiB,  # minus (total_)inactive_file
    memory_raw_usage=100 * MiB,
    memory_limit=256 * MiB,
    memory_max_usage=150 * MiB,
    oom_kill_count=2,
    pids_current=3,
    pids_limit=100,
    blkio_read_bytes=5120,
    blkio_write_bytes=8192,
)


def _load_stats(host: FakeHost, cg: Cgroup) -> None:
    for (ctl, name), text in STATS_SAMPLES[host.version].items():
        host.write(cg, ctl, name, text)


def test_stats(host: FakeHost):
    cg = _made(host)
    _load_stats(host, cg)
    s = cg.stats()
    assert {k: getattr(s, k) for k in EXPECTED_STATS} == EXPECTED_STATS
    if host.version == "v2":
        assert (s.cpu_pressure, s.memory_pressure, s.io_pressure) == (1.5, 0.3, 0.1)
        assert s.memory_stat["anon"] == 73400320
    else:
        assert (s.cpu_pressure, s.memory_pressure, s.io_pressure) == (None, None, None)
        assert s.memory_stat["total_rss"] == 73400320


def test_stats_unlimited(host: FakeHost):
    cg = _made(host)
    s = cg.stats()
    assert s.memory_limit is None
    assert s.pids_limit is None
    assert s.memory_usage == 0


def test_v1_cpu_times_from_ticks(host: FakeHost):
    if host.version != "v1":
        pytest.skip("cpuacct.stat is v1 only")
    cg = _made(host)
    _load_stats(host, cg)
    host.file(cg, "cpuacct", "cpuacct.usage_user").unlink()
    host.file(cg, "cpuacct", "cpuacct.usage_sys").unlink()
    s = cg.stats()
    assert (s.cpu_user_ns, s.cpu_system_ns) == (3_000_000_000, 2_000_000_000)


def test_cpu_percent_and_system_time(tmp_path):
    proc_stat = tmp_path / "stat"
    proc_stat.write_text(
        "cpu  4705 356 584 3699176 23060 0 277 0 0 0\n"
        "cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n"
        "intr 1462898\n"
    )
    ticks = 4705 + 356 + 584 + 3699176 + 23060 + 0 + 277  # user..softirq
    assert read_system_cpu_ns(proc_stat) == ticks * 10_000_000
    prev = CgroupStats(cpu_usage_ns=1_000_000_000)
    cur = CgroupStats(cpu_usage_ns=1_500_000_000)
    # 0.5 s of container CPU over 2 s of host CPU time on 2 CPUs -> 50%.
    assert cpu_percent(prev, cur, 10_000_000_000, 12_000_000_000, 2) == pytest.approx(50.0)
    assert cpu_percent(prev, prev, 0, 1, 2) == 0.0
    assert cpu_percent(CgroupStats(), cur, 5, 5, 2) == 0.0


# -- freezer ---------------------------------------------------------------------


def _freeze_file(host: FakeHost, cg: Cgroup) -> str:
    if host.version == "v1":
        return host.read(cg, "freezer", "freezer.state")
    return host.read(cg, "memory", "cgroup.freeze")


def test_freeze_thaw(host: FakeHost):
    cg = _made(host)
    assert not cg.frozen()
    cg.freeze(timeout=0)
    assert _freeze_file(host, cg) == ("FROZEN" if host.version == "v1" else "1")
    host.kernel.settle()
    assert cg.frozen()
    cg.freeze(timeout=1)  # already frozen: returns at once
    cg.thaw()
    assert _freeze_file(host, cg) == ("THAWED" if host.version == "v1" else "0")
    host.kernel.settle()
    assert not cg.frozen()


def test_freeze_that_never_settles_thaws_and_fails(host: FakeHost):
    if host.version != "v2":
        pytest.skip("the fake v1 freezer reports FROZEN at once")
    cg = _made(host)
    with pytest.raises(InvalidState):
        cg.freeze(timeout=0.05)
    assert _freeze_file(host, cg) == "0"


# -- processes ---------------------------------------------------------------------


def test_procs_move_and_kill(host: FakeHost, sleeper):
    cg = _made(host)
    child = _made(host, "berth/abc123/sub")
    a, b = sleeper(), sleeper()
    cg.move_pid(a.pid)
    child.move_pid(b.pid)
    for d in cg.dirs():
        assert (d / "cgroup.procs").read_text() == str(a.pid)
    assert cg.procs() == sorted([a.pid, b.pid])
    assert cg.procs(recursive=False) == [a.pid]
    assert cg.kill_all(signal.SIGTERM) == 2
    assert a.wait(5) == -signal.SIGTERM and b.wait(5) == -signal.SIGTERM


def test_kill_all_sigkill(host: FakeHost, sleeper):
    cg = _made(host)
    p = sleeper()
    cg.move_pid(p.pid)
    assert cg.kill_all(signal.SIGKILL) == 1
    if host.version == "v2":
        # cgroup.kill does it in one write; the fake kernel only records it.
        assert host.read(cg, "memory", "cgroup.kill") == "1"
    else:
        assert p.wait(5) == -signal.SIGKILL
        # Frozen for the kill, thawed after so the victims can die.
        assert host.read(cg, "freezer", "freezer.state") == "THAWED"


# -- remove / children / helpers ---------------------------------------------------------


def test_remove(host: FakeHost):
    cg = _made(host)
    _made(host, "berth/abc123/sub")
    cg.remove()
    assert not cg.exists()
    assert not any(d.exists() for d in cg.dirs())
    assert all(d.parent.is_dir() for d in cg.dirs())  # the parent "berth" stays
    cg.remove()  # already gone is fine


def test_remove_busy_times_out(host: FakeHost):
    cg = _made(host)
    (cg.dirs()[0] / "cgroup.procs").write_text("4242\n")
    with pytest.raises(Conflict) as info:
        cg.remove(timeout=0.1)
    assert info.value.errno == errno.EBUSY
    assert "4242" in str(info.value)


def test_list_children(host: FakeHost):
    _made(host, "berth/a")
    b = _made(host, "berth/b")
    assert list_children(host.layout, "berth") == ["berth/a", "berth/b"]
    assert list_children(host.layout, "nothing") == []
    if host.version == "v1":
        # Half-removed (one hierarchy left) still counts as a child.
        for d in b.dirs()[1:]:
            host.kernel.rmdir(d)
        assert list_children(host.layout, "/berth/") == ["berth/a", "berth/b"]


def test_monitor_cgroup(host: FakeHost, sleeper):
    mon = monitor_cgroup(host.layout, "bt")
    assert mon.path == "bt-monitors" and mon.exists()
    assert monitor_cgroup(host.layout, "bt").path == "bt-monitors"  # idempotent
    p = sleeper()
    mon.move_pid(p.pid)
    assert mon.procs() == [p.pid]


def test_oci_cgroups_path():
    assert oci_cgroups_path("berth", "abc123") == "/berth/abc123"
    for prefix, cid in (("berth", "../x"), ("a/b", "c"), ("berth", "")):
        with pytest.raises(InvalidArgument):
            oci_cgroups_path(prefix, cid)
