"""`berth volume create|ls|inspect|rm|prune`, with docker's flags and output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.common import confirm, pairs, print_help
from engine.cli.main import engine_from
from engine.units import human_size

DEFAULT_LS_FORMAT = "table {{.Driver}}\t{{.Name}}"
LS_HEADERS = {"Name": "VOLUME NAME"}


def register(sub: Any) -> None:
    vol = sub.add_parser("volume", help="manage volumes")
    vol.set_defaults(func=lambda args: print_help(vol))
    vsub = vol.add_subparsers(dest="volume_command", parser_class=type(vol))

    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("-d", "--driver", default="local", help="volume driver (only 'local')")
    p.add_argument("--label", action="append", default=[], help="set metadata (K=V)")
    p.add_argument("-o", "--opt", action="append", default=[], help="driver option (K=V)")
    p.add_argument("--name", dest="name_flag", help=argparse.SUPPRESS)  # docker's old spelling
    p.add_argument("name", nargs="?", help="volume name (random when omitted)")
    p.set_defaults(func=cmd_create)

    p = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter (K=V)")
    p.add_argument("--format", default="", help="Go template, 'table ...' or 'json'")
    p.set_defaults(func=cmd_ls)

    p = vsub.add_parser("inspect", help="show volume details")
    p.add_argument("-f", "--format", default="", help="Go template or 'json'")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_inspect)

    p = vsub.add_parser("rm", aliases=["remove"], help="remove volumes")
    p.add_argument("-f", "--force", action="store_true", help="ignore missing volumes")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_rm)

    p = vsub.add_parser("prune", help="remove unused volumes")
    p.add_argument("-a", "--all", action="store_true", help="named volumes too, not only anonymous")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--filter", action="append", default=[], help="label=K[=V], label!=K[=V]")
    p.set_defaults(func=cmd_prune)


def cmd_create(args: argparse.Namespace) -> int:
    from engine.errors import InvalidArgument

    if args.name and args.name_flag and args.name != args.name_flag:
        raise InvalidArgument(
            "conflicting options: either specify --name or provide positional arg, not both"
        )
    rec = engine_from(args).create_volume(
        args.name or args.name_flag or None,
        driver=args.driver,
        labels=pairs(args.label, "labels", need_value=False),
        options=pairs(args.opt, "driver options", need_value=True),
    )
    print(rec["Name"])
    return 0


def _ls_row(rec: dict[str, Any]) -> dict[str, str]:
    """docker's volume ls format context: every field a string."""
    labels = rec["Labels"] or {}
    return {
        "Availability": "N/A",
        "Driver": rec["Driver"],
        "Group": "N/A",
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Links": "N/A",
        "Mountpoint": rec["Mountpoint"],
        "Name": rec["Name"],
        "Scope": rec["Scope"],
        "Size": "N/A",
        "Status": "N/A",
    }


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.cli import gotemplate

    vols = engine_from(args).list_volumes(args.filter)
    if args.quiet:
        for rec in vols:
            print(rec["Name"])
        return 0
    fmt = args.format or DEFAULT_LS_FORMAT
    if fmt == "json":
        fmt = "{{json .}}"
    rows = [_ls_row(rec) for rec in vols]
    if gotemplate.is_table(fmt):
        sys.stdout.write(gotemplate.render_table(fmt, rows, LS_HEADERS))
    else:
        for row in rows:
            print(gotemplate.render(fmt, row))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.cli import gotemplate
    from engine.errors import EngineError

    eng = engine_from(args)
    found: list[dict[str, Any]] = []
    rc = 0
    for name in args.names:
        try:
            found.append(eng.inspect_volume(name))
        except EngineError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    if args.format and args.format != "json":
        for rec in found:
            # Go ranges over and indexes a nil map as empty; our null would not.
            data = {**rec, "Labels": rec["Labels"] or {}, "Options": rec["Options"] or {}}
            print(gotemplate.render(args.format, data))
    elif found or rc == 0:
        print(json.dumps(found, indent=4))
    return rc


def cmd_rm(args: argparse.Namespace) -> int:
    from engine.errors import EngineError

    eng = engine_from(args)
    rc = 0
    for name in args.names:
        try:
            eng.remove_volume(name, force=args.force)
            print(name)
        except EngineError as e:  # docker carries on with the other names
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force:
        what = "all local volumes" if args.all else "anonymous local volumes"
        if not confirm(f"WARNING! This will remove {what} not used by at least one container."):
            return 0
    report = engine_from(args).prune_volumes(all=args.all, filters=args.filter)
    if report["VolumesDeleted"]:
        print("Deleted Volumes:")
        for name in report["VolumesDeleted"]:
            print(name)
        print()
    print(f"Total reclaimed space: {human_size(report['SpaceReclaimed'])}")
    return 0
