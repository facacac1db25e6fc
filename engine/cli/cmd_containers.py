"""Container commands: run, create, start, stop, kill, restart, pause, unpause,
rm, ps, inspect, logs, wait, rename, exec, and `container cleanup` (conmon's
exit command)."""

from __future__ import annotations

import json
import signal
import sys

from engine.cli.main import engine_from

PS_HEADERS = {"ID": "CONTAINER ID", "RunningFor": "CREATED"}
PS_TABLE = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)


def _add_create_flags(p) -> None:
    a = p.add_argument
    a("--help", action="help")
    a("-d", "--detach", action="store_true")
    a("--name", default="")
    a("-i", "--interactive", action="store_true")
    a("-t", "--tty", action="store_true")
    a("--rm", action="store_true")
    a("-e", "--env", action="append", default=[])
    a("--env-file", action="append", default=[])
    a("-w", "--workdir", default="")
    a("-u", "--user", default="")
    a("--entrypoint", default=None)
    a("-h", "--hostname", default="")
    a("-v", "--volume", action="append", default=[])
    a("--tmpfs", action="append", default=[])
    a("-m", "--memory", default=None)
    a("--memory-swap", default=None)
    a("--cpus", default=None)
    a("--pids-limit", type=int, default=None)
    a("--restart", default="no")
    a("-l", "--label", action="append", default=[])
    a("--read-only", action="store_true")
    a("--cap-add", action="append", default=[])
    a("--cap-drop", action="append", default=[])
    a("--privileged", action="store_true")
    a("--security-opt", action="append", default=[])
    a("--ulimit", action="append", default=[])
    a("--shm-size", default=None)
    a("--stop-signal", default="")
    a("--stop-timeout", type=int, default=None)
    a("--init", action="store_true")
    a("--health-cmd", default=None)
    a("--health-interval", default=None)
    a("--health-timeout", default=None)
    a("--health-retries", type=int, default=None)
    a("--health-start-period", default=None)
    a("--no-healthcheck", action="store_true")
    a("--log-opt", action="append", default=[])
    a("--network", "--net", default="")
    a("--ip", default="")
    a("-p", "--publish", action="append", default=[])
    a("-P", "--publish-all", action="store_true")
    a("--network-alias", "--net-alias", action="append", default=[])
    a("--dns", action="append", default=[], help="a DNS server for the container")
    a("--dns-search", action="append", default=[], help="a DNS search domain")
    a("--dns-option", "--dns-opt", action="append", default=[], help="a resolv.conf option")
    a("--pid", default="")
    a("--ipc", default="")
    a("--runtime", dest="ctr_runtime", default="")
    a("image")
    a("command", nargs="...")


