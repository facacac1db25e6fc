"""The peers bench/run_latency measures Berth against: bare crun/runc bundles,
Podman and Docker, each set up in temporary directories and torn down after.

Every peer is a ``Peer``: ``argv(i)`` is the command timed for run ``i``,
``after(i)`` runs outside the timed region (clean-up checks, waiting for the
peer's own exit-time helpers so they do not steal CPU from the next run).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from _common import (
    CGROUP_ROOT,
    cgroup_controllers,
    processes_with,
    rmdir_cgroup_tree,
    umount_all_under,
)


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why (printed as a note)."""


class Peer:
    name = ""
    env: dict | None = None

    def argv(self, i: int) -> list[str]:
        raise NotImplementedError

    def after(self, i: int) -> None:
        pass

    def close(self) -> None:
        pass


# Bare OCI runtimes ------------------------------------------------------------


class BareRuntime(Peer):
    """``crun run`` / ``runc run`` of a bundle equal to what ``berth run`` makes:
    busybox rootfs, ``/bin/true``, no terminal, a new network namespace."""

    def __init__(self, runtime: str, rootfs: Path, cgroup_parent: str):
        path = shutil.which(runtime)
        if not path:
            raise PeerUnavailable(f"{runtime} is not installed")
        self.name = f"{runtime} run"
        self.runtime = path
        self.cgroup_parent = cgroup_parent
        self.tmp = Path(tempfile.mkdtemp(prefix=f"berth-bench-{runtime}-"))
        self.state = self.tmp / "state"
        self.bundle = self.tmp / "bundle"
        self.bundle.mkdir()
        subprocess.run([path, "spec"], cwd=self.bundle, check=True, capture_output=True)
        cfg_path = self.bundle / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["process"]["args"] = ["/bin/true"]
        cfg["process"]["terminal"] = False
        cfg["root"] = {"path": str(rootfs), "readonly": True}
        ns = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
        cfg["linux"]["namespaces"] = ns + [{"type": "network"}]
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.prefix = f"b{secrets.token_hex(3)}"

    def cid(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def argv(self, i: int) -> list[str]:
        # A unique cgroupsPath per run, as an engine gives each container its own.
        self.cfg["linux"]["cgroupsPath"] = f"/{self.cgroup_parent}/{self.cid(i)}"
        self.cfg_path.write_text(json.dumps(self.cfg))
        return [
            self.runtime,
            "--root",
            str(self.state),
            "run",
            "--bundle",
            str(self.bundle),
            self.cid(i),
        ]

    def probe(self) -> str:
        """One run outside the measurements: '' when it works, else the runtime's error."""
        p = subprocess.run(self.argv(-1), stdin=subprocess.DEVNULL, capture_output=True, text=True)
        return "" if p.returncode == 0 else (p.stderr.strip() or f"exit {p.returncode}")

    def close(self) -> None:
        for cid in os.listdir(self.state) if self.state.is_dir() else []:
            subprocess.run(
                [self.runtime, "--root", str(self.state), "delete", "--force", cid],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_cgroup_parent(name: str) -> None:
    for ctl in cgroup_controllers():
        rmdir_cgroup_tree(ctl / name)


# Podman and Docker ------------------------------------------------------------


def rootfs_tar(rootfs: Path, dest: Path) -> Path:
    """A rootfs tarball of ``rootfs`` (for ``podman import`` / ``docker import``)."""
    with tarfile.open(dest, "w") as tf:
        for entry in sorted(rootfs.iterdir()):
            tf.add(entry, arcname=entry.name)
    return dest


def _new_cgroup_dirs(before: set[str], names: tuple[str, ...]) -> None:
    """rmdir cgroup parents a peer created during the run (named ``names``), if empty."""
    for ctl in cgroup_controllers():
        for n in names:
            if n not in before and (ctl / n).is_dir():
                rmdir_cgroup_tree(ctl / n)


def top_cgroups() -> set[str]:
    return (
        {p.name for p in (CGROUP_ROOT / "cpu").iterdir() if p.is_dir()}
        if (CGROUP_ROOT / "cpu").is_dir()
        else set()
    )


class Podman(Peer):
    """Podman as DESIGN.md says to run it here, with its storage in a temp dir."""

    name = "podman run"

    def __init__(self, tar: Path, runtime: str, network: str = "none"):
        self.network = network
        exe = shutil.which("podman")
        if not exe:
            raise PeerUnavailable("podman is not installed (--install-peers installs it)")
        self.cgroups_before = top_cgroups()
        suffix = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix="berth-bench-podman-"))
        self.run = Path(f"/run/bbp-{suffix}")  # short: conmon socket paths
        conf = self.tmp / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{self.run}/tmp"\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.base = [
            exe,
            "--root",
            str(self.tmp / "storage"),
            "--runroot",
            str(self.run / "runroot"),
            "--runtime",
            runtime,
        ]
        self.name = f"podman run ({runtime})" + ("" if network == "none" else f" {network}")
        self.image = "localhost/berth-bench-busybox:latest"
        p = subprocess.run(
            [*self.base, "import", str(tar), self.image],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            self.close()
            raise PeerUnavailable(f"podman import failed: {p.stderr.strip()}")

    def argv(self, i: int) -> list[str]:
        # "bridge": podman's own default network (netavark's podman0, 10.88.0.0/16).
        net = [] if self.network == "bridge" else ["--network", self.network]
        return [*self.base, "run", "--rm", *net, self.image, "/bin/true"]

    def after(self, i: int) -> None:
        # podman's exit command (`podman container cleanup`) may still run.
        deadline = time.monotonic() + 10
        while processes_with(str(self.tmp / "storage")) and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        for args in (["rm", "-af"], ["rmi", "-af"]):
            subprocess.run([*self.base, *args], env=self.env, capture_output=True, check=False)
        subprocess.run(
            [*self.base, "system", "reset", "-f"], env=self.env, capture_output=True, check=False
        )
        umount_all_under(self.tmp, self.run)
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        _new_cgroup_dirs(self.cgroups_before, ("libpod_parent",))


class Docker(Peer):
    """A private dockerd (own data root, exec root and socket), started for the run.

    With ``--network none``: ``--iptables=false --ip-forward=false``, as a dockerd
    that manages iptables sets the FORWARD policy to DROP, which breaks other
    engines (tests) on this host while it runs. With ``bridge`` it must manage
    them (docker0, NAT): run it inside a ``HostNetGuard``, which puts the host
    back afterwards.
    """

    name = "docker run"

    def __init__(self, tar: Path, network: str = "none"):
        self.network = network
        if network != "none":
            self.name = f"docker run {network}"
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise PeerUnavailable("dockerd is not installed (--install-peers installs docker.io)")
        # The client shipped with that daemon (another docker on PATH may be newer).
        client = Path(dockerd).with_name("docker")
        client = str(client) if client.exists() else shutil.which("docker")
        if not client:
            raise PeerUnavailable("the docker client is not installed")
        self.cgroups_before = top_cgroups()
        self.had_docker0 = Path("/sys/class/net/docker0").exists()
        suffix = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix="berth-bench-docker-"))
        self.exec_root = Path(f"/run/bbd-{suffix}")
        sock = self.exec_root / "docker.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        self.log = open(self.tmp / "dockerd.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(self.tmp / "data"),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.tmp / "dockerd.pid"),
                "-H",
                f"unix://{sock}",
                *(["--iptables=false", "--ip-forward=false"] if network == "none" else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = [client]
        self.image = "berth-bench-busybox:latest"
        deadline = time.monotonic() + 60
        while True:
            p = subprocess.run([client, "version"], env=self.env, capture_output=True)
            if p.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise PeerUnavailable(f"dockerd did not come up (log: {self.tmp / 'dockerd.log'})")
            time.sleep(0.2)
        p = subprocess.run(
            [client, "import", str(tar), self.image], env=self.env, capture_output=True, text=True
        )
        if p.returncode != 0:
            self.close()
            raise PeerUnavailable(f"docker import failed: {p.stderr.strip()}")

    def argv(self, i: int) -> list[str]:
        return [*self.base, "run", "--rm", "--network", self.network, self.image, "/bin/true"]

    def close(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(
                [*self.base, "rm", "-f", "-v", *self._ids()], env=self.env, capture_output=True
            )
            self.proc.send_signal(signal.SIGTERM)  # by PID: only the daemon we started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        umount_all_under(self.tmp, self.exec_root)
        if not self.had_docker0 and Path("/sys/class/net/docker0").exists():
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True, check=False)
        _new_cgroup_dirs(self.cgroups_before, ("docker",))
        shutil.rmtree(self.exec_root, ignore_errors=True)
        if os.environ.get("BERTH_BENCH_KEEP_DOCKER_LOG"):
            print(f"dockerd log kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _ids(self) -> list[str]:
        p = subprocess.run([*self.base, "ps", "-aq"], env=self.env, capture_output=True, text=True)
        return p.stdout.split()


# The real host's network, around peers on their default bridges ---------------

PEER_BRIDGES = ("docker0", "podman0", "cni-podman0")
# iptables-nft makes these nft tables on first use; new ones are deleted at the end.
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
NET_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/bridge/bridge-nf-call-arptables",
)


def _sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def _nft_tables() -> set[tuple[str, str]]:
    p = _sh("nft", "list", "tables")
    return {
        (w[1], w[2])
        for w in (line.split() for line in p.stdout.splitlines())
        if len(w) == 3 and w[0] == "table"
    }


def _sysctls() -> dict[str, str]:
    out = {}
    for key in NET_SYSCTLS:
        try:
            out[key] = Path("/proc/sys", key).read_text().strip()
        except OSError:
            pass
    return out


def _iptables_rules(tool: str, table: str) -> list[str]:
    p = _sh(tool, "-w", "-t", table, "-S")
    return p.stdout.splitlines() if p.returncode == 0 else []


class HostNetGuard:
    """Records the real host's network state before Podman/Docker run on their
    default bridges, and puts back what they changed: their bridges (docker0,
    podman0), the iptables rules and chains they added (only those naming a new
    chain or their bridges), chain policies (Docker sets FORWARD to DROP),
    iptables-nft tables that did not exist, and forwarding sysctls (ip_forward)."""

    def __init__(self) -> None:
        self.links = set(os.listdir("/sys/class/net"))
        self.sysctls = _sysctls()
        self.tables = _nft_tables()
        self.rules = {
            (tool, t): _iptables_rules(tool, t)
            for tool in ("iptables", "ip6tables")
            for t in IPTABLES_TABLES
            if shutil.which(tool)
        }

    def restore(self) -> tuple[list[str], list[str]]:
        """Undo the peers' changes; (what was undone, what still differs)."""
        done: list[str] = []
        for name in PEER_BRIDGES:
            if name not in self.links and Path("/sys/class/net", name).exists():
                _sh("ip", "link", "delete", name)
                done.append(f"deleted {name}")
        for (tool, table), before in self.rules.items():
            done += self._restore_iptables(tool, table, before)
        for fam, name in sorted(_nft_tables() - self.tables):
            if fam in ("ip", "ip6") and name in IPTABLES_TABLES:
                _sh("nft", "delete", "table", fam, name)
                done.append(f"deleted nft table {fam} {name} (made by iptables-nft)")
        now = _sysctls()
        for key, value in self.sysctls.items():
            if now.get(key) != value:
                try:
                    Path("/proc/sys", key).write_text(value)
                    done.append(f"{key.replace('/', '.')} {now.get(key)} -> {value}")
                except OSError as e:
                    done.append(f"could not restore {key}: {e}")
        return done, self.differences()

    def _restore_iptables(self, tool: str, table: str, before: list[str]) -> list[str]:
        after = _iptables_rules(tool, table)
        if after == before:
            return []
        done = []
        old_chains = {line.split()[1] for line in before if line.startswith(("-N ", "-P "))}
        new_chains = [
            line.split()[1]
            for line in after
            if line.startswith("-N ") and line.split()[1] not in old_chains
        ]
        words = set(new_chains) | set(PEER_BRIDGES)
        for line in reversed(after):  # rules the peers added to chains that stay
            w = line.split()
            if (
                line.startswith("-A ")
                and line not in before
                and w[1] in old_chains
                and words & set(w)
            ):
                _sh(tool, "-w", "-t", table, "-D", *w[1:])
                done.append(f"{tool} -t {table}: removed `{line}`")
        for chain in new_chains:
            _sh(tool, "-w", "-t", table, "-F", chain)
        for chain in new_chains:
            _sh(tool, "-w", "-t", table, "-X", chain)
        if new_chains:
            done.append(f"{tool} -t {table}: removed chains {', '.join(new_chains)}")
        for line in before:
            if line.startswith("-P ") and line not in after:
                _sh(tool, "-w", "-t", table, *line.split())
                done.append(f"{tool} -t {table}: policy back to `{line}`")
        return done

    def differences(self) -> list[str]:
        """What still differs from the recorded state (peer-made objects only)."""
        diff = [
            f"link {n} still present"
            for n in PEER_BRIDGES
            if n not in self.links and Path("/sys/class/net", n).exists()
        ]
        now = _sysctls()
        diff += [
            f"{k.replace('/', '.')} is {now.get(k)}, was {v}"
            for k, v in self.sysctls.items()
            if now.get(k) != v
        ]
        for (tool, table), before in self.rules.items():
            after = _iptables_rules(tool, table)
            diff += [
                f"{tool} -t {table}: `{line}` appeared" for line in after if line not in before
            ]
            diff += [
                f"{tool} -t {table}: `{line}` went away" for line in before if line not in after
            ]
        diff += [f"nft table {f} {n} appeared" for f, n in sorted(_nft_tables() - self.tables)]
        return diff


def install_peers() -> None:
    """apt-get install podman and docker.io, without letting the packages start services
    (a system dockerd would set FORWARD to DROP for every other engine on the host)."""
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        missing = [
            p
            for p, exe in (("podman", "podman"), ("docker.io", "dockerd"))
            if not shutil.which(exe)
        ]
        if missing:
            print(f"installing {' '.join(missing)} ...", flush=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", *missing],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
    finally:
        if ours:
            policy.unlink()
