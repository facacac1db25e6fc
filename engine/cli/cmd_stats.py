"""stats, update and `container anatomy` commands."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from engine.cli.main import engine_from

CLEAR = "\033[2J\033[H"  # what docker writes before each frame of a stream


# -- stats --------------------------------------------------------------------------------


def _render_stats(rows: list[dict], fmt: str) -> str:
    from engine.cli import gotemplate
    from engine.containers.stats import STATS_HEADERS, STATS_TABLE

    if fmt in ("", "table"):
        fmt = STATS_TABLE
    elif fmt == "json":
        fmt = "{{json .}}"
    if gotemplate.is_table(fmt):
        return gotemplate.render_table(fmt, rows, headers=STATS_HEADERS)
    return "".join(gotemplate.render(fmt, r) + "\n" for r in rows)


def cmd_stats(args) -> int:
    eng = engine_from(args)
    prev: dict[str, dict] = {}
    refs = list(args.containers)

    def frame() -> str:
        return _render_stats(
            eng.stats_rows(refs, prev, all=args.all, no_trunc=args.no_trunc), args.format
        )

    if args.no_stream:
        sys.stdout.write(frame())
        return 0
    try:
        while True:
            t0 = time.monotonic()
            text = frame()
            sys.stdout.write(CLEAR + text)
            sys.stdout.flush()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        return 0


# -- update -------------------------------------------------------------------------------


def cmd_update(args) -> int:
    from engine.containers import options as o
    from engine.containers.update import UpdateOptions
    from engine.errors import EngineError, InvalidArgument

    def size(text: str | None, what: str) -> int | None:
        if text is None:
            return None
        return -1 if text.strip() == "-1" else o.parse_size(text, what)

    cpus = None
    if args.cpus is not None:
        try:
            cpus = float(args.cpus)
        except ValueError:
            raise InvalidArgument(f"invalid --cpus {args.cpus!r}: not a number") from None
    u = UpdateOptions(
        memory=size(args.memory, "memory"),
        memory_swap=size(args.memory_swap, "memory-swap"),
        cpus=cpus,
        pids_limit=args.pids_limit,
        restart=args.restart,
    )
    if u.empty():
        raise InvalidArgument("you must provide one or more flags when using this command")
    eng = engine_from(args)
    rc = 0
    for ref in args.containers:
        try:
            eng.update_container(ref, u)
            print(ref)
        except EngineError as e:
            print(f"Error response from daemon: {e}", file=sys.stderr)
            rc = 1
    return rc


# -- container anatomy ----------------------------------------------------------------------


def _n(v: Any, unit: str = "") -> str:
    """A value from the kernel for people: "-" when unknown, "unlimited" for -1."""
    from engine.containers.stats import bytes_size

    if v is None:
        return "-"
    if v == -1:
        return "unlimited"
    return bytes_size(v) if unit == "B" else f"{v}{unit}"


def _section(title: str, lines: list[str]) -> list[str]:
    return [title] + ["  " + ln for ln in lines] + [""]


def _tree(procs: list[dict]) -> list[str]:
    by_pid = {p["Pid"]: p for p in procs}
    kids: dict[int, list[dict]] = {}
    for p in procs:
        kids.setdefault(p["PPid"] if p["PPid"] in by_pid else 0, []).append(p)
    out: list[str] = []

    def walk(parent: int, depth: int) -> None:
        for p in kids.get(parent, []):
            out.append(
                f"{p['Pid']:>7} {p['NsPid'] if p['NsPid'] is not None else '-':>6} "
                f"{p['PPid']:>7} {p['State']:>2}  {'  ' * depth}{p['Cmd']}"
            )
            walk(p["Pid"], depth + 1)

    walk(0, 0)
    return [f"{'PID':>7} {'NSPID':>6} {'PPID':>7} {'S':>2}  COMMAND"] + out


def format_anatomy(a: dict) -> str:
    out: list[str] = [f"Container {a['Name']} ({a['Id'][:12]})  pid {a['Pid']}", ""]
    ns = []
    for n in a["Namespaces"]:
        who = ["host"] if n["SharedWithHost"] else []
        who += n["SharedWith"]
        ns.append(
            f"{n['Type']:<7} {n['Inode']:<12} "
            + ("shared with " + ", ".join(who) if who else "own")
        )
    out += _section("Namespaces", ns)

    cg = a["Cgroup"]
    lines = [f"path     {cg['Path']} (cgroup {cg['Version']})"]
    if "Memory" in cg:
        m, c, p = cg["Memory"], cg["CPU"], cg["Pids"]
        lines += [
            f"memory   {_n(m['UsageNoCache'], 'B')} used (raw {_n(m['Usage'], 'B')}, "
            f"peak {_n(m['MaxUsage'], 'B')}) / limit {_n(m['Limit'], 'B')}, "
            f"memory+swap limit {_n(m['SwapLimit'], 'B')}",
            f"oom      {_n(m['OOMKills'])} kills",
            f"cpu      {_n(c['Cpus'])} cpus (quota {_n(c['QuotaUs'])} us / period "
            f"{_n(c['PeriodUs'])} us), shares {_n(c['Shares'])}, cpuset {_n(c['CpusetCpus'])}",
            f"         used {(c['UsageNs'] or 0) / 1e9:.3f}s; throttled {_n(c['ThrottledPeriods'])}"
            f" of {_n(c['Periods'])} periods, {(c['ThrottledTimeNs'] or 0) / 1e9:.3f}s",
            f"pids     {_n(p['Current'])} / limit {_n(p['Limit'])}",
        ]
        if cg.get("Pressure"):
            psi = ", ".join(f"{k} {v:.2f}%" for k, v in cg["Pressure"].items())
            lines.append(f"pressure {psi} (some, avg10)")
        if cg.get("Frozen"):
            lines.append("frozen   yes (paused)")
    elif "Error" in cg:
        lines.append(f"error    {cg['Error']}")
    out += _section("Cgroup", lines)

    s = a["Security"]
    out += _section(
        "Security",
        [
            f"user      uid {s['Uid']} gid {s['Gid']} groups {s['Groups'] or '-'}",
            f"CapEff    {' '.join(c.removeprefix('CAP_') for c in s['CapEff']) or '-'}",
            f"CapBnd    {' '.join(c.removeprefix('CAP_') for c in s['CapBnd']) or '-'}",
            f"seccomp   {s['Seccomp']} ({s['SeccompFilters']} filters)",
            f"no_new_privs {'yes' if s['NoNewPrivs'] else 'no'}",
        ],
    )

    r = a["RootFS"]
    lines = [f"type     {r.get('Type', '-')}{' (read-only)' if r.get('ReadOnly') else ''}"]
    for i, layer in enumerate(r.get("Layers", [])):
        lines.append(
            f"layer {i:<2} {layer['DiffID'][:19] or '?':<19} {_n(layer['Size'], 'B'):>10}  {layer['Dir']}"
        )
    if r.get("UpperDir"):
        lines.append(f"upper    {_n(r.get('UpperSize'), 'B'):>29}  {r['UpperDir']}")
    out += _section("Root filesystem", lines)

    out += _section(
        "Mounts",
        [
            f"{m['Destination']:<24} {m['Type']:<8} {_mount_source(m)}  {m['Options']}"
            for m in a["Mounts"]
        ],
    )

    ifs = a["Interfaces"]
    if isinstance(ifs, dict):
        lines = [f"error    {ifs.get('Error')}"]
    else:
        lines = [
            f"{i['Name']:<10} {i['State'] or '-':<8} {'UP' if i['Up'] else 'DOWN':<5}"
            f" mtu {i['MTU']:<6} {i['MAC'] or '-':<18} {' '.join(i['Addresses']) or '-'}"
            f"  rx {_n(i.get('RxBytes'), 'B')} tx {_n(i.get('TxBytes'), 'B')}"
            for i in ifs
        ]
    out += _section("Interfaces", lines)
    out += _section("Processes", _tree(a["Processes"]))
    return "\n".join(out).rstrip("\n") + "\n"


def cmd_anatomy(args) -> int:
    a = engine_from(args).container_anatomy(args.container)
    if args.json:
        print(json.dumps(a, indent=2))
    else:
        sys.stdout.write(format_anatomy(a))
    return 0


# -- registration ---------------------------------------------------------------------------


def _stats_parser(sub) -> None:
    p = sub.add_parser("stats", help="live resource usage of containers")
    p.add_argument("-a", "--all", action="store_true", help="all containers (default: running)")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_stats)


def _update_parser(sub) -> None:
    p = sub.add_parser("update", help="change limits and restart policy of containers")
    p.add_argument("-m", "--memory", default=None)
    p.add_argument("--memory-swap", default=None)
    p.add_argument("--cpus", default=None)
    p.add_argument("--pids-limit", type=int, default=None)
    p.add_argument("--restart", default=None)
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_update)


def register(sub) -> None:
    _stats_parser(sub)
    _update_parser(sub)
    csub = getattr(sub.choices.get("container"), "_berth_sub", None)
    if csub is None:
        return  # cmd_containers not registered (a trimmed parser in a test)
    _stats_parser(csub)
    _update_parser(csub)
    p = csub.add_parser("anatomy", help="a running container as the kernel sees it")
    p.add_argument("--json", action="store_true", help="print the raw report as JSON")
    p.add_argument("container")
    p.set_defaults(func=cmd_anatomy)


def _mount_source(m: dict) -> str:
    """A volume by its name, a bind mount by its path, anything else by its source."""
    if m.get("Volume"):
        return f"volume {m['Volume']}"
    return m["Root"] if m["Root"] != "/" else m["Source"]
