"""Health checks with real containers: one runner per engine, Docker's semantics.

Each test stops the runner it caused (found through the helpers table) and
removes its instance's cgroup parents in ``finally``, so no process or cgroup
outlives it even when an assertion fails.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engine import helpers
from engine.containers import health
from engine.events import since

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

DEADLINE = 30.0


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _stop_runner_and_cgroups(env) -> None:
    """Kill the instance's helpers, then remove its cgroup parents (the runner
    lives in `<prefix>-monitors`)."""
    eng = env.engine()
    try:
        helpers.stop_all(eng)
    except Exception:
        pass
    for c in eng.containers(all=True):
        try:
            eng.remove_container(c.id, force=True)
        except Exception:
            pass
    remove_instance_cgroups(env.prefix)


def remove_instance_cgroups(prefix: str) -> None:
    from engine.cgroups import detect, open_cgroup
    from engine.errors import EngineError

    for name in (f"{prefix}-monitors", prefix):
        try:
            cg = open_cgroup(detect(), name)
            if cg.exists():
                cg.kill_all()  # only our monitors/runner can be left in there
                cg.remove(timeout=5)
        except EngineError:
            pass


def _probes_left(cid: str, arg: bytes) -> list[int]:
    """Host pids of processes in the container's cgroup whose argv mentions ``arg``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cg = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if cid in cg and arg in _cmdline(int(pid)):
            found.append(int(pid))
    return found


def _health(env, name: str) -> dict:
    p = env.berth("inspect", "-f", "{{json .State.Health}}", name, check=True)
    return json.loads(p.stdout)


def _wait_status(env, name: str, want: str, seen: list[str] | None = None) -> dict:
    deadline = time.monotonic() + DEADLINE
    while True:
        h = _health(env, name)
        if seen is not None and (not seen or seen[-1] != h["Status"]):
            seen.append(h["Status"])
        if h["Status"] == want:
            return h
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: health never became {want}: {h}")
        time.sleep(0.2)


def _runner_pid(eng) -> int:
    h = helpers.running(eng, health.NAME)
    assert h is not None, "no live health runner recorded"
    assert b"engine.containers.health" in _cmdline(h.pid)
    return h.pid


def _health_events(eng) -> list[tuple[str, str]]:
    return [
        (e.action, e.attrs.get("name", ""))
        for e in since(eng.db)
        if e.action.startswith("health_status")
    ]


def test_starting_then_healthy(busybox_env, monkeypatch):
    env = busybox_env
    monkeypatch.setenv(health.IDLE_EXIT_ENV, "2")  # the runner inherits it from the CLI
    eng = env.engine()
    try:
        env.berth(
            "run", "-d", "--name", "web", "--health-cmd", "test -f /tmp/ok",
            "--health-interval", "1s", "--health-retries", "2",
            "busybox", "sh", "-c", "sleep 3; touch /tmp/ok; sleep 300",
            check=True,
        )  # fmt: skip
        seen: list[str] = []
        h = _wait_status(env, "web", "healthy", seen)
        assert seen[0] == "starting"
        assert set(seen) <= {"starting", "unhealthy", "healthy"}
        assert h["FailingStreak"] == 0 and h["Log"][-1]["ExitCode"] == 0
        assert len(h["Log"]) <= health.MAX_LOG
        ps = env.berth("ps", "--format", "{{.Names}} {{.Status}}", check=True).stdout
        assert "web Up" in ps and "(healthy)" in ps
        assert ("health_status: healthy", "web") in _health_events(eng)
        actors = {e.actor for e in since(eng.db) if e.action.startswith("health_status")}
        assert actors == {health.ACTOR}

        # One runner per engine; asking again is a no-op.
        pid = _runner_pid(eng)
        assert health.ensure_runner(eng) == pid
        assert len(helpers.all_helpers(eng)) == 1

        # No container with a check left: the runner exits and deregisters itself.
        env.berth("rm", "-f", "web", check=True)
        deadline = time.monotonic() + DEADLINE
        while helpers.lookup(eng, health.NAME) is not None or helpers._is_ours(eng, pid):
            assert time.monotonic() < deadline, "health runner did not exit when idle"
            time.sleep(0.2)
    finally:
        _stop_runner_and_cgroups(env)


