"""exec, top, cp, export, diff, commit — as `berth X` and `berth container X`."""

from __future__ import annotations

import argparse
import sys

from engine.cli.main import engine_from


def cmd_exec(args) -> int:
    from engine.containers import options as o
    from engine.containers.exec import ExecFailed

    if not args.command:
        from engine.errors import InvalidArgument

        raise InvalidArgument("exec requires at least 2 arguments: CONTAINER COMMAND [ARG...]")
    env = []
    for f in args.env_file:
        env += o.parse_env_file(f)
    env += args.env
    eng = engine_from(args)
    try:
        return eng.exec_container(
            args.container,
            list(args.command),
            interactive=args.interactive,
            tty=args.tty,
            detach=args.detach,
            env=env,
            user=args.user,
            workdir=args.workdir,
            privileged=args.privileged,
        )
    except ExecFailed as e:
        # Docker's wording and codes: 126 cannot execute, 127 not found.
        print(f"Error: OCI runtime exec failed: {e}", file=sys.stderr)
        return e.exit_code


def cmd_top(args) -> int:
    res = engine_from(args).top_container(args.container, list(args.ps_args) or None)
    rows = [res["Titles"], *res["Processes"]]
    if not res["Titles"]:
        return 0
    # Docker's tabwriter: min width 20, padding 3; the command column is last.
    widths = [
        max(20, max(len(r[i]) if i < len(r) else 0 for r in rows) + 3)
        for i in range(len(res["Titles"]))
    ]
    for r in rows:
        cells = [cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r)]
        print("".join(cells).rstrip())
    return 0


def _split_cp_arg(arg: str) -> tuple[str, str]:
    """("container", "path") or ("", "local path"), as docker's splitCpArg."""
    if arg == "-" or arg.startswith("/") or arg.startswith("."):
        return "", arg
    ctr, sep, path = arg.partition(":")
    if not sep:
        return "", arg
    return ctr, path


def cmd_cp(args) -> int:
    from engine.errors import InvalidArgument

    src_ctr, src = _split_cp_arg(args.src)
    dst_ctr, dst = _split_cp_arg(args.dest)
    if src_ctr and dst_ctr:
        raise InvalidArgument("copying between containers is not supported")
    if not src_ctr and not dst_ctr:
        raise InvalidArgument("must specify at least one container source")
    if not src or not dst:
        raise InvalidArgument("filepath can not be empty")
    eng = engine_from(args)
    if src_ctr:
        if dst == "-":
            eng.copy_from_container(src_ctr, src, sys.stdout.buffer, follow_link=args.follow_link)
            sys.stdout.buffer.flush()
        else:
            eng.copy_from_container_path(src_ctr, src, dst, follow_link=args.follow_link)
        return 0
    if src == "-":
        eng.copy_to_container(dst_ctr, dst, sys.stdin.buffer, archive=args.archive)
    else:
        eng.copy_to_container_path(src, dst_ctr, dst, archive=args.archive)
    return 0


def cmd_export(args) -> int:
    from engine.errors import InvalidArgument

    eng = engine_from(args)
    if args.output:
        import os

        tmp = f"{args.output}.berth-tmp"
        try:
            with open(tmp, "wb") as f:
                eng.export_container(args.container, f)
            os.replace(tmp, args.output)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return 0
    if sys.stdout.isatty():
        raise InvalidArgument(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
        )
    eng.export_container(args.container, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def cmd_diff(args) -> int:
    from engine.containers.diff import KIND_LETTER

    for ch in engine_from(args).diff_container(args.container):
        print(f"{KIND_LETTER[ch['Kind']]} {ch['Path']}")
    return 0


def cmd_commit(args) -> int:
    image_id = engine_from(args).commit_container(
        args.container,
        args.repository or "",
        message=args.message,
        author=args.author,
        changes=args.change,
        pause=args.pause,
    )
    print(image_id)
    return 0


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _register(sub) -> None:
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-u", "--user", default="")
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("top", help="display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("cp", help="copy files between a container and the host")
    p.add_argument("-a", "--archive", action="store_true", help="keep uid/gid")
    p.add_argument("-L", "--follow-link", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("src")
    p.add_argument("dest")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("export", help="export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", default="")
    p.add_argument("container")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("diff", help="changes to files in a container's filesystem")
    p.add_argument("container")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("commit", help="create a new image from a container's changes")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message", default="")
    # Docker: -p alone, or --pause=false (a bare value after -p would eat CONTAINER).
    p.add_argument("-p", dest="pause", action="store_true", default=True)
    p.add_argument("--pause", dest="pause", type=_bool, nargs="?", const=True)
    p.add_argument("container")
    p.add_argument("repository", nargs="?")
    p.set_defaults(func=cmd_commit)


def register(sub) -> None:
    _register(sub)
    ctr = sub.choices.get("container")
    if ctr is not None and hasattr(ctr, "_berth_sub"):
        _register(ctr._berth_sub)
