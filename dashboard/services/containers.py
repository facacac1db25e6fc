"""Containers, as the dashboard sees them: list rows, details, lifecycle actions, run.

Every view, task and consumer of the containers pages comes through here; this is the
only dashboard module (with logs/stats/terminal beside it) that knows the engine's
container types. Errors are the engine's (engine.errors.EngineError and subclasses):
callers show ``str(err)``, which names the object and the cause.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

from engine.containers import records
from engine.containers.inspect import docker_state, status_text
from engine.containers.options import (
    CreateOptions,
    parse_cpus,
    parse_restart,
    parse_size,
    parse_volume,
    validate_name,
)
from engine.errors import EngineError, InvalidArgument, NotFound

from . import engine_for

__all__ = ["EngineError", "NotFound", "InvalidArgument"]

STATES = ("running", "paused", "exited", "created")
ACTIONS = ("start", "stop", "restart", "kill", "pause", "unpause", "remove")


@dataclass
class Row:
    """One line of the containers list."""

    id: str
    name: str
    image: str
    state: str  # Docker's: created | running | paused | exited | removing
    status: str  # "Up 3 minutes", "Exited (0) 2 seconds ago"
    created: float
    command: str
    ports: str

    @property
    def short_id(self) -> str:
        return self.id[:12]


def row_of(c: records.Container) -> Row:
    ports = ", ".join(
        f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}->{p.get('container_port')}/"
        f"{p.get('proto', 'tcp')}"
        for p in c.opts.publish
    )
    return Row(
        id=c.id,
        name=c.name,
        image=c.image_ref,
        state=docker_state(c),
        status=status_text(c),
        created=c.created,
        command=" ".join(c.args),
        ports=ports,
    )


def list_rows(user: Any, state: str = "", q: str = "") -> list[Row]:
    """Every container as recorded, newest first, filtered by state and a search text
    (name, ID prefix or image). One read of the state DB and nothing per container:
    the list must stay fast with hundreds of containers. States are as recorded; an
    exit the engine has not handled yet shows up with its event (the list updates
    live) or when the container is opened."""
    if state and state not in STATES:
        raise InvalidArgument(f"unknown state filter {state!r}: use one of {', '.join(STATES)}")
    eng = engine_for(user)
    q = q.strip().lower()
    out = []
    for c in eng.container_records():
        r = row_of(c)
        if state and r.state != state:
            continue
        if q and not (q in c.name.lower() or c.id.startswith(q) or q in c.image_ref.lower()):
            continue
        out.append(r)
    return out


def get(user: Any, ref: str) -> records.Container:
    return engine_for(user).get_container(ref)


def inspect(user: Any, ref: str) -> dict:
    return engine_for(user).inspect_container(ref)


def top(user: Any, ref: str) -> dict:
    return engine_for(user).top_container(ref)


def log_path(user: Any, ref: str) -> tuple[str, str]:
    """(container ID, path of its log file) — what the logs stream tails."""
    info = inspect(user, ref)
    return info["Id"], info["LogPath"]


def is_running(user: Any, cid: str) -> bool:
    try:
        return engine_for(user).get_container(cid).state in records.ACTIVE
    except NotFound:
        return False


def act(user: Any, ref: str, action: str, *, timeout: float | None = None, signal: str = "") -> str:
    """Run a lifecycle action; returns the container's name (for messages and audit)."""
    eng = engine_for(user)
    c = eng.get_container(ref)
    if action == "start":
        eng.start_container(c.id)
    elif action == "stop":
        eng.stop_container(c.id, timeout)
    elif action == "restart":
        eng.restart_container(c.id, timeout)
    elif action == "kill":
        eng.kill_container(c.id, signal or "KILL")
    elif action == "pause":
        eng.pause_container(c.id)
    elif action == "unpause":
        eng.unpause_container(c.id)
    elif action == "remove":
        eng.remove_container(c.id, force=True)
    else:
        raise InvalidArgument(f"unknown container action {action!r}: use one of {ACTIONS}")
    return c.name


# -- run / create -------------------------------------------------------------------------


class FormErrors(Exception):
    """Bad run options: ``errors`` maps each form field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class RunRequest:
    """The run form's fields, as text (what a user typed)."""

    image: str
    name: str = ""
    command: str = ""
    env: str = ""  # one K=V a line
    ports: str = ""  # one -p spec a line
    volumes: str = ""  # one -v spec a line
    network: str = ""
    restart: str = "no"
    memory: str = ""
    cpus: str = ""
    pids_limit: str = ""
    user: str = ""
    workdir: str = ""
    labels: str = ""  # one K=V a line
    auto_remove: bool = False
    start: bool = True
    # Admin-only (each one amounts to root on the host):
    privileged: bool = False
    cap_add: str = ""  # comma or space separated
    pid_host: bool = False


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def allowed_bind_roots() -> list[str]:
    """Host directories operators may bind-mount (BERTH_ALLOWED_BIND_ROOTS, colon
    separated; none by default). Anything else under / is for admins only."""
    from django.conf import settings

    raw = getattr(settings, "BERTH_ALLOWED_BIND_ROOTS", None)
    if raw is None:
        raw = os.environ.get("BERTH_ALLOWED_BIND_ROOTS", "")
    roots = raw.split(":") if isinstance(raw, str) else list(raw)
    return [os.path.normpath(r) for r in roots if r]


