"""`berth version|info|events|system check` and the events query helpers, on a tmp root."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.system.eventsq import (
    format_line,
    format_time_ns,
    matches,
    parse_duration_ns,
    parse_filters,
    parse_time_ns,
)

api = pytest.importorskip("engine.api", reason="engine.api is not importable yet")
from engine.cli.main import main  # noqa: E402
from engine.config import EngineConfig  # noqa: E402

CID = "c" * 64


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EngineConfig:
    c = EngineConfig(
        root=tmp_path / "root", run=tmp_path / "run", prefix="bt" + secrets.token_hex(3)
    )
    for k, v in c.env().items():
        monkeypatch.setenv(k, v)
    return c


@pytest.fixture
def eng(cfg: EngineConfig):
    return api.Engine(cfg, actor="uid:0(root)")


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- version / info ---------------------------------------------------------------------------


def test_version_human_and_format(cfg, capsys) -> None:
    from engine import __version__

    rc, out, _ = _run(capsys, "version")
    assert rc == 0
    assert f"Version:        {__version__}" in out
    assert "OS/Arch:" in out and "linux/" in out
    assert any(line.startswith(("runc:", "crun:", "conmon:")) for line in out.splitlines())
    rc, out, _ = _run(capsys, "version", "--format", "{{.Server.Version}}|{{.Client.Os}}")
    assert (rc, out) == (0, f"{__version__}|linux\n")
    rc, out, _ = _run(capsys, "version", "--format", "{{json .}}")
    v = json.loads(out)
    assert v["ApiVersion"] and v["KernelVersion"] and "Components" in v["Server"]


def test_info_counts_and_format(cfg, eng, capsys) -> None:
    with eng.db.write() as c:
        for i, state in enumerate(("running", "exited", "paused", "created")):
            c.execute(
                "INSERT INTO containers(id, name, image_id, image_ref, created, state, config)"
                " VALUES (?,?,?,?,?,?,?)",
                (f"{i}" * 64, f"n{i}", "sha256:" + "0" * 64, "busybox", time.time(), state, "{}"),
            )
    info = eng.info()
    assert (info["Containers"], info["ContainersRunning"], info["ContainersPaused"]) == (4, 1, 1)
    assert info["ContainersStopped"] == 2
    assert info["DockerRootDir"] == str(cfg.root) and info["Driver"] == "overlay"
    assert info["CgroupDriver"] == "cgroupfs" and info["CgroupVersion"] in ("1", "2")
    assert info["SecurityOptions"] == ["name=seccomp,profile=builtin"]
    assert info["ID"] == eng.info()["ID"]  # stable
    assert info["NCPU"] >= 1 and info["MemTotal"] > 0 and info["BootID"] == eng.boot_id()
    rc, out, _ = _run(capsys, "info")
    assert rc == 0
    assert " Containers: 4\n  Running: 1\n  Paused: 1\n  Stopped: 2\n" in out
    assert f" Docker Root Dir: {cfg.root}\n" in out and " Cgroup Driver: cgroupfs\n" in out
    rc, out, _ = _run(capsys, "info", "--format", "{{.Driver}} {{.ContainersRunning}}")
    assert out == "overlay 1\n"
    rc, out, _ = _run(capsys, "system", "info", "-f", "{{json .SecurityOptions}}")
    assert out == '["name=seccomp,profile=builtin"]\n'


def test_boot_id(eng) -> None:
    assert len(eng.boot_id()) == 36


def test_system_check_json(cfg, capsys) -> None:
    rc, out, _ = _run(capsys, "system", "check", "--json")
    findings = json.loads(out)
    assert {"id", "severity", "message", "fixed", "hint"} <= set(findings[0])
    ids = {f["id"] for f in findings}
    assert {"runtime", "cgroups", "orphans"} <= ids
    errors = [f for f in findings if f["severity"] == "error" and not f["fixed"]]
    assert rc == (1 if errors else 0)
    rc, out, _ = _run(capsys, "system", "check")
    assert "ok    no leftovers of crashed operations" in out


# -- events -----------------------------------------------------------------------------------


def _seed(eng) -> None:
    eng.emit("container", "create", CID, image="busybox", name="web")
    eng.emit("container", "start", CID, image="busybox", name="web")
    eng.emit("image", "pull", "busybox:latest")
    eng.emit("volume", "create", "data", driver="local")


def test_events_history_lines(cfg, eng, capsys) -> None:
    _seed(eng)
    rc, out, _ = _run(capsys, "events")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 4
    assert lines[1].endswith(
        f"Z container start {CID} (image=busybox, name=web, actor=uid:0(root))"
    )
    assert lines[2].split(" ", 1)[1] == "image pull busybox:latest (actor=uid:0(root))"


def test_events_filters_and_format(cfg, eng, capsys) -> None:
    _seed(eng)
    rc, out, _ = _run(capsys, "events", "--filter", "type=container", "--format", "{{.Status}}")
    assert out == "create\nstart\n"
    # docker's -f KEY=VALUE is a filter; keys AND, values OR.
    rc, out, _ = _run(capsys, "events", "-f", "event=start", "-f", "event=pull", "--format",
                      "{{.Type}} {{.Action}}")  # fmt: skip
    assert out == "container start\nimage pull\n"
    rc, out, _ = _run(capsys, "events", "-f", "container=web", "-f", "event=create")
    assert len(out.splitlines()) == 1
    rc, out, _ = _run(capsys, "events", "-f", f"container={CID[:12]}", "--format", "{{json .}}")
    evs = [json.loads(x) for x in out.splitlines()]
    assert [e["Action"] for e in evs] == ["create", "start"]
    e = evs[0]
    assert e["Actor"] == {"ID": CID, "Attributes": {"image": "busybox", "name": "web"}}
    assert (e["status"], e["id"], e["from"], e["scope"]) == ("create", CID, "busybox", "local")
    assert e["actor"] == "uid:0(root)" and e["time"] == e["timeNano"] // 10**9
    rc, out, err = _run(capsys, "events", "--filter", "colour=red")
    assert rc == 125 and "invalid filter" in err


def test_events_since_until(cfg, eng, capsys) -> None:
    _seed(eng)
    later = time.time() + 3600
    rc, out, _ = _run(capsys, "events", "--since", str(int(later)))
    assert (rc, out) == (0, "")
    rc, out, _ = _run(capsys, "events", "--since", "1h", "--until", str(later))
    assert len(out.splitlines()) == 4
    rc, out, _ = _run(capsys, "events", "--until", "2000-01-01T00:00:00Z")
    assert out == ""
    rc, _, err = _run(capsys, "events", "--since", "yesterday")
    assert rc == 125 and "invalid time" in err


def test_follow_events_sees_new_ones_and_stops_at_until(eng) -> None:
    _seed(eng)
    mark = eng.last_event_seq()

    def later() -> None:
        time.sleep(0.2)
        eng2 = api.Engine(eng.config, actor="uid:0(root)")  # another thread: its own connection
        eng2.emit("container", "die", CID, exitCode="0", image="busybox", name="web")
        eng2.emit("image", "tag", "busybox:x")

    t = threading.Thread(target=later)
    t.start()
    got = list(eng.follow_events(mark, filters=["type=container"], until=time.time() + 1.0))
    t.join()
    assert [(e["Type"], e["Action"]) for e in got] == [("container", "die")]
    assert got[0]["seq"] > mark


# -- query helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1700000000", 1_700_000_000 * 10**9),
        ("1700000000.5", 1_700_000_000_500_000_000),
        ("1700000000.000000001", 1_700_000_000_000_000_001),
        ("2023-11-14T22:13:20Z", 1_700_000_000 * 10**9),
        ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456_789),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000 * 10**9),
    ],
)
def test_parse_time(text: str, want: int) -> None:
    assert parse_time_ns(text) == want


def test_parse_relative_and_durations() -> None:
    now = 2_000_000_000 * 10**9
    assert parse_time_ns("10m", now) == now - 600 * 10**9
    assert parse_time_ns("1h30m", now) == now - 5400 * 10**9
    assert parse_duration_ns("1.5s") == 1_500_000_000
    assert parse_duration_ns("10") is None and parse_duration_ns("m") is None
    assert parse_time_ns(None) == 0 and parse_time_ns("") == 0
    with pytest.raises(InvalidArgument):
        parse_time_ns("soon")


def test_filters_and_line_format() -> None:
    ev = {
        "Type": "container",
        "Action": "health_status: healthy",
        "Actor": {"ID": CID, "Attributes": {"name": "web", "image": "busybox", "tier": "db"}},
        "timeNano": 1_700_000_000_000_000_042,
        "actor": "user:alice",
    }
    assert matches(ev, parse_filters(["event=health_status"]))
    assert matches(ev, parse_filters(["label=tier=db", "image=busybox"]))
    assert not matches(ev, parse_filters(["label=tier=web"]))
    assert matches(ev, parse_filters({"type": ["image", "container"]}))
    with pytest.raises(InvalidArgument):
        parse_filters(["type"])
    assert format_time_ns(ev["timeNano"]) == "2023-11-14T22:13:20.000000042Z"
    assert format_line(ev) == (
        f"2023-11-14T22:13:20.000000042Z container health_status: healthy {CID} "
        "(image=busybox, name=web, tier=db, actor=user:alice)"
    )