def _options(args):
    from engine.containers import options as o
    from engine.errors import InvalidArgument

    env = []
    for f in args.env_file:
        env += o.parse_env_file(f)
    env += args.env
    labels = {}
    for lb in args.label:
        k, _, v = lb.partition("=")
        labels[k] = v
    health = None
    if args.health_cmd is not None:
        health = o.HealthConfig(
            test=["CMD-SHELL", args.health_cmd],
            interval=o.parse_duration(args.health_interval) if args.health_interval else 30.0,
            timeout=o.parse_duration(args.health_timeout) if args.health_timeout else 30.0,
            retries=args.health_retries if args.health_retries is not None else 3,
            start_period=o.parse_duration(args.health_start_period)
            if args.health_start_period
            else 0.0,
        )
    log_max_size, log_max_file = 10 * 1024 * 1024, 1
    for lo in args.log_opt:
        k, _, v = lo.partition("=")
        if k == "max-size":
            log_max_size = o.parse_size(v, "log max-size")
        elif k == "max-file":
            try:
                log_max_file = int(v)
            except ValueError:
                raise InvalidArgument(f"invalid --log-opt max-file {v!r}") from None
            if log_max_file < 1:
                raise InvalidArgument("invalid --log-opt max-file: it cannot be less than 1")
        else:
            raise InvalidArgument(f"unknown log opt {k!r}: supported are max-size and max-file")
    mem = o.parse_size(args.memory, "memory") if args.memory else None
    if mem is not None and mem < 6 * 1024 * 1024:
        raise InvalidArgument("minimum memory limit allowed is 6MB")
    swap = None
    if args.memory_swap:
        swap = -1 if args.memory_swap == "-1" else o.parse_size(args.memory_swap, "memory-swap")
    if swap not in (None, -1) and mem is None:
        raise InvalidArgument(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if swap not in (None, -1) and mem is not None and swap < mem:
        raise InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    entry = None
    if args.entrypoint is not None:
        entry = [args.entrypoint] if args.entrypoint else []
    return o.CreateOptions(
        image=args.image,
        command=list(args.command) or None,
        name=args.name,
        entrypoint=entry,
        env=env,
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        tty=args.tty,
        interactive=args.interactive,
        mounts=[o.parse_volume(v) for v in args.volume],
        tmpfs=args.tmpfs,
        labels=labels,
        memory=mem,
        memory_swap=swap,
        cpus=o.parse_cpus(args.cpus) if args.cpus else None,
        pids_limit=args.pids_limit,
        restart=o.parse_restart(args.restart),
        auto_remove=args.rm,
        read_only=args.read_only,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=args.security_opt,
        ulimits=[o.parse_ulimit(u) for u in args.ulimit],
        shm_size=o.parse_size(args.shm_size, "shm-size") if args.shm_size else None,
        stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout,
        init=args.init,
        health=health,
        no_healthcheck=args.no_healthcheck,
        log_max_size=log_max_size,
        log_max_file=log_max_file,
        network=args.network,
        ip=args.ip,
        publish=_publish(args.publish),
        publish_all=args.publish_all,
        network_aliases=args.network_alias,
        dns=o.parse_dns(args.dns),
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        pid_mode=args.pid,
        ipc_mode=args.ipc,
        runtime=args.ctr_runtime,
    )


def _publish(specs: list[str]) -> list[dict]:
    if not specs:
        return []
    from engine.network import ports

    return [b.to_dict() for spec in specs for b in ports.parse_publish(spec)]


def _validate_before_create(args) -> None:
    from engine.containers.options import parse_signal
    from engine.errors import InvalidArgument

    if args.rm and args.restart not in ("no", ""):
        raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")
    if args.stop_signal:
        parse_signal(args.stop_signal)
    if (args.publish or args.publish_all) and (
        args.network == "host" or args.network == "none" or args.network.startswith("container:")
    ):
        raise InvalidArgument(
            f"conflicting options: port publishing and the {args.network.split(':')[0]} network mode"
        )


def cmd_create(args) -> int:
    _validate_before_create(args)
    eng = engine_from(args)
    c = eng.create_container(_options(args))
    print(c.id)
    return 0


def _attach_and_wait(
    eng, c, *, stdin: bool, tty: bool, start: bool, detach_keys: bytes = b"\x10\x11"
) -> int:
    """Attach our stdio to the container (connecting before `runtime start` so
    no output is lost), relay until it closes, then return its exit code."""
    import termios
    import tty as ttymod

    from engine.containers import attach, lifecycle
    from engine.containers.records import Paths

    state = {}
    waiter = Paths(eng.config, c.id).exit_file.with_suffix(".waiter")
    if c.opts.auto_remove:
        # Tells the exit handler to keep the exit file for us when it removes the container.
        waiter.parent.mkdir(parents=True, exist_ok=True)
        waiter.touch()

    def hook(bundle):
        s = attach.connect(bundle)
        state["bundle"] = bundle
        return s

    sock = eng.start_container(c.id, attach=hook) if start else None
    if sock is None:
        p = Paths(eng.config, c.id)
        sock = attach.connect(p.bundle)
        state["bundle"] = p.bundle
    in_fd = 0 if stdin else None
    old = None
    if tty and attach.is_tty(0):
        size = attach.terminal_size(0)
        if size:
            attach.resize(state["bundle"], *size)
        old = termios.tcgetattr(0)
        ttymod.setraw(0)
    restore = {} if tty else _proxy_signals(eng, c.id)
    try:
        attach.relay(sock, stdin=in_fd, tty=tty, detach_keys=detach_keys)
    except attach.Detached:
        if old:
            termios.tcsetattr(0, termios.TCSADRAIN, old)
            old = None
        print("\nread escape sequence", file=sys.stderr)
        return 0
    finally:
        if old:
            termios.tcsetattr(0, termios.TCSADRAIN, old)
        sock.close()
        lifecycle.join_monitor_moves()
        for sig, handler in restore.items():
            signal.signal(sig, handler)
    if not c.opts.auto_remove:
        return int(eng.wait_container(c.id))
    p = Paths(eng.config, c.id)
    code = lifecycle.read_exit_code(p, wait=10.0)
    # --rm returns only once everything is gone (the exit handler may be doing it too).
    try:
        eng.remove_container(c.id, force=True, volumes=True)
    except Exception:
        pass
    for f in (p.exit_file, waiter):
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    return 125 if code is None else int(code)


def _proxy_signals(eng, cid: str) -> dict:
    """Forward the signals a user sends the CLI to the container (docker's --sig-proxy)."""
    from engine.errors import EngineError

    def forward(sig, _frame):
        try:
            eng.kill_container(cid, str(sig))
        except EngineError:
            pass

    old = {}
    for sig in (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        old[sig] = signal.signal(sig, forward)
    return old


def _exit_status(code: int) -> int:
    return code


def cmd_run(args) -> int:
    _validate_before_create(args)
    eng = engine_from(args)
    opts = _options(args)
    from engine.errors import EngineError

    c = eng.create_container(opts)
    if args.detach:
        try:
            eng.start_container(c.id)
        except EngineError as e:
            if opts.auto_remove:
                eng.remove_container(c.id, force=True)
            print(f"Error: {e}", file=sys.stderr)
            return _start_error_code(e)
        print(c.id)
        return 0
    try:
        code = _attach_and_wait(eng, c, stdin=args.interactive, tty=args.tty, start=True)
    except EngineError as e:
        if opts.auto_remove:
            try:
                eng.remove_container(c.id, force=True)
            except EngineError:
                pass
        print(f"Error: {e}", file=sys.stderr)
        return _start_error_code(e)
    return code


def _start_error_code(e) -> int:
    """Docker's codes: 126 not executable, 127 not found. Only the runtime's own
    words for exec failures map to them; anything else is Berth's error: 125."""
    low = str(e).lower()
    if "create failed" in low:
        if "executable file not found" in low or "no such file or directory" in low:
            return 127
        if any(
            w in low for w in ("permission denied", "is a directory", "operation not permitted")
        ):
            return 126
    return 125


def cmd_attach(args) -> int:
    from engine.errors import InvalidState

    eng = engine_from(args)
    c = eng.get_container(args.container)
    if c.state != "running":
        raise InvalidState(f"You cannot attach to a stopped container, start it first: {c.name}")
    keys = _parse_detach_keys(args.detach_keys)
    return _attach_and_wait(eng, c, stdin=not args.no_stdin and c.opts.interactive, tty=c.opts.tty,
                            start=False, detach_keys=keys)  # fmt: skip


def _parse_detach_keys(text: str) -> bytes:
    """Docker's --detach-keys syntax: "ctrl-p,ctrl-q", "a", "ctrl-@"."""
    from engine.errors import InvalidArgument

    out = b""
    for part in filter(None, text.split(",")):
        if part.startswith("ctrl-") and len(part) == 6:
            ch = part[5].lower()
            if ch == "@":
                out += b"\x00"
            elif "a" <= ch <= "z" or ch in "[\\]^_":
                out += bytes([ord(ch.upper()) & 0x1F])
            else:
                raise InvalidArgument(f"invalid detach keys {text!r}")
        elif len(part) == 1:
            out += part.encode()
        else:
            raise InvalidArgument(f"invalid detach keys {text!r}: use e.g. ctrl-p,ctrl-q")
    return out


def cmd_start(args) -> int:
    eng = engine_from(args)
    rc = 0
    for ref in args.containers:
        from engine.errors import EngineError

        try:
            if args.attach:
                c = eng.get_container(ref)
                return _attach_and_wait(eng, c, stdin=args.interactive, tty=c.opts.tty, start=True)
            eng.start_container(ref)
            print(ref)
        except EngineError as e:
            print(f"Error response from daemon: {e}", file=sys.stderr)
            rc = 1
    return rc


def _each(args, fn, label=None) -> int:
    from engine.errors import EngineError

    rc = 0
    for ref in args.containers:
        try:
            fn(ref)
            print(ref if label is None else label(ref))
        except EngineError as e:
            print(f"Error response from daemon: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_stop(args) -> int:
    eng = engine_from(args)
    return _each(args, lambda r: eng.stop_container(r, args.time))


def cmd_restart(args) -> int:
    eng = engine_from(args)
    return _each(args, lambda r: eng.restart_container(r, args.time))


def cmd_kill(args) -> int:
    eng = engine_from(args)
    return _each(args, lambda r: eng.kill_container(r, args.signal))


def cmd_pause(args) -> int:
    eng = engine_from(args)
    return _each(args, eng.pause_container)


def cmd_unpause(args) -> int:
    eng = engine_from(args)
    return _each(args, eng.unpause_container)


def cmd_rm(args) -> int:
    eng = engine_from(args)
    return _each(args, lambda r: eng.remove_container(r, force=args.force, volumes=args.volumes))


def cmd_wait(args) -> int:
    eng = engine_from(args)
    return _each(args, lambda r: None, label=lambda r: eng.wait_container(r))


def cmd_port(args) -> int:
    from engine.network import ports

    eng = engine_from(args)
    c = eng.get_container(args.container)
    res = (
        [ports.Reserved.from_dict(d) for d in c.extra.get("ports") or []]
        if c.state == "running"
        else []
    )
    for line in ports.port_lines(res, args.private, c.name):
        print(line)
    return 0


def cmd_rename(args) -> int:
    engine_from(args).rename_container(args.old, args.new)
    return 0


def cmd_ps(args) -> int:
    from engine.cli import gotemplate

    eng = engine_from(args)
    rows = eng.list_containers(
        all=args.all or args.last is not None or args.latest, filters=args.filter
    )
    if args.last is not None:
        rows = rows[: args.last]
    if args.latest:
        rows = rows[:1]
    if args.quiet:
        for r in rows:
            print(r["ID"] if not args.no_trunc else eng.get_container(r["ID"]).id)
        return 0
    fmt = args.format or PS_TABLE
    if gotemplate.is_table(fmt):
        sys.stdout.write(gotemplate.render_table(fmt, rows, headers=PS_HEADERS))
    else:
        for r in rows:
            print(gotemplate.render(fmt, r))
    return 0


def cmd_inspect(args) -> int:
    from engine.cli import gotemplate
    from engine.errors import EngineError, NotFound

    eng = engine_from(args)
    out, rc = [], 0
    for ref in args.containers:
        try:
            if args.type in ("", "container"):
                try:
                    out.append(eng.inspect_container(ref))
                    continue
                except NotFound:
                    if args.type == "container":
                        raise
            if args.type in ("", "image"):
                out.append(eng.inspect_image(ref))
                continue
            if args.type == "volume":
                out.append(eng.inspect_volume(ref))
        except EngineError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = 1
    if args.format:
        for obj in out:
            print(gotemplate.render(args.format, obj))
    else:
        print(json.dumps(out, indent=4))
    return rc


def _parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    import re
    import time
    from datetime import datetime

    from engine.errors import InvalidArgument

    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", text)
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidArgument(
            f"invalid time {text!r}: use RFC3339, a unix timestamp or a duration like 10m"
        ) from None


def cmd_logs(args) -> int:
    eng = engine_from(args)
    from engine.errors import InvalidArgument

    try:
        tail = None if args.tail in ("all", None) else int(args.tail)
    except ValueError:
        raise InvalidArgument(
            f'invalid value for --tail {args.tail!r}: a number or "all"'
        ) from None
    it = eng.container_logs(
        args.container,
        follow=args.follow,
        tail=tail,
        since=_parse_time(args.since),
        until=_parse_time(args.until),
    )
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for ln in it:
        stream = err if ln.stream == "stderr" else out
        if args.timestamps:
            stream.write(ln.time.encode() + b" ")
        stream.write(ln.data)
        stream.flush()
    return 0


MONITOR_ACTOR = "berth-monitor"


def cmd_cleanup(args) -> int:
    # conmon's exit command: quiet, and never fails loudly (nobody reads it).
    from engine.errors import EngineError

    eng = engine_from(args)
    # Exits, restarts by policy and --rm removals done here are the monitor's doing,
    # not the user's who once ran the container: the events (and audit log) say so.
    eng.actor = MONITOR_ACTOR
    try:
        eng.cleanup_container(args.id)
    except EngineError as e:
        print(f"cleanup {args.id[:12]}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_prune(args) -> int:
    from engine.cli.common import confirm

    if not args.force and not confirm("WARNING! This will remove all stopped containers."):
        return 0
    res = engine_from(args).prune_containers()
    if res["ContainersDeleted"]:
        print("Deleted Containers:")
        for cid in res["ContainersDeleted"]:
            print(cid)
    print("\nTotal reclaimed space: 0B")
    return 0


def register(sub) -> None:
    for name in ("run", "create"):
        p = sub.add_parser(name, help=f"{name} a container", add_help=False)
        _add_create_flags(p)
        p.set_defaults(func=cmd_run if name == "run" else cmd_create)
    ctr = sub.add_parser("container", help="manage containers")
    csub = ctr.add_subparsers(dest="subcommand", parser_class=sub._parser_class)
    # Other command modules add `berth container X` forms through this.
    ctr._berth_sub = csub
    for target in (sub, csub):
        _register_common(target)
    for name in ("run", "create"):
        p = csub.add_parser(name, add_help=False)
        _add_create_flags(p)
        p.set_defaults(func=cmd_run if name == "run" else cmd_create)
    p = csub.add_parser("cleanup", help=argparse_suppress())
    p.add_argument("id")
    p.set_defaults(func=cmd_cleanup)
    p = csub.add_parser("prune")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=cmd_prune)
    p = csub.add_parser("ls", aliases=["list"])
    _ps_flags(p)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _ps_flags(p) -> None:
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.add_argument("-n", "--last", type=int, default=None)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    p.set_defaults(func=cmd_ps)


def _register_common(sub) -> None:
    p = sub.add_parser("start")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_start)
    for name, fn in (("stop", cmd_stop), ("restart", cmd_restart)):
        p = sub.add_parser(name)
        p.add_argument("-t", "--time", "--timeout", type=int, default=None)
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=fn)
    p = sub.add_parser("kill")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_kill)
    for name, fn in (("pause", cmd_pause), ("unpause", cmd_unpause), ("wait", cmd_wait)):
        p = sub.add_parser(name)
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=fn)
    p = sub.add_parser("rm")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("attach")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("--sig-proxy", default="true")
    p.add_argument("container")
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("port")
    p.add_argument("container")
    p.add_argument("private", nargs="?")
    p.set_defaults(func=cmd_port)
    p = sub.add_parser("rename")
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=cmd_rename)
    _ps_flags(sub.add_parser("ps"))
    p = sub.add_parser("inspect")
    p.add_argument("-f", "--format", default="")
    p.add_argument("--type", default="")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default=None)
    p.add_argument("--since", default=None)
    p.add_argument("--until", default=None)
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)
