"""Image commands: ``images``, ``image ls|bootstrap|import|load|save|tag|rm|inspect|history|prune``
and the top-level ``import``, ``load``, ``save``, ``tag``, ``rmi``, ``history``.

Output and exit codes follow the docker CLI: tables aligned like its tabwriter,
``--format`` templates over the same field names, ``rmi``/``inspect`` going on
past a failing argument and exiting 1 at the end. Heavy imports stay inside the
handlers so that ``berth --version`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from engine.cli.common import confirm, print_help
from engine.cli.main import engine_from
from engine.units import human_size

IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_TABLE_DIGESTS = (
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
)
IMAGES_HEADERS = {
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE",
}
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
}
HISTORY_CREATED_BY_WIDTH = 45  # docker truncates CREATED BY to this many characters
PRUNE_WARNING = "WARNING! This will remove all dangling images."
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all images without at least one container associated to them."
)
FALSE_WORDS = ("false", "False", "FALSE", "0", "f", "F")


# -- registration -------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    _add_ls(sub.add_parser("images", help="List images"))
    _add_import(sub.add_parser("import", help="Import a rootfs tarball as an image"))
    _add_load(sub.add_parser("load", help="Load images from a tar archive or stdin"))
    _add_save(sub.add_parser("save", help="Save images to a tar archive (stdout by default)"))
    _add_tag(sub.add_parser("tag", help="Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"))
    _add_rm(sub.add_parser("rmi", help="Remove one or more images"))
    _add_history(sub.add_parser("history", help="Show the history of an image"))

    image = sub.add_parser("image", help="Manage images")
    image.set_defaults(func=lambda _args: print_help(image))
    isub = image.add_subparsers(dest="image_command")
    _add_ls(isub.add_parser("ls", aliases=["list"], help="List images"))
    _add_bootstrap(
        isub.add_parser("bootstrap", help="Build a base image from the host (busybox, debian)")
    )
    _add_import(isub.add_parser("import", help="Import a rootfs tarball as an image"))
    _add_load(isub.add_parser("load", help="Load images from a tar archive or stdin"))
    _add_save(isub.add_parser("save", help="Save images to a tar archive"))
    _add_tag(isub.add_parser("tag", help="Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"))
    _add_rm(isub.add_parser("rm", aliases=["remove", "rmi"], help="Remove one or more images"))
    _add_inspect(isub.add_parser("inspect", help="Display detailed information on images"))
    _add_history(isub.add_parser("history", help="Show the history of an image"))
    _add_prune(isub.add_parser("prune", help="Remove unused images"))


def _add_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="show all images")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--format", default="", help="table, json or a Go template")
    p.add_argument("--no-trunc", dest="no_trunc", action="store_true")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.set_defaults(func=cmd_images)


def _add_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("busybox", "debian"))
    p.add_argument("reference", nargs="?", metavar="REF")
    p.set_defaults(func=cmd_bootstrap)


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.set_defaults(func=cmd_import)


def _add_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", default="", help="read from a tar archive file")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p.set_defaults(func=cmd_load)


def _add_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", default="", help="write to a file instead of stdout")
    p.set_defaults(func=cmd_save)


def _add_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)


def _add_rm(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="force removal")
    p.add_argument("--no-prune", dest="no_prune", action="store_true", help="accepted, no effect")
    p.set_defaults(func=cmd_rmi)


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", default="", help="Go template or json")
    p.set_defaults(func=cmd_inspect)


def _add_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", dest="no_trunc", action="store_true")
    p.add_argument("--format", default="", help="table, json or a Go template")
    # docker's boolean flags take "-H=false"; argparse cannot give a flag an
    # optional value without it swallowing IMAGE, so the false forms are
    # registered as option strings of their own.
    p.add_argument("-H", "--human", dest="human", action="store_true", default=True)
    p.add_argument(
        *[f"{o}={w}" for o in ("-H", "--human") for w in FALSE_WORDS],
        dest="human",
        action="store_false",
        help=argparse.SUPPRESS,
    )
    p.set_defaults(func=cmd_history)


def _add_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_prune)


# -- helpers ------------------------------------------------------------------------------


def _print_rows(fmt: str, rows: list[Mapping[str, Any]], headers: Mapping[str, str]) -> None:
    from engine.cli.gotemplate import is_table, render, render_table

    if is_table(fmt):
        sys.stdout.write(render_table(fmt, rows, headers))
    else:
        sys.stdout.write("".join(render(fmt, row) + "\n" for row in rows))


def _table_format(fmt: str, default: str) -> str:
    """docker's format keywords: "" and "table" mean the default table, "json" one JSON per row."""
    if fmt in ("", "table"):
        return default
    if fmt == "json":
        return "{{json .}}"
    return fmt


