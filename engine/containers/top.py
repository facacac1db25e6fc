"""``top``: the container's processes as the host's ``ps`` shows them (Docker's way).

The runtime lists the PIDs in the container's cgroup (``<runtime> ps --format
json``); the host's ``ps`` is then run with the user's options and only the
rows of those PIDs are kept, so any ``ps`` option works.
"""

from __future__ import annotations

import json
import subprocess

from engine.containers import lifecycle
from engine.containers.records import Container
from engine.errors import EngineError, InvalidArgument, InvalidState
from engine.runtime.oci import pid_alive


def container_pids(eng, c: Container) -> list[int]:
    if c.state not in ("running", "paused") or not pid_alive(c.pid):
        raise InvalidState(f"container {c.name} is not running", obj=c.name)
    rt = lifecycle._runtime(eng, c)
    p = subprocess.run(
        [rt.path, f"--root={rt.state_root}", "ps", "--format", "json", c.id],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if p.returncode != 0:
        raise EngineError(
            f"{rt.name} ps {c.name} failed: {p.stderr.strip() or p.returncode}", obj=c.name
        )
    try:
        pids = json.loads(p.stdout or "[]") or []
    except ValueError:
        raise EngineError(
            f"{rt.name} ps {c.name}: unreadable output {p.stdout[:80]!r}", obj=c.name
        ) from None
    return [int(x) for x in pids]


def top(eng, c: Container, ps_args: list[str] | None = None) -> dict:
    """``{"Titles": [...], "Processes": [[...], ...]}`` as Docker's API returns it."""
    args = [a for arg in (ps_args or ["-ef"]) for a in arg.split()] or ["-ef"]
    pids = container_pids(eng, c)
    if not pids:
        return {"Titles": [], "Processes": []}
    # ps -q PIDS is quick and lists exactly ours; some options (forest) refuse it.
    quick = subprocess.run(
        ["ps", *args, "-q", ",".join(map(str, pids))], capture_output=True, text=True
    )
    out = quick
    if quick.returncode != 0:
        out = subprocess.run(["ps", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise InvalidArgument(f"ps {' '.join(args)} failed: {out.stderr.strip()}")
    return parse_ps(out.stdout, set(pids), filtered=quick.returncode == 0)


def parse_ps(text: str, pids: set[int], filtered: bool = False) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {"Titles": [], "Processes": []}
    titles = lines[0].split()
    try:
        pid_col = titles.index("PID")
    except ValueError:
        if not filtered:
            raise InvalidArgument("couldn't find PID field in ps output") from None
        pid_col = -1
    procs = []
    for line in lines[1:]:
        # The last column (the command) may hold spaces.
        fields = line.split(None, len(titles) - 1)
        if pid_col >= 0:
            try:
                if int(fields[pid_col]) not in pids:
                    continue
            except (ValueError, IndexError):
                continue
        procs.append(fields)
    return {"Titles": titles, "Processes": procs}
