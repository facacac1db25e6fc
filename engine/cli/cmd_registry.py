"""Registry verbs: ``pull``, ``push``, ``login``, ``logout``, and ``image pull|push``.

Progress is printed as ``docker pull`` prints it: on a terminal one line per
layer, redrawn in place with a progress bar; otherwise one line per status
change ("Pulling fs layer", "Download complete", "Pull complete"...), no bars.
The last line of a pull is the image's full name, as Docker's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from engine.cli.cmd_advise import image_subparsers


def register(sub: Any) -> None:
    for verb, adder, text in (
        ("pull", _add_pull, "Download an image from a registry"),
        ("push", _add_push, "Upload an image to a registry"),
    ):
        if verb not in sub.choices:
            adder(sub.add_parser(verb, help=text))
        isub = image_subparsers(sub)
        if isub is not None and verb not in isub.choices:
            adder(isub.add_parser(verb, help=text))
    if "login" not in sub.choices:
        _add_login(sub.add_parser("login", help="Log in to a registry"))
    if "logout" not in sub.choices:
        _add_logout(sub.add_parser("logout", help="Log out from a registry"))


def _add_authfile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--authfile",
        metavar="PATH",
        help="credentials file (default $BERTH_AUTH_FILE or <root>/auth.json)",
    )


def _add_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a", "--all-tags", action="store_true", help="pull every tagged image in the repository"
    )
    p.add_argument("--platform", help="os/arch[/variant] to pull from a multi-platform image")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("--disable-content-trust", action="store_true", help=argparse.SUPPRESS)
    _add_authfile(p)
    p.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=cmd_pull)


def _add_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all-tags", action="store_true", help="push every tag of the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument(
        "--compression-format",
        choices=("gzip", "none"),
        default="gzip",
        help="how to compress layers stored uncompressed (default gzip)",
    )
    p.add_argument("--disable-content-trust", action="store_true", help=argparse.SUPPRESS)
    _add_authfile(p)
    p.add_argument("image", metavar="NAME[:TAG]")
    p.set_defaults(func=cmd_push)


def _add_login(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default="")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    _add_authfile(p)
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_login)


def _add_logout(p: argparse.ArgumentParser) -> None:
    _add_authfile(p)
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_logout)


# -- progress ---------------------------------------------------------------------------------


class ProgressPrinter:
    """Docker's jsonmessage display: per-ID lines redrawn in place on a
    terminal; plain status lines (without byte progress) otherwise."""

    def __init__(self, out: TextIO, tty: bool | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.lines: list[str] = []  # IDs in the order their lines were printed

    def __call__(self, msg: dict) -> None:
        status = msg.get("status", "")
        ident = msg.get("id", "")
        if not self.tty:
            if "progress" in msg:
                return  # byte counts: only on terminals
            self.out.write(f"{ident}: {status}\n" if ident else f"{status}\n")
            self.out.flush()
            return
        text = f"{ident}: {status}" if ident else status
        if msg.get("progress"):
            text += " " + msg["progress"]
        if not ident or "progressDetail" not in msg:
            self.out.write(text + "\n")
            if ident:
                self.lines = []  # a header line ("latest: Pulling from ...") starts a new block
            self.out.flush()
            return
        if ident in self.lines:
            up = len(self.lines) - self.lines.index(ident)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\n")
            if up > 1:
                self.out.write(f"\x1b[{up - 1}B")
        else:
            self.lines.append(ident)
            self.out.write(text + "\n")
        self.out.flush()


# -- handlers ---------------------------------------------------------------------------------


def cmd_pull(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from
    from engine.images import reference as refs

    eng = engine_from(args)
    parsed = refs.parse_reference(args.image, default_tag=False)
    printer = None if args.quiet else ProgressPrinter(sys.stdout)
    if not args.quiet and not parsed.tagged_or_digested() and not args.all_tags:
        print("Using default tag: latest")
    result = eng.pull_image(
        args.image,
        progress=printer,
        platform=args.platform,
        all_tags=args.all_tags,
        auth_file=args.authfile,
    )
    results = result.get("Tags", [result])
    if args.all_tags and not args.quiet:
        print(parsed.name)
        return 0
    for r in results:
        print(r["Name"])
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from
    from engine.images import reference as refs

    eng = engine_from(args)
    parsed = refs.parse_reference(args.image, default_tag=False)
    if not args.quiet and not args.all_tags and not parsed.tagged_or_digested():
        print("Using default tag: latest")  # as docker push
    printer = None if args.quiet else ProgressPrinter(sys.stdout)
    result = eng.push_image(
        args.image,
        progress=printer,
        all_tags=args.all_tags,
        compression=args.compression_format,
        auth_file=args.authfile,
    )
    if args.quiet:
        for r in result.get("Tags", [result]):
            print(r["Reference"])
    return 0


def _read_password_stdin() -> str:
    data = sys.stdin.read()
    return data.rstrip("\r\n").strip("\n")


def cmd_login(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from
    from engine.errors import InvalidArgument

    username, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        if not username:
            raise InvalidArgument("Must provide --username with --password-stdin")
        password = _read_password_stdin()
    elif password:
        print(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            file=sys.stderr,
        )
    if not username or not password:
        if not sys.stdin.isatty():
            raise InvalidArgument("Cannot perform an interactive login from a non TTY device")
        if not username:
            username = input("Username: ").strip()
        if not password:
            import getpass

            password = getpass.getpass("Password: ")
    result = engine_from(args).login(args.server, username, password, auth_file=args.authfile)
    print(result["Status"])
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from engine.cli.main import engine_from

    result = engine_from(args).logout(args.server, auth_file=args.authfile)
    shown = args.server or result["ServerAddress"]
    if result["Removed"]:
        print(f"Removing login credentials for {shown}")
    else:
        print(f"Not logged in to {shown}")
    return 0
