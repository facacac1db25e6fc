"""`create`: resolve the image and options into a container record and its directories.

All validation happens before the first write; the row is inserted inside one
transaction whose UNIQUE(name) makes concurrent `--name x` races have exactly
one winner. If anything after the insert fails, the row and the directories
are removed again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time

from engine.containers.options import CreateOptions, merge_env, validate_name
from engine.containers.records import Container, Paths
from engine.errors import Conflict, InvalidArgument

# Docker's name generator, shortened: adjective_surname.
_ADJ = "admiring bold brave clever eager fervent gifted happy jolly keen loving modest nifty quirky relaxed serene sharp tender vibrant wizardly zealous".split()
_NAMES = "albattani bardeen curie darwin euclid fermi galois hopper jennings knuth lovelace mayer noether pascal ritchie shannon turing wozniak yonath".split()


def _random_name() -> str:
    return f"{secrets.choice(_ADJ)}_{secrets.choice(_NAMES)}{secrets.randbelow(100)}"


def resolve(eng, opts: CreateOptions) -> Container:
    """Merge the image's config with the options (Docker's rules), validating as we go."""
    rec = eng.images.get(opts.image)
    icfg = (rec.config or {}).get("config") or {}
    if opts.entrypoint:
        entry = opts.entrypoint
        cmd = opts.command or []  # --entrypoint resets the image's Cmd
    elif opts.entrypoint is not None:  # --entrypoint "": no entrypoint, the image's Cmd stays
        entry = []
        cmd = opts.command if opts.command else (icfg.get("Cmd") or [])
    else:
        entry = icfg.get("Entrypoint") or []
        cmd = opts.command if opts.command else (icfg.get("Cmd") or [])
    args = list(entry) + list(cmd)
    if not args:
        raise InvalidArgument(f"no command specified: image {opts.image} has no Cmd or Entrypoint")
    env = merge_env(icfg.get("Env") or [], opts.env)
    workdir = opts.workdir or icfg.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise InvalidArgument(
            f"the working directory {workdir!r} is invalid, it needs to be an absolute path"
        )
    health = None
    if not opts.no_healthcheck:
        if opts.health and opts.health.test:
            health = {
                "Test": opts.health.test,
                "Interval": opts.health.interval,
                "Timeout": opts.health.timeout,
                "Retries": opts.health.retries,
                "StartPeriod": opts.health.start_period,
            }
        elif icfg.get("Healthcheck") and icfg["Healthcheck"].get("Test") not in (
            None,
            [],
            ["NONE"],
        ):
            h = icfg["Healthcheck"]
            ns = 1e9
            health = {
                "Test": h["Test"],
                "Interval": (h.get("Interval") or 30 * ns) / ns,
                "Timeout": (h.get("Timeout") or 30 * ns) / ns,
                "Retries": h.get("Retries") or 3,
                "StartPeriod": (h.get("StartPeriod") or 0) / ns,
            }
    for m in opts.mounts:
        if m.type == "bind" and not os.path.exists(m.source):
            raise InvalidArgument(
                f"invalid mount config: bind source path does not exist: {m.source}"
            )
    if not opts.network:
        opts.network = eng.config.default_network  # Docker: the `bridge` network
    if opts.network not in ("none", "host") and not opts.network.startswith("container:"):
        rec_net = eng.get_network(opts.network)  # NotFound names it
        if rec_net.driver not in ("bridge", "macvlan", "ipvlan"):
            raise InvalidArgument(
                f"network {opts.network}: driver {rec_net.driver} is not supported for containers"
            )
        if opts.ip and rec_net.name == "bridge":
            raise InvalidArgument(
                "user specified IP address is supported on user defined networks only"
            )
        if opts.ip:
            import ipaddress

            try:
                inside = ipaddress.ip_address(opts.ip) in ipaddress.ip_network(rec_net.subnet)
            except ValueError:
                raise InvalidArgument(f"invalid IP address {opts.ip!r}") from None
            if not inside:
                raise InvalidArgument(
                    f"IP address {opts.ip} is not in network {rec_net.name}'s subnet {rec_net.subnet}"
                )
    elif opts.ip:
        raise InvalidArgument(f"--ip needs a user-defined network, not --network {opts.network}")
    for mode, what in ((opts.pid_mode, "--pid"), (opts.ipc_mode, "--ipc")):
        if (
            mode
            and mode not in ("host", "private", "shareable", "none")
            and not mode.startswith("container:")
        ):
            raise InvalidArgument(f"invalid {what} mode {mode!r}: use host or container:NAME")
    if opts.dns:
        from engine.containers.options import parse_dns

        opts.dns = parse_dns(opts.dns)  # callers other than the CLI (the dashboard) too
    if (opts.dns or opts.dns_search or opts.dns_options) and (
        opts.network == "host" or opts.network.startswith("container:")
    ):
        # Docker: "conflicting options: dns and the network mode".
        raise InvalidArgument(f"conflicting options: --dns* and --network {opts.network}")
    if opts.runtime and opts.runtime not in ("crun", "runc"):
        raise InvalidArgument(f"unknown runtime {opts.runtime!r}: use crun or runc")
    # Fail now, not at start, on capabilities the host cannot grant.
    from engine.runtime.caps import resolve_caps

    resolve_caps(opts.cap_add, opts.cap_drop, opts.privileged)
    for so in opts.security_opt:
        key, _, val = so.partition("=") if "=" in so else so.partition(":")
        if key == "no-new-privileges" and val in ("", "true", "false"):
            continue
        if key == "seccomp" and val:
            if val != "unconfined" and not os.path.isfile(val):
                raise InvalidArgument(f"opening seccomp profile ({val}) failed: no such file")
            continue
        if key in ("label", "apparmor"):
            continue
        raise InvalidArgument(f"invalid --security-opt {so!r}")
    cid = secrets.token_hex(32)
    return Container(
        id=cid,
        name=validate_name(opts.name) if opts.name else "",
        image_id=rec.id,
        image_ref=opts.image,
        created=time.time(),
        state="created",
        opts=opts,
        args=args,
        env=env,
        workdir=workdir,
        user=opts.user or icfg.get("User") or "",
        stop_signal=opts.stop_signal or icfg.get("StopSignal") or "SIGTERM",
        health=health,
        exposed_ports={
            **(icfg.get("ExposedPorts") or {}),
            **{f"{b['container_port']}/{b['proto']}": {} for b in opts.publish},
        },
        image_volumes=sorted((icfg.get("Volumes") or {}).keys()),
    )


def insert(eng, c: Container) -> None:
    """Insert the row (name uniqueness enforced by SQLite) and make the directories."""
    import sqlite3

    for _ in range(5):
        name = c.name or _random_name()
        try:
            with eng.db.write() as db:
                db.execute(
                    "INSERT INTO containers(id, name, image_id, image_ref, created, state, config)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (c.id, name, c.image_id, c.image_ref, c.created, "created", c.config_json()),
                )
            c.name = name
            break
        except sqlite3.IntegrityError:
            if c.name:
                other = eng.db.one("SELECT id FROM containers WHERE name=?", (c.name,))
                oid = other["id"] if other else "?"
                raise Conflict(
                    f'the container name "/{c.name}" is already in use by container "{oid}". '
                    "You have to remove (or rename) that container to be able to reuse that name.",
                    obj=c.name,
                ) from None
    else:
        raise Conflict("could not pick a free random container name")
    from engine.containers.lifecycle import crashpoint

    crashpoint("create:inserted")
    p = Paths(eng.config, c.id)
    try:
        for d in (p.upper, p.work, p.merged, p.userdata, p.persist):
            d.mkdir(parents=True, exist_ok=True)
    except BaseException:
        shutil.rmtree(p.dir, ignore_errors=True)
        with eng.db.write() as db:
            db.execute("DELETE FROM containers WHERE id=?", (c.id,))
        raise