def test_failing_timeout_and_start_period(busybox_env):
    env = busybox_env
    eng = env.engine()
    try:
        common = ["--health-interval", "500ms", "--health-retries", "2"]
        env.berth("run", "-d", "--name", "bad", "--health-cmd", "echo nope; exit 1", *common,
                  "busybox", "sleep", "300", check=True)  # fmt: skip
        env.berth("run", "-d", "--name", "slow", "--health-cmd", "sleep 60", "--health-timeout", "300ms",
                  *common, "busybox", "sleep", "300", check=True)  # fmt: skip
        env.berth("run", "-d", "--name", "grace", "--health-cmd", "exit 1", "--health-start-period", "60s",
                  *common, "busybox", "sleep", "300", check=True)  # fmt: skip

        h = _wait_status(env, "bad", "unhealthy")
        assert h["FailingStreak"] >= 2
        assert h["Log"] and all(e["ExitCode"] == 1 and e["Output"] == "nope\n" for e in h["Log"])
        assert ("health_status: unhealthy", "bad") in _health_events(eng)

        h = _wait_status(env, "slow", "unhealthy")
        assert h["Log"][-1]["ExitCode"] == -1
        assert h["Log"][-1]["Output"] == "Health check exceeded timeout (300ms)"
        # The timed-out probe was killed inside the container, not just its runtime exec.
        slow_id = eng.get_container("slow").id
        # (At most the probe in flight now; leaked ones would pile up, 2+ timed out already.)
        assert len(_probes_left(slow_id, b"60")) <= 1, "timed-out probes still run in the container"

        # Within the start period failures are logged but do not count.
        deadline = time.monotonic() + DEADLINE
        while len(_health(env, "grace")["Log"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        h = _health(env, "grace")
        assert h["Status"] == "starting" and h["FailingStreak"] == 0
        assert "(health: starting)" in env.berth("ps", "--filter", "name=grace").stdout

        # All three are probed by one runner process.
        _runner_pid(eng)
        assert [x.name for x in helpers.all_helpers(eng)] == [health.NAME]
    finally:
        _stop_runner_and_cgroups(env)


def test_no_healthcheck_runs_nothing(busybox_env):
    env = busybox_env
    eng = env.engine()
    try:
        env.berth("run", "-d", "--name", "quiet", "--health-cmd", "true", "--no-healthcheck",
                  "busybox", "sleep", "300", check=True)  # fmt: skip
        info = json.loads(env.berth("inspect", "quiet", check=True).stdout)[0]
        assert "Health" not in info["State"] and "Healthcheck" not in info["Config"]
        assert helpers.lookup(eng, health.NAME) is None
        assert not health.needed(eng)
    finally:
        _stop_runner_and_cgroups(env)


def test_runner_restarts_after_being_killed(busybox_env):
    """A recorded runner that died (kill -9) is replaced by the next ensure_runner,
    and the new one carries the container's health on from the row."""
    env = busybox_env
    eng = env.engine()
    try:
        env.berth("run", "-d", "--name", "ok", "--health-cmd", "true", "--health-interval", "500ms",
                  "busybox", "sleep", "300", check=True)  # fmt: skip
        _wait_status(env, "ok", "healthy")
        old = _runner_pid(eng)
        os.kill(old, 9)
        deadline = time.monotonic() + DEADLINE
        while helpers._is_ours(eng, old):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert helpers.running(eng, health.NAME) is None
        new = health.ensure_runner(eng)
        assert new != old and _runner_pid(eng) == new
        last_end = _health(env, "ok")["Log"][-1]["End"]
        deadline = time.monotonic() + DEADLINE
        while (h := _health(env, "ok"))["Log"][-1]["End"] == last_end:
            assert time.monotonic() < deadline, "the new runner never probed"
            time.sleep(0.2)
        assert h["Status"] == "healthy" and h["FailingStreak"] == 0
        assert helpers.stop(eng, health.NAME)
        assert helpers.lookup(eng, health.NAME) is None and not helpers._is_ours(eng, new)
    finally:
        _stop_runner_and_cgroups(env)


# -- pure functions (no containers) -----------------------------------------------------


@pytest.mark.parametrize(
    ("test", "argv"),
    [
        (["CMD-SHELL", "curl -f x || exit 1"], ["/bin/sh", "-c", "curl -f x || exit 1"]),
        (["CMD", "true", "a b"], ["true", "a b"]),
        (["NONE"], None),
        ([], None),
    ],
)
def test_probe_argv(test, argv):
    assert health.probe_argv(test) == argv


def test_apply_result_follows_docker():
    hc = {"Retries": 2, "StartPeriod": 10}
    s: dict = {}
    # In the start period, before any success: logged, not counted.
    s = health.apply_result(s, hc, 100.0, 105.0, 105.1, 1, "x")
    assert (s["Status"], s["FailingStreak"], len(s["Log"])) == ("starting", 0, 1)
    s = health.apply_result(s, hc, 100.0, 111.0, 111.1, 1, "x")
    assert (s["Status"], s["FailingStreak"]) == ("starting", 1)
    s = health.apply_result(s, hc, 100.0, 112.0, 112.1, 1, "x")
    assert (s["Status"], s["FailingStreak"]) == ("unhealthy", 2)
    s = health.apply_result(s, hc, 100.0, 113.0, 113.1, 0, "")
    assert (s["Status"], s["FailingStreak"]) == ("healthy", 0)
    for i in range(6):
        s = health.apply_result(s, hc, 100.0, 120.0 + i, 120.5 + i, 0, str(i))
    assert [e["Output"] for e in s["Log"]] == ["1", "2", "3", "4", "5"]
    # After a success the start period no longer shields failures.
    s = health.apply_result(s, {"Retries": 1, "StartPeriod": 1000}, 100.0, 130.0, 130.1, 1, "")
    assert s["Status"] == "unhealthy"


def test_go_duration():
    assert [health.go_duration(x) for x in (0.3, 1, 30, 90, 3600)] == [
        "300ms",
        "1s",
        "30s",
        "1m30s",
        "1h0m0s",
    ]
