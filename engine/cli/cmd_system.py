"""`berth version`, `berth info`, `berth events`, `berth system check|info|events`.

Berth is daemonless, so `berth events` without ``--follow`` prints the
recorded history (filtered by --since/--until) and exits; with ``--follow`` it
keeps printing new events until Ctrl-C (or --until).

Docker spells ``--filter`` as ``-f`` for events; Berth also needs a short
follow flag. ``-f`` with a value is a filter (``-f type=container``), ``-f``
alone means follow, so both habits work.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.main import engine_from

_FOLLOW = object()  # the value of a bare -f

# Registered by register(); other command modules may add `system <verb>` parsers here.
system_subparsers: Any = None


def register(sub: Any) -> None:
    global system_subparsers
    p = sub.add_parser("version", help="show the Berth version information")
    p.add_argument("--format", "-f", dest="format", help="format the output with a Go template")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("info", help="display system-wide information")
    p.add_argument("--format", "-f", dest="format", help="format the output with a Go template")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("events", help="show engine events (history; -f/--follow for live)")
    _event_args(p)

    sysp = sub.add_parser("system", help="manage the engine host")
    system_subparsers = sysp.add_subparsers(dest="system_command", parser_class=type(sysp))
    p = system_subparsers.add_parser("check", help="check the host and clean up leftovers")
    p.add_argument("--fix", action="store_true", help="repair what can be repaired safely")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_check)
    p = system_subparsers.add_parser("info", help="display system-wide information")
    p.add_argument("--format", "-f", dest="format", help="format the output with a Go template")
    p.set_defaults(func=cmd_info)
    p = system_subparsers.add_parser("events", help="show engine events")
    _event_args(p)
    sysp.set_defaults(func=lambda a: _usage(sysp))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 0


def _event_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="show events since (RFC 3339, unix seconds or e.g. 10m)")
    p.add_argument("--until", help="show events until this time")
    p.add_argument("--filter", dest="filters", action="append", default=[],
                   help="filter events (type=, event=, container=, image=, label=, ...)")  # fmt: skip
    p.add_argument("-f", dest="f", action="append", nargs="?", const=_FOLLOW, default=[],
                   help="-f KEY=VALUE filters (as in docker), a bare -f follows")  # fmt: skip
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.add_argument("--format", help="format the output with a Go template ('{{json .}}')")
    p.set_defaults(func=cmd_events)


def _render(template: str, data: Any) -> str:
    from engine.cli.gotemplate import render

    return render(template, data)


# -- version / info ---------------------------------------------------------------------------


def cmd_version(args: argparse.Namespace) -> int:
    v = engine_from(args).version()
    if args.format:
        print(_render(args.format, v))
        return 0
    rows = [
        ("Version", v["Version"]),
        ("API Version", v["ApiVersion"]),
        ("Python Version", v["PythonVersion"]),
        ("OS/Arch", f"{v['Os']}/{v['Arch']}"),
        ("Kernel Version", v["KernelVersion"]),
    ]
    rows += [(name, line or "not installed") for name, line in v["Runtimes"].items()]
    width = max(len(k) for k, _ in rows) + 2
    for k, val in rows:
        print(f"{k + ':':<{width}}{val}")
    return 0


def bytes_size(n: float) -> str:
    """Docker's units.BytesSize: binary units, 4 significant digits (7.771GiB)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def info_lines(i: dict) -> list[str]:
    """The human `docker info` layout: one "Key: value" per line, sub-items indented."""
    sec = [f"  {o.split(',')[0].removeprefix('name=')}" for o in i.get("SecurityOptions", [])]
    return [
        "Server:",
        f" Containers: {i['Containers']}",
        f"  Running: {i['ContainersRunning']}",
        f"  Paused: {i['ContainersPaused']}",
        f"  Stopped: {i['ContainersStopped']}",
        f" Images: {i['Images']}",
        f" Server Version: {i['ServerVersion']}",
        f" Storage Driver: {i['Driver']}",
        f" Cgroup Driver: {i['CgroupDriver']}",
        f" Cgroup Version: {i['CgroupVersion']}",
        f" Runtimes: {' '.join(sorted(i['Runtimes']))}",
        f" Default Runtime: {i['DefaultRuntime'] or 'none'}",
        " Security Options:",
        *sec,
        f" Kernel Version: {i['KernelVersion']}",
        f" Operating System: {i['OperatingSystem']}",
        f" OSType: {i['OSType']}",
        f" Architecture: {i['Architecture']}",
        f" CPUs: {i['NCPU']}",
        f" Total Memory: {bytes_size(i['MemTotal'])}",
        f" Name: {i['Name']}",
        f" ID: {i['ID']}",
        f" Docker Root Dir: {i['DockerRootDir']}",
        f" Run Dir: {i['RunRoot']}",
        f" Instance Prefix: {i['InstancePrefix']}",
        f" Host Network Namespace: {i['HostNetns'] or '(host)'}",
        f" IPv4 Forwarding: {'enabled' if i['IPForwarding'] else 'disabled'}",
    ]


def cmd_info(args: argparse.Namespace) -> int:
    i = engine_from(args).info()
    if args.format:
        print(_render(args.format, i))
        return 0
    print("\n".join(info_lines(i)))
    for w in i.get("Warnings", []):
        print(w, file=sys.stderr)
    return 0


# -- system check ------------------------------------------------------------------------------

_LABEL = {"ok": "ok", "warn": "WARN", "error": "ERROR"}


def cmd_check(args: argparse.Namespace) -> int:
    findings = engine_from(args).system_check(fix=args.fix)
    if args.json:
        print(json.dumps(findings, indent=2))
    else:
        for f in findings:
            label = "FIXED" if f["fixed"] else _LABEL.get(f["severity"], f["severity"])
            print(f"{label:<6}{f['message']}")
            if f["hint"] and not f["fixed"] and f["severity"] != "ok":
                print(f"      hint: {f['hint']}")
    return 1 if any(f["severity"] == "error" and not f["fixed"] for f in findings) else 0


# -- events ----------------------------------------------------------------------------------


class EventView(dict):
    """An event for --format: JSON keys as stored, plus Go's field names (.Status, .ID, ...)
    so templates written for docker's Message struct work; ``json .`` shows the JSON keys."""

    _ALIASES = {"Status": "status", "ID": "id", "From": "from", "Scope": "scope",
                "Time": "time", "TimeNano": "timeNano"}  # fmt: skip

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or super().__contains__(self._ALIASES.get(key, key))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if super().__contains__(key):
            return super().__getitem__(key)
        return super().__getitem__(self._ALIASES.get(key, key))


def cmd_events(args: argparse.Namespace) -> int:
    from engine.system.eventsq import format_line, parse_filters

    follow = args.follow or any(v is _FOLLOW for v in args.f)
    filters = args.filters + [v for v in args.f if v is not _FOLLOW]
    parse_filters(filters)  # a bad filter fails before any output
    eng = engine_from(args)

    def show(ev: dict) -> None:
        line = _render(args.format, EventView(ev)) if args.format else format_line(ev)
        print(line, flush=follow)

    # Take the high-water mark first so nothing appended meanwhile is lost or repeated.
    mark = eng.last_event_seq() if follow else 0
    # Like docker: following starts now unless --since asks for history too.
    if args.since or not follow:
        for ev in eng.events(since=args.since, until=args.until, filters=filters):
            if not follow or ev["seq"] <= mark:
                show(ev)
    if not follow:
        return 0
    try:
        for ev in eng.follow_events(mark, filters=filters, until=args.until):
            show(ev)
    except KeyboardInterrupt:
        pass
    return 0
