"""The native `berth` client and the CLI server it hands commands to.

Each test runs its own server on its own socket (BERTH_CLI_SOCKET) and stops
it at the end; BERTH_CLI_DEBUG=1 makes the client say who ran the command.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BERTH, BERTH_NATIVE, REPO, stop_cli_server

pytestmark = pytest.mark.skipif(not BERTH_NATIVE, reason="the native client is not built")

SERVED = "served by the CLI server"


@pytest.fixture
def cli(busybox_env):
    """(env, socket): a private server socket; the first command starts the server."""
    sock = Path(f"/run/berth-cli/t-{secrets.token_hex(4)}.sock")
    env = dict(busybox_env.env, BERTH_CLI_SOCKET=str(sock), BERTH_CLI_DEBUG="1")
    try:
        yield env, sock
    finally:
        stop_cli_server(sock)


def berth(env, *args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("cwd", str(REPO))
    return subprocess.run(
        [*BERTH, *args], env=env, capture_output=True, text=True, timeout=60, **kw
    )


def server_pid(sock: Path, timeout: float = 15.0) -> int:
    """Wait for the server to listen; its pid is in the lock file."""
    lock = sock.with_name(sock.name + ".lock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                return int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no CLI server on {sock}")


def servers_on(sock: Path) -> list[int]:
    """Processes whose command line names ``sock`` (servers started for it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(sock).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def warm(env, sock) -> int:
    """Start the server (the first command runs in-process and spawns it)."""
    first = berth(env, "ps")
    assert first.returncode == 0, first.stderr
    assert "running in-process: no CLI server" in first.stderr
    return server_pid(sock)


def test_served_commands_behave_like_the_python_cli(cli):
    env, sock = cli
    warm(env, sock)
    p = berth(env, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3
    assert SERVED in p.stderr
    assert p.stdout == "out\n"
    assert "err\n" in p.stderr
    # stdin is the client's own
    p = berth(env, "run", "-i", "--rm", "busybox", "cat", input="through the socket\n")
    assert (p.returncode, p.stdout) == (0, "through the socket\n")
    # a bad flag: Docker's 125 and a one-line error
    p = berth(env, "run", "--memory", "lots", "busybox", "true")
    assert p.returncode == 125
    assert "lots" in p.stderr and SERVED in p.stderr
    # the environment is the client's: another root shows other containers
    other = dict(env, BERTH_ROOT=str(Path(env["BERTH_ROOT"]).parent / "other-root"))
    assert berth(env, "ps", "-a", "-q").returncode == 0
    p = berth(other, "images", "-q")
    assert (p.returncode, p.stdout) == (0, "")


def test_cwd_and_umask_are_the_clients(cli, tmp_path):
    env, sock = cli
    warm(env, sock)
    (tmp_path / "vars.env").write_text("GREETING=from-the-env-file\n")
    p = berth(env, "run", "--rm", "--env-file", "vars.env", "busybox", "sh", "-c",
              "echo $GREETING", cwd=str(tmp_path))  # fmt: skip
    assert (p.returncode, p.stdout.strip()) == (0, "from-the-env-file")
    assert SERVED in p.stderr
    assert berth(env, "create", "--name", "exported", "busybox", "true").returncode == 0
    p = berth(env, "export", "-o", "out.tar", "exported", cwd=str(tmp_path),
              preexec_fn=lambda: os.umask(0o077))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert SERVED in p.stderr
    assert (tmp_path / "out.tar").stat().st_mode & 0o077 == 0


def test_a_signal_to_the_client_reaches_the_command(cli):
    env, sock = cli
    warm(env, sock)
    proc = subprocess.Popen(
        [*BERTH, "run", "--rm", "--name", "trapper", "busybox", "sh", "-c",
         "trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.1; done"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 5, err
    assert "got-term" in out


def test_the_command_survives_the_server(cli):
    """Killing the server does not kill a command it forked; the client still gets
    the exit code, and the next command starts a new server."""
    env, sock = cli
    pid = warm(env, sock)
    proc = subprocess.Popen(
        [*BERTH, "run", "--rm", "busybox", "sh", "-c", "echo started; sleep 1; exit 4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline() == "started\n"
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == 4
    p = berth(env, "ps")
    assert p.returncode == 0 and "running in-process" in p.stderr
    assert server_pid(sock) != pid


def test_edited_sources_retire_the_server(cli):
    """A server never runs stale code: a newer engine source makes it step aside."""
    env, sock = cli
    pid = warm(env, sock)
    assert SERVED in berth(env, "ps").stderr
    src = REPO / "engine" / "cli" / "server.py"
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, time.time_ns() + 1_000_000_000))
    try:
        p = berth(env, "ps")
        assert p.returncode == 0
        assert "running in-process" in p.stderr  # refused before anything ran
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_removing_the_socket_stops_the_server(cli):
    env, sock = cli
    pid = warm(env, sock)
    sock.unlink()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_a_client_in_other_namespaces_runs_in_process(cli):
    """The server's children live in its namespaces: a client in a network
    namespace of its own must not be served there."""
    env, sock = cli
    warm(env, sock)
    p = subprocess.run(
        ["unshare", "--net", *BERTH, "ps"], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "refused: other namespaces" in p.stderr


def test_another_user_is_not_served(cli):
    env, sock = cli
    warm(env, sock)
    p = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *BERTH, "--version"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # The socket's directory is root's alone: nobody cannot even connect.
    assert "running in-process: no CLI server: Permission denied" in p.stderr
    assert SERVED not in p.stderr


def test_switched_off(cli):
    env, sock = cli
    env = dict(env, BERTH_CLI_SERVER="0")
    p = berth(env, "ps")
    assert p.returncode == 0 and "BERTH_CLI_SERVER=0" in p.stderr
    # None was started: a spawned server would be a process right away (its
    # socket only appears once it has imported the engine).
    assert not servers_on(sock)
    time.sleep(0.5)
    assert not sock.exists() and not servers_on(sock)


def test_password_prompt_does_not_echo(cli):
    """A served command has no controlling terminal (/dev/tty): the password
    prompt must still turn echo off, on the terminal it was given as stdin."""
    import pty

    env, sock = cli
    warm(env, sock)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*BERTH, "login", "127.0.0.1:1", "--username", "bob"],
        env=env, stdin=slave, stdout=slave, stderr=slave, cwd=str(REPO),
    )  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while b"Password: " not in out and time.monotonic() < deadline:
        out += os.read(master, 1024)
    os.write(master, b"s3cret-value\n")
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=30) != 0
    text = out.decode(errors="replace")
    assert SERVED in text
    assert "s3cret-value" not in text
    assert "127.0.0.1:1" in text.split("Password: ", 1)[1]  # the login was tried


def test_killing_the_client_kills_its_command(cli):
    """`kill -9 berth` ends the command as it would end the Python CLI's process,
    so the next command finds and heals what it left (not a command running on)."""
    import re

    env, sock = cli
    warm(env, sock)
    proc = subprocess.Popen(
        [*BERTH, "run", "--rm", "busybox", "sh", "-c", "echo ready; sleep 30"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline() == "ready\n"
    served = re.search(r"served by the CLI server \(pid (\d+)\)", proc.stderr.readline())
    assert served, "the command was not served"
    child = int(served.group(1))
    assert Path(f"/proc/{child}").exists()
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_a_client_with_fewer_privileges_or_other_limits_runs_in_process(cli):
    """The server's children have its capabilities and limits: a client with a
    smaller bounding set, or other rlimits, must not be served with them."""
    env, sock = cli
    warm(env, sock)
    for wrapper, why in (
        (["setpriv", "--bounding-set=-net_raw"], "refused: other privileges (Cap"),
        (["prlimit", "--nofile=1000:1000"], "refused: other resource limits"),
    ):
        p = subprocess.run(
            [*wrapper, *BERTH, "ps"], env=env, capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stderr
        assert why in p.stderr
    assert SERVED in berth(env, "ps").stderr  # and the server still serves its peers


def test_signals_the_client_ignores_stay_ignored(cli):
    """`nohup berth ...`: a hangup does not end the served command either."""
    import re

    env, sock = cli
    warm(env, sock)
    proc = subprocess.Popen(
        [*BERTH, "run", "--rm", "busybox", "sh", "-c", "echo ready; sleep 1; echo done"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )  # fmt: skip
    served = re.search(r"\(pid (\d+)\)", proc.stderr.readline())
    assert served, "the command was not served"
    assert proc.stdout.readline() == "ready\n"
    os.kill(int(served.group(1)), signal.SIGHUP)  # as a terminal hangup would
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "done\n"


def test_no_server_in_a_directory_others_can_write(cli):
    """A socket path in a world-writable directory (/tmp) is never served from,
    and the directory is left as it was."""
    env, _ = cli
    sock = Path(f"/tmp/berth-cli-{secrets.token_hex(4)}.sock")
    env = dict(env, BERTH_CLI_SOCKET=str(sock))
    before = os.stat("/tmp").st_mode
    try:
        for _ in range(2):
            p = berth(env, "ps")
            assert p.returncode == 0 and "running in-process: no CLI server" in p.stderr
            time.sleep(0.5)
        assert not sock.exists()
        assert os.stat("/tmp").st_mode == before
    finally:
        stop_cli_server(sock)


def test_job_control_from_the_terminal(cli):
    """Ctrl-Z stops the served command with the client and `fg` (SIGCONT) resumes
    both; Ctrl-C reaches the command as it would reach the Python CLI."""
    import pty
    import re
    import select

    env, sock = cli
    warm(env, sock)
    pid, fd = pty.fork()  # the client leads a session with the pty as its terminal
    if pid == 0:
        os.execve(BERTH[0], ["berth", "run", "--rm", "busybox", "sh", "-c",
                             "while true; do echo tick; sleep 0.1; done"], env)  # fmt: skip
    out = bytearray()

    def read(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    out.extend(os.read(fd, 4096))
                except OSError:
                    return

    def state(p: int) -> str:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]

    try:
        deadline = time.monotonic() + 30
        while b"tick" not in out and time.monotonic() < deadline:
            read(0.2)
        served = re.search(rb"served by the CLI server \(pid (\d+)\)", out)
        assert served, bytes(out)
        child = int(served.group(1))
        os.write(fd, b"\x1a")  # Ctrl-Z
        read(0.5)
        assert (state(pid), state(child)) == ("T", "T")
        os.kill(pid, signal.SIGCONT)  # what `fg` sends
        read(0.5)
        assert state(pid) != "T" and state(child) != "T"
        ticks = out.count(b"tick")
        read(0.5)
        assert out.count(b"tick") > ticks  # output flows again
        os.write(fd, b"\x03")  # Ctrl-C
        read(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 130
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
