"""``berth build`` (also ``image build``, ``builder build``) and ``builder prune``.

``berth build [-t NAME:TAG]... [-f DOCKERFILE] [--build-arg K=V]... [--target STAGE]
[--no-cache] [--label K=V]... [--build-context NAME=PATH]... [--network NET] [-q]
CONTEXT|-``: output like Docker's classic builder (``Step N/M : ...``, each
RUN's output as it comes); ``-q`` prints only the image ID. A failed build
exits 1 (125 is for bad flags), like ``docker build``: a failing RUN names the
step, the command and its exit code; any other failing step its step and line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--tag", action="append", default=[], dest="tags", metavar="NAME:TAG")
    p.add_argument("-f", "--file", default="", dest="dockerfile", metavar="DOCKERFILE",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")  # fmt: skip
    p.add_argument("--build-arg", action="append", default=[], dest="build_args", metavar="K=V")
    p.add_argument("--target", default="", help="build this stage (and what it needs) only")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--label", action="append", default=[], dest="labels", metavar="K=V")
    p.add_argument("--build-context", action="append", default=[], dest="build_contexts",
                   metavar="NAME=PATH", help="an extra context: a directory or docker-image://REF")  # fmt: skip
    p.add_argument(
        "--network", default="", help="network for RUN steps (default, none, host, NAME)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("context", metavar="CONTEXT", help="a directory, or - for a tar on stdin")
    p.set_defaults(func=cmd_build)


def register(sub: Any) -> None:
    if "build" not in sub.choices:
        _add_build(sub.add_parser("build", help="Build an image from a Dockerfile"))
    if "builder" not in sub.choices:
        builder = sub.add_parser("builder", help="Manage builds")
        bsub = builder.add_subparsers(dest="builder_command")
        _add_build(bsub.add_parser("build", help="Build an image from a Dockerfile"))
        prune = bsub.add_parser("prune", help="Remove the build cache")
        prune.add_argument("-f", "--force", action="store_true")
        prune.add_argument("-a", "--all", action="store_true")
        prune.set_defaults(func=cmd_builder_prune)
        builder.set_defaults(func=lambda _a: builder.print_help() or 0)
    from engine.cli.cmd_advise import image_subparsers

    isub = image_subparsers(sub)
    if isub is not None and "build" not in isub.choices:
        _add_build(isub.add_parser("build", help="Build an image from a Dockerfile"))


class _OutputClosed(Exception):
    """Whoever read the build's output went away (``berth build . | head``)."""


def _write_stdout(data: bytes) -> None:
    out = sys.stdout.buffer
    try:
        out.write(data)
        out.flush()
    except BrokenPipeError:
        raise _OutputClosed from None


def cmd_build(args: argparse.Namespace) -> int:
    import signal

    from engine.build.options import BuildOptions, parse_pairs
    from engine.cli.main import engine_from
    from engine.errors import EngineError

    dockerfile = args.dockerfile
    if dockerfile and dockerfile != "-" and args.context != "-":
        dockerfile = os.path.abspath(dockerfile)  # Docker: -f is relative to the current dir
    opts = BuildOptions(
        context=args.context if args.context == "-" else os.path.abspath(args.context),
        dockerfile=dockerfile,
        tags=list(args.tags),
        build_args=parse_pairs(args.build_args, "--build-arg", env=dict(os.environ)),
        target=args.target,
        no_cache=args.no_cache,
        labels=parse_pairs(args.labels, "--label"),
        build_contexts=parse_pairs(args.build_contexts, "--build-context"),
        network=args.network,
    )
    if args.context == "-" and args.dockerfile == "-":
        print("Error: both the context and the Dockerfile cannot come from stdin", file=sys.stderr)
        return 125
    from engine.images.reference import parse_reference

    for t in opts.tags:
        parse_reference(t)  # a bad -t is a flag error (125), found before any step
    stream = sys.stdin.buffer if "-" in (args.context, args.dockerfile) else None
    eng = engine_from(args)

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM unwinds like Ctrl-C, so the step's container and mounts are removed.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        result = eng.build_image(opts, stream, None if args.quiet else _write_stdout)
    except EngineError as e:  # docker build exits 1 on any failed build, 125 on bad flags
        sys.stdout.flush()
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except _OutputClosed:
        # The build stopped (its step's container and mounts removed on the way out);
        # never exit 0 as if it had built and tagged the image.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        print("Error: the build's output was closed (broken pipe): build stopped", file=sys.stderr)
        return 1
    if args.quiet:
        print(result.image_id)
    for w in result.warnings:
        if not w.startswith("One or more build-args"):
            print(f"[Warning] {w}", file=sys.stderr)
    return 0


def cmd_builder_prune(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from

    n = engine_from(args).prune_build_cache()
    print(f"Removed {n} build cache entries")
    return 0
