"""`--log-opt max-size=S --log-opt max-file=N`: conmon rotates at S, the log keeper
keeps the N-1 previous files, and `logs` reads them all in order (Docker's json-file)."""

from __future__ import annotations

import json
import time

import pytest

from engine import helpers
from engine.containers import logkeeper
from engine.runtime.oci import pid_alive

pytestmark = pytest.mark.root

# 600 numbered lines, 20 every 0.1 s: a 4 KiB file fills in about 0.4 s, well above
# the keeper's tick, so every rotation is seen.
WRITER = (
    "i=0; while [ $i -lt 600 ]; do printf 'line %04d\\n' $i; i=$((i+1));"
    " [ $((i % 20)) -eq 0 ] && usleep 100000; done"
)


def _wait_exit(env, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (
        env.berth("inspect", "-f", "{{.State.Running}}", name, check=True).stdout.strip() == "true"
    ):
        assert time.monotonic() < deadline, f"{name} still running"
        time.sleep(0.1)


def test_max_file_keeps_previous_files(busybox_env, monkeypatch):
    env = busybox_env
    monkeypatch.setenv(logkeeper.IDLE_EXIT_ENV, "0.5")
    env.berth("run", "-d", "--name", "chatty", "--log-opt", "max-size=4k", "--log-opt",
              "max-file=3", "busybox", "sh", "-c", WRITER, check=True)  # fmt: skip
    _wait_exit(env, "chatty")
    info = json.loads(env.berth("inspect", "chatty", check=True).stdout)[0]
    assert info["HostConfig"]["LogConfig"]["Config"]["max-file"] == "3"
    log = env.engine().get_container("chatty")
    from engine.containers.records import Paths

    path = Paths(env.engine().config, log.id).log
    names = sorted(p.name for p in path.parent.glob("ctr.log*"))
    assert names == ["ctr.log", "ctr.log.1", "ctr.log.2"], names  # never a third old one
    lines = env.berth("logs", "chatty", check=True).stdout.splitlines()
    nums = [int(line.split()[1]) for line in lines]
    # The last line is there, the tail is contiguous, and it is longer than one file holds.
    assert nums[-1] == 599
    assert nums == list(range(nums[0], 600)), "lines lost or out of order across files"
    one_file = len(path.read_text().splitlines())
    assert len(nums) > one_file + 20 and nums[0] > 0  # older ones were rotated away
    # --tail counts across files too.
    tail = env.berth("logs", "--tail", str(one_file + 5), "chatty", check=True).stdout
    assert len(tail.splitlines()) == one_file + 5

    # With no container left to watch the keeper exits by itself.
    eng = env.engine()
    deadline = time.monotonic() + 15
    while (h := helpers.lookup(eng, logkeeper.NAME)) and pid_alive(h.pid):
        assert time.monotonic() < deadline, "log keeper did not exit"
        time.sleep(0.1)


def test_single_file_by_default_and_bad_max_file(busybox_env):
    env = busybox_env
    env.berth("run", "--name", "quiet", "--log-opt", "max-size=4k", "busybox", "sh", "-c",
              WRITER.replace("usleep 100000", "true"), check=True)  # fmt: skip
    eng = env.engine()
    from engine.containers.records import Paths

    path = Paths(eng.config, eng.get_container("quiet").id).log
    assert sorted(p.name for p in path.parent.glob("ctr.log*")) == ["ctr.log"]
    assert helpers.lookup(eng, logkeeper.NAME) is None  # nothing asked for a keeper
    p = env.berth("run", "--log-opt", "max-file=0", "busybox", "true")
    assert p.returncode == 125 and "max-file" in p.stderr
