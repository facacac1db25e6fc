"""`system boot` with real containers.

A reboot is simulated: a different boot id goes into kv ``boot_id`` and the
containers' monitors and processes are killed with SIGKILL (conmon first, so no
exit command runs), leaving rows that still say "running" — what a host
restart leaves behind, minus the kernel objects, which boot must remove too.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine import helpers
from engine.containers import health, lifecycle, records
from engine.containers.records import Paths
from engine.events import since
from engine.runtime.oci import pid_alive
from engine.system.boot import boot
from tests.engine.test_health import remove_instance_cgroups

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _kill_hard(eng, name: str) -> None:
    """The reboot, for one container: monitor and process gone, row untouched."""
    c = records.load(eng.db, name)
    for pid in (c.conmon_pid, c.pid):  # conmon first: a live conmon would run the exit command
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while pid_alive(pid):
            assert time.monotonic() < deadline, f"pid {pid} of {name} survived SIGKILL"
            time.sleep(0.01)
    assert records.load(eng.db, name).state == "running"


def _leftovers(eng, cid: str) -> list[str]:
    p = Paths(eng.config, cid)
    found = []
    if str(p.merged) in Path("/proc/self/mountinfo").read_text():
        found.append(f"mount {p.merged}")
    if Path(f"/run/netns/{p.netns_name}").exists():
        found.append(f"netns {p.netns_name}")
    for d in Path("/sys/fs/cgroup").glob(f"*/{eng.config.prefix}/{cid}"):
        found.append(f"cgroup {d}")
    if p.bundle.exists():
        found.append(f"bundle {p.bundle}")
    return found


def _cleanup(env) -> None:
    eng = env.engine()
    try:
        helpers.stop_all(eng)
    except Exception:
        pass
    for c in records.load_all(eng.db):
        try:
            eng.remove_container(c.id, force=True)
        except Exception:
            pass
    remove_instance_cgroups(env.prefix)


def test_reboot_restarts_by_policy_and_leaves_nothing(busybox_env):
    env = busybox_env
    eng = env.engine()
    try:
        for name, policy in (("always", "always"), ("unless", "unless-stopped"),
                             ("unless-stopped-by-user", "unless-stopped"), ("never", "no")):  # fmt: skip
            env.berth(
                "run",
                "-d",
                "--name",
                name,
                "--restart",
                policy,
                "busybox",
                "sleep",
                "300",
                check=True,
            )
        env.berth("stop", "-t", "0", "unless-stopped-by-user", check=True)
        old = {c.name: c for c in records.load_all(eng.db)}
        for name in ("always", "unless", "never"):
            _kill_hard(eng, name)
        eng.db.set_kv("boot_id", "00000000-0000-0000-0000-000000000000")

        report = boot(eng)

        assert report["reboot"] is True
        assert sorted(report["stale"]) == ["always", "never", "unless"]
        assert sorted(report["started"]) == ["always", "unless"]
        assert report["failed"] == []
        for name in ("always", "unless"):
            c = records.load(eng.db, name)
            assert c.state == "running" and pid_alive(c.pid) and c.pid != old[name].pid
        never = records.load(eng.db, "never")
        assert (never.state, never.exit_code, never.pid) == ("exited", 255, 0)
        assert never.finished_at > old["never"].started_at
        assert not _leftovers(eng, never.id)
        stopped = records.load(eng.db, "unless-stopped-by-user")
        assert stopped.state == "exited" and stopped.user_stopped
        assert eng.db.get_kv("boot_id") == helpers.current_boot_id()
        ps = env.berth("ps", "--format", "{{.Names}}", check=True).stdout.split()
        assert sorted(ps) == ["always", "unless"]
        evs = since(eng.db)
        assert any(
            e.type == "system" and e.action == "boot" and e.attrs["reboot"] == "true" for e in evs
        )
        assert any(e.action == "die" and e.attrs.get("name") == "never" and e.attrs.get("exitCode") == "255"
                   for e in evs)  # fmt: skip

        # Booting again in the same boot changes nothing.
        again = boot(eng)
        assert again["reboot"] is False and again["started"] == [] and again["stale"] == []
    finally:
        _cleanup(env)


def test_same_boot_reconciles_and_restarts_helpers(busybox_env, monkeypatch):
    env = busybox_env
    eng = env.engine()
    try:
        eng.db.set_kv("boot_id", helpers.current_boot_id())
        env.berth("run", "-d", "--name", "hc", "--health-cmd", "true", "--health-interval", "500ms",
                  "busybox", "sleep", "300", check=True)  # fmt: skip
        env.berth("run", "-d", "--name", "lost", "busybox", "sleep", "300", check=True)
        env.berth(
            "run",
            "-d",
            "--name",
            "again",
            "--restart",
            "always",
            "busybox",
            "sleep",
            "300",
            check=True,
        )
        lost = records.load(eng.db, "lost")
        assert helpers.stop(eng, health.NAME)  # Berth's services went away...
        _kill_hard(eng, "lost")  # ...and a monitor died without calling back
        # An exit command that recorded the exit but died before restarting.
        _kill_hard(eng, "again")
        again = records.load(eng.db, "again")
        from engine.containers.records import Paths
        from engine.locks import file_lock

        with file_lock(Paths(eng.config, again.id).lock):
            lifecycle._cleanup_locked(eng, again)
        assert records.load(eng.db, "again").state == "exited"

        report = boot(eng)

        assert report["reboot"] is False
        assert report["reconciled"] == ["lost"] and report["started"] == ["again"]
        assert records.load(eng.db, "again").state == "running"
        assert report["helpers"] == [health.NAME]
        assert helpers.running(eng, health.NAME) is not None
        c = records.load(eng.db, "lost")
        assert c.state == "exited" and c.exit_code == 255
        assert not _leftovers(eng, lost.id)
        assert records.load(eng.db, "hc").state == "running"
        # The restarted runner probes again.
        deadline = time.monotonic() + 30
        while (records.load(eng.db, "hc").health_state or {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, "the runner restarted by boot never probed"
            time.sleep(0.2)
    finally:
        _cleanup(env)
