"""`berth network diagnose [--json] [CONTAINER [TARGET]]`: the network doctor.

Added under the `network` verb that engine/cli/cmd_network.py builds (found with
engine.cli.common.verb_subparsers).
Exit status: 0 when nothing failed, 1 otherwise (warnings do not count), 125
for bad arguments or an engine error, like every other command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.common import verb_subparsers


def register(sub: Any) -> None:
    nsub = verb_subparsers(sub, "network")
    if nsub is None or "diagnose" in nsub.choices:
        return
    p = nsub.add_parser(
        "diagnose",
        help="find out why a container's network does not work",
        description="Check the host's networking, CONTAINER's interfaces and routes, and"
        " whether CONTAINER reaches TARGET (a container, an IP, or host for the engine's host; optionally :PORT).",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("container", nargs="?", metavar="CONTAINER")
    p.add_argument("target", nargs="?", metavar="TARGET")
    p.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from
    from engine.network.doctor import diagnose, render_text

    report = diagnose(engine_from(args), args.container, args.target)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(render_text(report))
    return 0 if report.ok else 1
