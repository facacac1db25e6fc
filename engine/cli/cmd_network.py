"""`berth network ls|inspect|create|rm|prune|connect|disconnect`, docker's flags and output."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from engine.cli.common import confirm, pairs, print_help
from engine.cli.main import engine_from

DEFAULT_LS_FORMAT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
LS_HEADERS = {"ID": "NETWORK ID"}


def register(sub: Any) -> None:
    net = sub.add_parser("network", help="manage networks")
    net.set_defaults(func=lambda args: print_help(net))
    nsub = net.add_subparsers(dest="network_command", parser_class=type(net))

    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter (K=V)")
    p.add_argument("--format", default="", help="Go template, 'table ...' or 'json'")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.set_defaults(func=cmd_ls)

    p = nsub.add_parser("inspect", help="show network details")
    p.add_argument("-f", "--format", default="", help="Go template or 'json'")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_inspect)

    p = nsub.add_parser("create", help="create a network")
    p.add_argument("-d", "--driver", default="bridge", help="bridge, macvlan or ipvlan")
    p.add_argument("--subnet", help="subnet in CIDR format (e.g. 10.10.0.0/16)")
    p.add_argument("--gateway", help="gateway address inside the subnet")
    p.add_argument("--ip-range", dest="ip_range", help="allocate container IPs from this range")
    p.add_argument("--internal", action="store_true", help="no route out of the network")
    p.add_argument("--label", action="append", default=[], help="set metadata (K=V)")
    p.add_argument("-o", "--opt", action="append", default=[], help="driver option (K=V)")
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(func=cmd_create)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_rm)

    p = nsub.add_parser("prune", help="remove unused networks")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--filter", action="append", default=[], help="until=, label=K[=V]")
    p.set_defaults(func=cmd_prune)

    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--ip", help="IPv4 address for the container")
    p.add_argument("--alias", action="append", default=[], help="network-scoped alias")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="force the disconnection")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)


def cmd_create(args: argparse.Namespace) -> int:
    rec = engine_from(args).create_network(
        args.name,
        driver=args.driver,
        subnet=args.subnet,
        gateway=args.gateway,
        ip_range=args.ip_range,
        internal=args.internal,
        labels=pairs(args.label, "labels", need_value=False),
        options=pairs(args.opt, "driver options", need_value=True),
    )
    print(rec["Id"])
    return 0


def _go_time(created: str) -> str:
    # docker's CreatedAt: Go's time.Time String(): "2006-01-02 15:04:05.999999 -0700 MST".
    dt = datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone()
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + dt.strftime(" %z %Z")


def _ls_row(rec: dict[str, Any], no_trunc: bool) -> dict[str, str]:
    """docker's network ls format context: every field a string."""
    return {
        "ID": rec["Id"] if no_trunc else rec["Id"][:12],
        "Name": rec["Name"],
        "Driver": rec["Driver"],
        "Scope": rec["Scope"],
        "IPv6": "false",
        "Internal": "true" if rec["Internal"] else "false",
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(rec["Labels"].items())),
        "CreatedAt": _go_time(rec["Created"]),
    }


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.cli import gotemplate

    nets = engine_from(args).list_networks(args.filter)
    if args.quiet:
        for rec in nets:
            print(rec["Id"] if args.no_trunc else rec["Id"][:12])
        return 0
    fmt = args.format or DEFAULT_LS_FORMAT
    if fmt == "json":
        fmt = "{{json .}}"
    rows = [_ls_row(rec, args.no_trunc) for rec in nets]
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
            found.append(eng.inspect_network(name))
        except EngineError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    if args.format and args.format != "json":
        for rec in found:
            print(gotemplate.render(args.format, rec))
    elif found or rc == 0:
        print(json.dumps(found, indent=4))
    return rc


def cmd_rm(args: argparse.Namespace) -> int:
    from engine.errors import EngineError

    eng = engine_from(args)
    rc = 0
    for name in args.names:
        try:
            eng.remove_network(name)
            print(name)
        except EngineError as e:  # docker carries on with the other networks
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force:
        if not confirm(
            "WARNING! This will remove all custom networks not used by at least one container."
        ):
            return 0
    removed = engine_from(args).prune_networks(filters=args.filter)
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
        print()
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    engine_from(args).connect_network(args.network, args.container, ip=args.ip, aliases=args.alias)
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    engine_from(args).disconnect_network(args.network, args.container, force=args.force)
    return 0
