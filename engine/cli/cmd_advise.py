"""`berth image advise [--format text|json|TEMPLATE] [--top N] [--context DIR] IMAGE|DOCKERFILE`.

Added under the `image` verb that engine/cli/cmd_images.py builds; that module
keeps no handle on its subparsers action, so we find it on the parser (as
cmd_diagnose does for `network`). A TARGET that is an existing file (or a
directory holding a Dockerfile) is read as a Dockerfile, anything else as an
image reference; --image / --dockerfile say which when that guess is wrong.
Exit status 0 with or without findings; 125 for bad input, like every command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import verb_subparsers


def image_subparsers(sub: Any) -> Any | None:
    """The ``image`` verb's subparsers action, or None when main.py did not build it."""
    return verb_subparsers(sub, "image")


def register(sub: Any) -> None:
    isub = image_subparsers(sub)
    if isub is None or "advise" in isub.choices:
        return
    p = isub.add_parser(
        "advise",
        help="show where an image's bytes are and how to slim and harden it",
        description="Size by layer, largest files and findings (full base, package caches,"
        " files deleted in a later layer, build tools, root user, secrets, ADD vs COPY) for an"
        " IMAGE or a DOCKERFILE and its build context.",
    )
    p.add_argument("target", metavar="IMAGE|DOCKERFILE")
    p.add_argument("--format", default="", help="text (default), json or a Go template")
    p.add_argument("--top", type=int, default=10, help="largest files to list (default 10)")
    p.add_argument("--context", default=None, help="build context (default: the Dockerfile's dir)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--image", dest="kind", action="store_const", const="image")
    kind.add_argument("--dockerfile", dest="kind", action="store_const", const="dockerfile")
    p.set_defaults(func=cmd_advise, kind=None)


def cmd_advise(args: argparse.Namespace) -> int:
    import json

    from engine.cli.main import engine_from
    from engine.errors import InvalidArgument
    from engine.images import advise

    if args.top < 0:
        raise InvalidArgument(f"--top must be 0 or more, not {args.top}", obj=str(args.top))
    if args.context is not None and not advise.is_dockerfile_target(args.target, args.kind):
        raise InvalidArgument("--context applies to a Dockerfile, not an image", obj=args.context)
    report = engine_from(args).advise(
        args.target, context=args.context, top=args.top, kind=args.kind
    )
    if args.format == "json":
        print(json.dumps(report, indent=2))
    elif args.format in ("", "text", "table"):
        sys.stdout.write(advise.render_text(report))
    else:  # a Go template over the report's keys, e.g. '{{.savings}}'
        from engine.cli.gotemplate import render

        print(render(args.format, report))
    return 0
