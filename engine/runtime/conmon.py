"""Starting conmon, the per-container monitor (as Podman does).

conmon double-forks and returns at once; the container is created by the
runtime in the background. We hand conmon two pipes (DESIGN.md): the *start*
pipe, which conmon waits on before it does anything (so we can first move it
into the monitors cgroup), and the *sync* pipe, on which it writes
``{"data": PID}`` once ``runtime create`` has finished (or a negative value
and a message when it failed).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError


@dataclass
class ConmonArgs:
    cid: str
    name: str
    runtime_path: str
    runtime_root: Path
    bundle: Path
    exit_dir: Path
    persist_dir: Path
    log_path: Path
    log_size_max: int = 0
    terminal: bool = False
    stdin: bool = False
    # Keep the container's stdin open when an attached client goes away (for
    # `run -d -i`, so a later attach can still write); an attached `run -i`
    # wants EOF on its stdin to reach the container.
    leave_stdin_open: bool = False
    # Seconds conmon waits before running the exit command (0: at once).
    exit_delay: int = 0
    exit_command: list[str] = field(default_factory=list)
    # exec sessions
    exec_spec: Path | None = None
    exec_id: str = ""
    # The engine's own settings (EngineConfig.env()): the exit command must act
    # on the same instance even when the caller built its config in code.
    engine_env: dict = field(default_factory=dict)


def _argv(a: ConmonArgs) -> list[str]:
    uuid = a.exec_id or a.cid
    argv = [
        "conmon",
        "--api-version", "1",
        "-c", a.cid,
        "-u", uuid,
        "-n", a.name,
        "-r", a.runtime_path,
        "-b", str(a.bundle),
        "-p", str(a.bundle / ("exec-" + a.exec_id + ".pid" if a.exec_id else "pidfile")),
        "-P", str(a.bundle / ("exec-" + a.exec_id + ".conmon.pid" if a.exec_id else "conmon.pid")),
        "--exit-dir", str(a.exit_dir),
        "--persist-dir", str(a.persist_dir),
        "-l", f"k8s-file:{a.log_path}",
        "--log-level", "error",
        "--runtime-arg", f"--root={a.runtime_root}",
        "--socket-dir-path", str(a.bundle),
        "--full-attach",
    ]  # fmt: skip
    if a.log_size_max > 0:
        argv += ["--log-size-max", str(a.log_size_max)]
    if a.terminal:
        argv.append("-t")
    if a.stdin:
        argv += ["-i", "--leave-stdin-open"] if a.leave_stdin_open else ["-i"]
    if a.exec_spec:
        argv += ["-e", "--exec-process-spec", str(a.exec_spec), "--exec-attach"]
    if a.exit_command:
        if a.exit_delay:
            argv += ["--exit-delay", str(a.exit_delay)]
        argv += ["--exit-command", a.exit_command[0]]
        for x in a.exit_command[1:]:
            argv += ["--exit-command-arg", x]
    return argv


def spawn(
    a: ConmonArgs,
    *,
    before_start: Callable[[int], object] | None = None,
    on_monitor: Callable[[], object] | None = None,
    timeout: float = 60,
) -> int:
    """Start conmon and wait until the runtime has created the container.

    ``before_start(conmon_pid)`` runs while conmon still waits on the start
    pipe. ``on_monitor()`` runs once the monitor has daemonized (its PID file is
    written) while the runtime is still creating the container. Returns the
    container's PID.
    """
    a.persist_dir.mkdir(parents=True, exist_ok=True)
    sync_r, sync_w = os.pipe()
    start_r, start_w = os.pipe()
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "_OCI_SYNCPIPE": str(sync_w),
        "_OCI_STARTPIPE": str(start_r),
    }
    for k, v in os.environ.items():
        if k.startswith("BERTH_"):
            env[k] = v
    env.update(a.engine_env)
    # The exit command may use a running CLI server, but must not start one: it
    # would live on in the monitors cgroup, with conmon's environment.
    env["BERTH_CLI_SPAWN"] = "0"
    try:
        proc = subprocess.Popen(
            _argv(a),
            env=env,
            pass_fds=(sync_w, start_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        for fd in (sync_r, sync_w, start_r, start_w):
            os.close(fd)
        raise EngineError(f"cannot start conmon: {e.strerror}", errno=e.errno) from None
    os.close(sync_w)
    os.close(start_r)
    try:
        if before_start is not None:
            before_start(proc.pid)
        os.write(start_w, b"0")
    finally:
        os.close(start_w)
    # The first conmon process exits after forking the monitor.
    _, err = proc.communicate(timeout=timeout)
    if on_monitor is not None and proc.returncode == 0:
        on_monitor()
    try:
        data = b""
        with os.fdopen(sync_r, "rb") as f:
            data = f.readline()
    except OSError:
        pass
    try:
        msg = json.loads(data) if data else {}
    except ValueError:
        msg = {}
    pid = int(msg.get("data", -1)) if isinstance(msg, dict) else -1
    if pid <= 0:
        detail = (msg.get("message") if isinstance(msg, dict) else "") or err.decode(
            errors="replace"
        )
        detail = " ".join(detail.split()) or f"conmon exited {proc.returncode}"
        raise EngineError(f"container create failed: {detail}")
    return pid