def go_json_indent(value: Any) -> str:
    """``json.MarshalIndent(v, "", "    ")`` as docker's inspect prints it: Go escapes
    ``<``, ``>`` and ``&`` (these only occur inside strings, so replacing is safe)."""
    import json

    text = json.dumps(value, indent=4, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def ellipsis(text: str, width: int) -> str:
    """docker's ``Ellipsis``: cut to ``width`` characters, the last one "…"."""
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[BinaryIO]:
    from engine.errors import InvalidArgument, NotFound

    try:
        f = open(path, "rb")  # not `with open`: its errors need docker's wording
    except FileNotFoundError:
        raise NotFound(f"open {path}: no such file or directory", obj=path) from None
    except OSError as e:
        raise InvalidArgument(f"open {path}: {e.strerror}", obj=path, errno=e.errno) from None
    with f:
        yield f


def _stdin_binary() -> BinaryIO:
    return getattr(sys.stdin, "buffer", sys.stdin)  # type: ignore[return-value]


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


# -- handlers -----------------------------------------------------------------------------


def cmd_images(args: argparse.Namespace) -> int:
    from engine.api_images import docker_row

    filters = list(args.filter)
    if args.reference:
        filters.append(f"reference={args.reference}")
    rows = engine_from(args).list_images(all=args.all, filters=filters, digests=args.digests)
    if args.no_trunc:
        rows = [{**r, "ID": r["FullID"]} for r in rows]
    fmt = args.format
    if fmt in ("", "table"):
        # docker: -q replaces only the default table; an explicit template wins.
        fmt = "{{.ID}}" if args.quiet else IMAGES_TABLE_DIGESTS if args.digests else IMAGES_TABLE
    _print_rows(_table_format(fmt, IMAGES_TABLE), [docker_row(r) for r in rows], IMAGES_HEADERS)
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    print(engine_from(args).bootstrap_image(args.kind, args.reference)["Id"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from engine.errors import Unsupported

    if args.file.startswith(("http://", "https://")):
        raise Unsupported(
            f"importing from a URL is not supported (no outside network): download {args.file} "
            "and import the file",
            obj=args.file,
        )
    eng = engine_from(args)
    if args.file == "-":
        rec = eng.import_image(_stdin_binary(), args.reference, args.change, args.message)
    else:
        with _open_input(args.file) as f:
            rec = eng.import_image(f, args.reference, args.change, args.message)
    print(rec["Id"])
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from engine.errors import InvalidArgument

    eng = engine_from(args)
    if args.input:
        with _open_input(args.input) as f:
            names = eng.load_images(f)
    else:
        if _stdin_is_tty():
            raise InvalidArgument("requested load from stdin, but stdin is empty")
        names = eng.load_images(_stdin_binary())
    # -q only silences progress, which berth does not print; docker still lists the images.
    for name in names:
        print(f"Loaded image ID: {name}" if name.startswith("sha256:") else f"Loaded image: {name}")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    import tempfile

    from engine.errors import InvalidArgument

    if not args.output:
        if sys.stdout.isatty():
            raise InvalidArgument(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect"
            )
        sys.stdout.flush()
        out = sys.stdout.buffer
        engine_from(args).save_images(args.images, out)
        out.flush()
        return 0
    # Write beside the target and rename, so a failed save leaves no half archive.
    target = Path(args.output)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as e:
        raise InvalidArgument(
            f"failed to save image: invalid output path: {e.strerror}: {args.output}",
            obj=args.output,
            errno=e.errno,
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            engine_from(args).save_images(args.images, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; docker's -o file is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    engine_from(args).tag_image(args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from engine.errors import EngineError

    eng = engine_from(args)
    errors = []
    for name in args.images:
        try:
            lines = eng.remove_image(name, force=args.force)
        except EngineError as e:
            errors.append(str(e))
            continue
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    # Like docker: every argument is tried, the errors come at the end, exit 1.
    for err in errors:
        print(f"Error: {err}", file=sys.stderr)
    return 1 if errors else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.cli.gotemplate import render
    from engine.errors import EngineError

    eng = engine_from(args)
    found, errors = [], []
    for name in args.images:
        try:
            found.append(eng.inspect_image(name))
        except EngineError as e:
            errors.append(str(e))
    if args.format:
        fmt = "{{json .}}" if args.format == "json" else args.format
        sys.stdout.write("".join(render(fmt, item) + "\n" for item in found))
    else:
        # docker prints the array (possibly "[]") even when some names failed.
        print(go_json_indent(found))
    for err in errors:
        print(f"Error: {err}", file=sys.stderr)
    return 1 if errors else 0


def cmd_history(args: argparse.Namespace) -> int:
    from engine.api_images import HISTORY_ROW_KEYS, docker_row

    rows = []
    for row in engine_from(args).image_history(args.image):
        row = dict(row)
        created_by = row["CreatedBy"].replace("\t", " ")
        if not args.no_trunc:
            created_by = ellipsis(created_by, HISTORY_CREATED_BY_WIDTH)
            if row["ID"].startswith("sha256:"):
                row["ID"] = row["ID"][7:19]
        row["CreatedBy"] = created_by
        if not args.human:
            row["CreatedSince"] = row["CreatedAt"]
            row["Size"] = str(row["SizeBytes"])
        rows.append(docker_row(row, HISTORY_ROW_KEYS))
    fmt = args.format
    if fmt in ("", "table") and args.quiet:
        fmt = "{{.ID}}"
    _print_rows(_table_format(fmt, HISTORY_TABLE), rows, HISTORY_HEADERS)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force and not confirm(PRUNE_ALL_WARNING if args.all else PRUNE_WARNING):
        return 0
    report = engine_from(args).prune_images(all=args.all)
    if report["Lines"]:
        print("Deleted Images:\n" + "".join(line + "\n" for line in report["Lines"]))
    print(f"Total reclaimed space: {human_size(report['SpaceReclaimed'])}")
    return 0
