"""RUN: the command runs in a real container of the engine, then its upper dir
becomes the step's layer.

The container is made and started through the engine's own create/start
(conmon + crun/runc, the engine's networks, cgroups and cleanup), attached
before the runtime starts so no output is lost, and its output is handed to
the build's output as it comes. Whatever happens (a failing command, an
error, Ctrl-C) the container is removed again, with its mounts, netns and
cgroup. Build containers carry the labels ``berth.build.pid`` and
``berth.build.id``: a later build removes those whose builder died (a builder
killed with -9 cannot clean up), telling a reused pid and another build of the
same process (threads share a pid) from a live builder.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.errors import EngineError, NotFound

if TYPE_CHECKING:
    from engine.api import Engine

LABEL_PID = "berth.build.pid"
LABEL_BUILD = "berth.build.id"  # "<builder's start time>:<random>"
LABEL_STEP = "berth.build.step"

_LIVE_BUILDS: set[str] = set()  # builds running in this process


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[1].split()[19].decode()  # field 22, after "pid (comm)"


def register_build() -> str:
    """A new build id, live in this process until :func:`unregister_build`."""
    build_id = f"{_start_time(os.getpid())}:{os.urandom(6).hex()}"
    _LIVE_BUILDS.add(build_id)
    return build_id


def unregister_build(build_id: str) -> None:
    _LIVE_BUILDS.discard(build_id)


def _builder_alive(labels: dict[str, str]) -> bool:
    pid, build_id = labels.get(LABEL_PID, ""), labels.get(LABEL_BUILD, "")
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return build_id in _LIVE_BUILDS
    started = _start_time(int(pid))
    if started is None:
        return False
    return not build_id or build_id.split(":", 1)[0] == started  # not a reused pid


Output = Callable[[bytes], None]


def remove_orphans(eng: Engine) -> list[str]:
    """Remove build containers whose build is over (its builder died mid-step)."""
    removed = []
    for c in eng.containers(all=True, filters=[f"label={LABEL_PID}"]):
        if _builder_alive(c.opts.labels):
            continue
        with contextlib.suppress(EngineError):
            eng.remove_container(c.id, force=True, volumes=True)
            removed.append(c.id)
    return removed


def run_step(
    eng: Engine,
    image_id: str,
    argv: list[str],
    *,
    env: list[str],
    workdir: str,
    user: str,
    network: str,
    step: str,
    build_id: str,
    out: Output,
    started: Callable[[str], None],
    monitors: list[int],
) -> tuple[int, tuple[str, int] | None]:
    """Run ``argv`` on ``image_id``; (exit code, the layer blob (diff ID, size) if it was 0).

    The container's monitor (conmon) finishes its exit command after we removed
    the container; its pid goes to ``monitors`` so the build can wait for it at
    the end (overlapping the next steps) instead of after every RUN."""
    from engine.build.rootfs import commit_upper
    from engine.containers import attach, lifecycle
    from engine.containers.commit import _artifacts
    from engine.containers.diff import _Lower
    from engine.containers.options import CreateOptions
    from engine.containers.records import Paths

    opts = CreateOptions(
        image=image_id,
        command=list(argv),
        entrypoint=[],
        env=list(env),
        workdir=workdir,
        user=user,
        network=network,
        labels={LABEL_PID: str(os.getpid()), LABEL_BUILD: build_id, LABEL_STEP: step},
        no_healthcheck=True,  # Docker's builder runs no health check for a step
    )
    c = eng.create_container(opts)
    try:
        started(c.id)
        sock = eng.start_container(c.id, attach=attach.connect)
        from engine.containers import records

        monitors.append(records.load(eng.db, c.id).conmon_pid)
        try:
            _relay(sock, out)
        finally:
            sock.close()
            lifecycle.join_monitor_moves()
        code = int(eng.wait_container(c.id))
        if code != 0:
            return code, None
        p = Paths(eng.config, c.id)
        lower = _Lower(eng.images.layer_dirs(eng.images.get_by_id(c.image_id)))
        drop = frozenset(_artifacts(eng.get_container(c.id), str(p.upper), lower))
        return 0, commit_upper(eng.images, p.upper, drop)
    finally:
        # With its anonymous volumes (a VOLUME in the image): what the step wrote
        # there is not part of the image, as in Docker, and must not linger either.
        with contextlib.suppress(NotFound):
            eng.remove_container(c.id, force=True, volumes=True)


def wait_monitors(pids: list[int], timeout: float = 10.0) -> None:
    from engine.containers.lifecycle import wait_pid_exit

    for pid in pids:
        if pid:
            wait_pid_exit(pid, timeout)
    pids.clear()


def _relay(sock: socket.socket, out: Output) -> None:
    """conmon's attach messages: one byte naming the stream, then the bytes."""
    while True:
        try:
            msg = sock.recv(8193)
        except ConnectionResetError:
            return
        if not msg:
            return
        out(msg[1:])
