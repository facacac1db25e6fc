"""The system part of the engine facade: version, info, host check, events, boot id.

``SystemAPI`` is a mixin for ``engine.api.Engine``: it relies on ``self.config``,
``self.db`` and ``self.images``, and uses the containers mixin's methods when
they are there (through getattr, so it also works on a partial engine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import __version__
from engine._lazy import lazy

platform = lazy("platform")
socket = lazy("socket")
subprocess = lazy("subprocess")

# The Docker Engine API level whose JSON shapes Berth's reports follow.
API_VERSION = "1.41"
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
}


def _first_line(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = p.stdout.strip().splitlines() if p.returncode == 0 else []
    return lines[0] if lines else ""


def _version_word(line: str) -> str:
    """``crun version 1.8.1`` -> ``1.8.1``."""
    words = line.split()
    return words[2] if len(words) >= 3 and words[1] == "version" else line


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class SystemAPI:
    # Provided by Engine; declared for type checkers.
    config: Any
    db: Any
    images: Any

    # -- version / info -------------------------------------------------------------------

    def runtime_versions(self) -> dict[str, str]:
        """First line of ``--version`` of conmon, crun and runc ("" when not installed)."""
        conmon = getattr(self.config, "conmon", "conmon") or "conmon"
        return {name: _first_line([path, "--version"])
                for name, path in (("conmon", conmon), ("crun", "crun"), ("runc", "runc"))}  # fmt: skip

    def version(self) -> dict:
        arch = _ARCH.get(platform.machine(), platform.machine())
        kernel = platform.release()
        versions = self.runtime_versions()
        components = [
            {"Name": "Engine", "Version": __version__, "Details": {"ApiVersion": API_VERSION}}
        ] + [
            {"Name": n, "Version": _version_word(v), "Details": {"Line": v}}
            for n, v in versions.items()
            if v
        ]
        client = {
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "PythonVersion": platform.python_version(),
            "Os": "linux",
            "Arch": arch,
        }
        server = {
            "Platform": {"Name": "Berth Engine"},
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": API_VERSION,
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": kernel,
            "Components": components,
        }
        # Flat fields as in `podman version`, nested ones as in `docker version`
        # so `--format '{{.Server.Version}}'` scripts keep working.
        return {
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "PythonVersion": platform.python_version(),
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": kernel,
            "Runtimes": versions,
            "Client": client,
            "Server": server,
        }

    def _container_counts(self) -> dict[str, int]:
        states: list[str]
        lister = getattr(self, "list_containers", None)
        try:
            if lister is None:
                raise AttributeError
            states = [str(c.get("State") or c.get("state") or "").lower() for c in lister(all=True)]
        except Exception:  # a partial engine or a broken row must not break `info`
            states = [r["state"] for r in self.db.query("SELECT state FROM containers")]
        running = sum(s == "running" for s in states)
        paused = sum(s == "paused" for s in states)
        return {
            "Containers": len(states),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": len(states) - running - paused,
        }

    def _image_count(self) -> int:
        lister = getattr(self, "list_images", None)
        try:
            return len(lister() if lister else self.images.list())
        except Exception:
            return 0

    def _runtime_choice(self) -> tuple[str, dict[str, dict]]:
        from engine.system.check import HostProbe, choose_runtime

        try:
            from engine.cgroups import detect

            layout = detect()
        except Exception:
            layout = None
        name, _why = choose_runtime(self.config, layout, HostProbe())
        runtimes = {n: {"path": path} for n in ("crun", "runc") if (path := _which(n))}
        return name or "", runtimes

    def cgroup_version(self) -> str:
        try:
            from engine.cgroups import detect

            return "2" if detect().version == "v2" else "1"
        except Exception:
            return ""

    def ip_forwarding(self) -> bool:
        ns = self.config.host_netns
        if ns:
            out = _first_line(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"])
            return out.strip() == "1"
        try:
            return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        except OSError:
            return False

    def info(self) -> dict:
        default_runtime, runtimes = self._runtime_choice()
        hostname = socket.gethostname()
        info: dict[str, Any] = {
            "ID": self._engine_id(),
            **self._container_counts(),
            "Images": self._image_count(),
            "Driver": "overlay",
            "DockerRootDir": str(self.config.root),
            "RunRoot": str(self.config.run),
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": self.cgroup_version(),
            "DefaultRuntime": default_runtime,
            "Runtimes": runtimes,
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(),
            "OSType": "linux",
            "Architecture": platform.machine(),
            "NCPU": os.cpu_count() or 0,
            "MemTotal": _mem_total(),
            "Name": hostname,
            "IPForwarding": self.ip_forwarding(),
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "ServerVersion": __version__,
            "InstancePrefix": self.config.prefix,
            "HostNetns": self.config.host_netns,
            "BootID": self.boot_id(),
            "Warnings": [],
        }
        if not info["IPForwarding"]:
            info["Warnings"].append("WARNING: IPv4 forwarding is disabled")
        return info

    def _engine_id(self) -> str:
        """A stable random ID for this instance (kept in state), like Docker's engine ID."""
        eid = self.db.get_kv("engine_id")
        if not eid:
            import uuid

            eid = str(uuid.uuid4())
            with self.db.write() as c:
                # OR IGNORE: two first `info` calls at once agree on the first one written.
                c.execute("INSERT OR IGNORE INTO kv(key, value) VALUES ('engine_id', ?)", (eid,))
            eid = self.db.get_kv("engine_id")
        return eid

    def boot_id(self) -> str:
        """The kernel's boot ID: it changes on reboot, telling a reboot from a crash."""
        try:
            return BOOT_ID_PATH.read_text().strip()
        except OSError:
            return ""

    # -- host check --------------------------------------------------------------------------

    def system_check(self, fix: bool = False) -> list[dict]:
        """Preflight plus orphan check, as dicts (id, severity, message, fixed, hint, obj)."""
        from engine.system.check import find_orphans, preflight
        from engine.system.findings import Finding

        findings = preflight(self.config, fix)
        hook = getattr(self, "reconcile_container", None)
        orphans = find_orphans(self.config, self.db, fix, on_dead_row=hook)
        from engine.network.orphans import find_network_orphans

        orphans += find_network_orphans(self, fix)
        if not orphans:
            orphans = [Finding("orphans", "ok", "no leftovers of crashed operations")]
        return [f.to_dict() for f in findings + orphans]

    # -- events --------------------------------------------------------------------------------

    def events(
        self, since: object = None, until: object = None, filters: list[str] | dict | None = None
    ) -> list[dict]:
        """Past events in Docker's JSON shape, oldest first, between since and until."""
        from engine import events as ev_log
        from engine.system.eventsq import matches, parse_filters, parse_time_ns

        now = time.time_ns()
        flt = parse_filters(filters or [])
        since_ns, until_ns = parse_time_ns(since, now), parse_time_ns(until, now)
        out: list[dict] = []
        seq = 0
        while True:  # in pages: the log can be long and since() caps each query
            batch = ev_log.since(self.db, after_seq=seq, since_ns=since_ns, until_ns=until_ns)
            for e in batch:
                d = _docker_event(e)
                if matches(d, flt):
                    out.append(d)
            if len(batch) < 10000:
                return out
            seq = batch[-1].seq

    def last_event_seq(self) -> int:
        from engine import events as ev_log

        return ev_log.last_seq(self.db)

    def events_after(self, seq: int, limit: int = 1000) -> list:
        """The events log's own records (engine.events.Event) after ``seq``, oldest
        first, at most ``limit``: what a feed that resumes by sequence number reads."""
        from engine import events as ev_log

        return ev_log.since(self.db, after_seq=max(0, seq), limit=limit)

    def follow_events(
        self,
        after_seq: int,
        filters: list[str] | dict | None = None,
        until: object = None,
        poll: float = 0.1,
    ) -> Iterator[dict]:
        """Events after ``after_seq`` as they are appended; ends at ``until`` if given."""
        from engine import events as ev_log
        from engine.system.eventsq import matches, parse_filters, parse_time_ns

        flt = parse_filters(filters or [])
        until_ns = parse_time_ns(until)
        seq = after_seq
        while True:
            batch = ev_log.since(self.db, after_seq=seq, until_ns=until_ns)
            for e in batch:
                seq = e.seq
                d = _docker_event(e)
                if matches(d, flt):
                    yield d
            if until_ns and time.time_ns() > until_ns:
                return
            if not batch:
                time.sleep(poll)


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _docker_event(e: Any) -> dict:
    """Event.to_docker() plus the legacy top-level fields docker still prints (status, id, from)."""
    d = e.to_docker()
    d["scope"] = "local"
    if d["Type"] in ("container", "image"):
        d["status"] = d["Action"]
        d["id"] = d["Actor"]["ID"]
    if d["Type"] == "container":
        d["from"] = d["Actor"]["Attributes"].get("image", "")
    return d