def _bind_allowed(src: str, roots: list[str]) -> bool:
    real = os.path.realpath(src)  # a symlink must not lead out of an allowed root
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def parse_run(req: RunRequest, *, is_admin: bool) -> CreateOptions:
    """The engine's options from the form, or FormErrors naming each bad field.

    Options that amount to root on the host are refused here for non-admins, on the
    server, whatever the page offered."""
    errors: dict[str, str] = {}

    def check(field_name: str, fn, *args):
        try:
            return fn(*args)
        except (EngineError, ValueError) as e:
            errors[field_name] = str(e)
            return None

    if not req.image.strip():
        errors["image"] = "an image is required (e.g. busybox)"
    name = check("name", validate_name, req.name.strip()) if req.name.strip() else ""
    try:
        command = shlex.split(req.command) or None
    except ValueError as e:
        errors["command"] = f"cannot split the command into words: {e}"
        command = None
    env = []
    for ln in _lines(req.env):
        if "=" not in ln or ln.startswith("="):
            errors["env"] = f"{ln!r}: expected NAME=value"
            break
        env.append(ln)
    labels = {}
    for ln in _lines(req.labels):
        k, eq, v = ln.partition("=")
        if not k.strip():
            errors["labels"] = f"{ln!r}: expected key=value"
            break
        labels[k.strip()] = v
    publish = []
    for ln in _lines(req.ports):
        from engine.network import ports as portsmod

        got = check("ports", portsmod.parse_publish, ln)
        if got is None:
            break
        publish += [b.to_dict() for b in got]
    mounts = []
    roots = allowed_bind_roots()
    for ln in _lines(req.volumes):
        m = check("volumes", parse_volume, ln)
        if m is None:
            break
        if m.type == "bind" and not is_admin and not _bind_allowed(m.source, roots):
            where = ", ".join(roots) if roots else "none are allowed"
            errors["volumes"] = (
                f"binding the host path {m.source} needs the admin role "
                f"(operators may bind only under: {where})"
            )
            break
        mounts.append(m)
    network = req.network.strip()
    if network == "host" and not is_admin:
        errors["network"] = "the host network needs the admin role"
    restart = check("restart", parse_restart, req.restart.strip() or "no")
    if req.auto_remove and restart is not None and restart.name != "no":
        errors["restart"] = "conflicting options: a restart policy and remove-on-exit"
    memory = None
    if req.memory.strip():
        memory = check("memory", parse_size, req.memory.strip(), "memory limit")
        if memory is not None and memory < 6 * 1024 * 1024:
            errors["memory"] = "the minimum memory limit is 6MB"
    cpus = check("cpus", parse_cpus, req.cpus.strip()) if req.cpus.strip() else None
    pids = None
    if req.pids_limit.strip():
        try:
            pids = int(req.pids_limit)
            if pids == 0 or pids < -1:
                raise ValueError
        except ValueError:
            errors["pids_limit"] = f"{req.pids_limit!r}: a positive number (or -1 for no limit)"
    if req.workdir.strip() and not req.workdir.strip().startswith("/"):
        errors["workdir"] = f"{req.workdir.strip()!r} must be an absolute path"
    caps = [c for c in req.cap_add.replace(",", " ").split() if c]
    if not is_admin:
        if req.privileged:
            errors["privileged"] = "privileged containers need the admin role"
        if caps:
            errors["cap_add"] = "adding capabilities needs the admin role"
        if req.pid_host:
            errors["pid_host"] = "the host's PID namespace needs the admin role"
    if publish and (network in ("host", "none") or network.startswith("container:")):
        errors["ports"] = f"ports cannot be published with the {network.split(':')[0]} network"
    if errors:
        raise FormErrors(errors)
    return CreateOptions(
        image=req.image.strip(),
        command=command,
        name=name or "",
        env=env,
        workdir=req.workdir.strip(),
        user=req.user.strip(),
        mounts=mounts,
        labels=labels,
        memory=memory,
        cpus=cpus,
        pids_limit=pids,
        restart=restart,
        auto_remove=req.auto_remove,
        cap_add=caps,
        privileged=req.privileged,
        network=network,
        publish=publish,
        pid_mode="host" if req.pid_host else "",
    )


def needs_pull(user: Any, ref: str) -> bool:
    """Should a run pull ``ref`` first? When it is not in the store and names a registry
    of its own (``host[:port]/repo``). A bare name would mean Docker Hub, which these
    hosts cannot reach: the form says "no such image" at once instead."""
    from engine.images import reference

    if engine_for(user).images.exists(ref):
        return False
    try:
        parsed = reference.parse_reference(ref)
    except EngineError:
        return False  # the run itself names the problem
    return parsed.domain != reference.DEFAULT_DOMAIN


def run(user: Any, opts: CreateOptions, *, start: bool = True) -> records.Container:
    """Create (and start) the container. Errors from the engine are mapped to the
    field they are about where that is clear (FormErrors), else raised as they are."""
    eng = engine_for(user)
    try:
        c = eng.create_container(opts)
    except NotFound as e:
        raise FormErrors({"image": str(e)}) from None
    except EngineError as e:
        msg = str(e)
        low = msg.lower()
        for key, words in (
            ("name", ("name",)),
            ("network", ("network",)),
            ("ports", ("port",)),
            ("volumes", ("volume", "mount", "bind")),
            ("user", ("user",)),
        ):
            if any(w in low for w in words):
                raise FormErrors({key: msg}) from None
        raise
    if start:
        eng.start_container(c.id)
    return c


def params_of(opts: CreateOptions) -> dict:
    """What the audit log records of a run (secrets in env are masked by audit.record)."""
    d = opts.to_dict()
    return {k: v for k, v in d.items() if v not in (None, "", [], {}, False) or k == "image"}
