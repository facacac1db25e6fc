"""exec, top, cp, export, diff, commit against real containers (CLI and API)."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import tarfile
import time

import pytest

from tests.conftest import BERTH, REPO

pytestmark = pytest.mark.root


def _run_d(env, *args: str) -> str:
    p = env.berth("run", "-d", *args, "busybox", "sleep", "300", check=True)
    return p.stdout.strip()


def test_exec_exit_codes_and_options(busybox_env):
    cid = _run_d(busybox_env, "--name", "ex1")
    b = busybox_env.berth
    assert b("exec", "ex1", "true").returncode == 0
    assert b("exec", "ex1", "sh", "-c", "exit 3").returncode == 3
    p = b("exec", "ex1", "/etc/passwd")
    assert p.returncode == 126 and "permission denied" in p.stderr
    p = b("exec", "ex1", "no-such-cmd")
    assert p.returncode == 127 and "executable file not found" in p.stderr
    p = b(
        "container",
        "exec",
        "-e",
        "FOO=bar",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "ex1",
        "sh",
        "-c",
        "echo $FOO; id -u; pwd",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["bar", "65534", "/tmp"]
    # stdin only with -i
    p = b("exec", "-i", "ex1", "cat", input=b"hello\n")
    assert p.stdout == "hello\n"
    assert b("exec", "ex1", "cat", input=b"hello\n").stdout == ""
    # detached: returns at once, the process runs on
    assert b("exec", "-d", "ex1", "sh", "-c", "echo d > /tmp/detached").returncode == 0
    deadline = time.monotonic() + 5
    while b("exec", "ex1", "cat", "/tmp/detached").stdout != "d\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b("exec", "ex1", "cat", "/tmp/detached").stdout == "d\n"

    eng = busybox_env.engine()
    r, w = os.pipe()
    assert eng.exec_container(cid, ["sh", "-c", "echo api; exit 4"], stdout_fd=w) == 4
    os.close(w)
    assert os.read(r, 100) == b"api\n"
    os.close(r)
    actions = [
        r["action"]
        for r in eng.db.query("SELECT action FROM events WHERE obj_id=? ORDER BY seq", (cid,))
    ]
    assert {"exec_create", "exec_start", "exec_die"} <= set(actions)
    die = eng.db.query(
        "SELECT attrs FROM events WHERE action='exec_die' ORDER BY seq DESC LIMIT 1"
    )[0]
    assert '"exitCode": "4"' in die["attrs"] or '"exitCode":"4"' in die["attrs"]
    b("rm", "-f", "ex1", check=True)


def test_exec_stopped_container(busybox_env):
    busybox_env.berth("create", "--name", "ex2", "busybox", "true", check=True)
    p = busybox_env.berth("exec", "ex2", "true")
    assert p.returncode == 125
    assert p.stderr.strip().splitlines() == ["Error: container ex2 is not running"]
    busybox_env.berth("rm", "ex2", check=True)


def test_exec_tty(busybox_env):
    _run_d(busybox_env, "--name", "ex3")
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [*BERTH, "exec", "-t", "ex3", "sh", "-c", "tty; echo tty-ok; exit 7"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=busybox_env.env,
        cwd=str(REPO),
    )
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    assert p.wait(timeout=30) == 7
    os.close(master)
    text = out.decode(errors="replace")
    assert "tty-ok" in text
    assert "/dev/pts/" in text and "not a tty" not in text
    busybox_env.berth("rm", "-f", "ex3", check=True)


def test_top(busybox_env):
    _run_d(busybox_env, "--name", "tp")
    p = busybox_env.berth("top", "tp", check=True)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert any(ln.endswith("sleep 300") for ln in lines[1:])
    res = busybox_env.engine().top_container("tp", ["-o", "pid,comm"])
    assert res["Titles"] == ["PID", "COMMAND"] and ["sleep"] == [r[1] for r in res["Processes"]]
    busybox_env.berth("rm", "-f", "tp", check=True)


def test_cp_both_ways_and_symlink_attack(busybox_env, tmp_path):
    b = busybox_env.berth
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host secret\n")
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    _run_d(busybox_env, "--name", "cp1")
    b(
        "exec",
        "cp1",
        "sh",
        "-c",
        f"ln -s {sentinel} /evil; ln -s {hostdir} /evildir; mkdir -p /d/sub; echo in > /d/sub/f",
        check=True,
    )

    # Out: a file, a directory, directory contents, and a tar on stdout.
    b("cp", "cp1:/etc/passwd", str(tmp_path / "pw"), check=True)
    assert (tmp_path / "pw").read_text().startswith("root:")
    b("cp", "cp1:/d", str(tmp_path / "dcopy"), check=True)
    assert (tmp_path / "dcopy" / "sub" / "f").read_text() == "in\n"
    (tmp_path / "into").mkdir()
    b("cp", "cp1:/d/.", str(tmp_path / "into"), check=True)
    assert (tmp_path / "into" / "sub" / "f").exists()
    out = subprocess.run(
        [*BERTH, "cp", "cp1:/d", "-"], env=busybox_env.env, cwd=str(REPO), capture_output=True
    )
    assert out.returncode == 0
    names = tarfile.open(fileobj=io.BytesIO(out.stdout)).getnames()
    assert set(names) == {"d", "d/sub", "d/sub/f"}

    # In: a file under a new name, into a directory, and a tar from stdin.
    src = tmp_path / "local.txt"
    src.write_text("local\n")
    b("cp", str(src), "cp1:/tmp/renamed", check=True)
    b("cp", str(src), "cp1:/d/", check=True)
    assert b("exec", "cp1", "cat", "/tmp/renamed", "/d/local.txt").stdout == "local\nlocal\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("fromtar")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"tar"))
    assert b("cp", "-", "cp1:/tmp", input=buf.getvalue()).returncode == 0
    assert b("exec", "cp1", "cat", "/tmp/fromtar").stdout == "tar"

    # The attack: links in the container that point at host paths.
    out = subprocess.run(
        [*BERTH, "cp", "cp1:/evil", "-"], env=busybox_env.env, cwd=str(REPO), capture_output=True
    )
    assert b"host secret" not in out.stdout
    assert b("cp", "-L", "cp1:/evil", str(tmp_path / "leak")).returncode != 0
    assert b("cp", "cp1:/evildir/", str(tmp_path / "leak2")).returncode != 0
    assert not (tmp_path / "leak").exists() and not (tmp_path / "leak2").exists()
    payload = tmp_path / "payload"
    payload.write_text("pwned\n")
    b("cp", str(payload), "cp1:/evil")
    b("cp", str(payload), "cp1:/evildir/")
    b("cp", str(payload), f"cp1:/evildir/{payload.name}")
    assert sentinel.read_text() == "host secret\n"
    assert list(hostdir.iterdir()) == []

    # Stopped container: the overlay is mounted for the copy and unmounted after.
    b("stop", "-t", "0", "cp1", check=True)
    b("cp", str(src), "cp1:/stopped.txt", check=True)
    b("cp", "cp1:/stopped.txt", str(tmp_path / "back.txt"), check=True)
    assert (tmp_path / "back.txt").read_text() == "local\n"
    merged = (
        busybox_env.root / "containers" / busybox_env.engine().get_container("cp1").id / "merged"
    )
    assert str(merged) not in open("/proc/self/mountinfo").read()
    b("rm", "-f", "cp1", check=True)


def test_export(busybox_env, tmp_path):
    _run_d(busybox_env, "--name", "exp")
    out = tmp_path / "fs.tar"
    busybox_env.berth("export", "-o", str(out), "exp", check=True)
    names = subprocess.run(
        ["tar", "-tf", str(out)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "bin/busybox" in names
    busybox_env.berth("rm", "-f", "exp", check=True)


def test_diff(busybox_env):
    b = busybox_env.berth
    _run_d(busybox_env, "--name", "df")
    b(
        "exec",
        "df",
        "sh",
        "-c",
        "touch /tmp/new; rm /bin/ls; echo x >> /etc/passwd; mkdir -p /a/b; echo y > /a/b/c",
        check=True,
    )
    lines = b("diff", "df", check=True).stdout.splitlines()
    for want in (
        "A /tmp/new",
        "D /bin/ls",
        "C /bin",
        "C /etc/passwd",
        "C /etc",
        "A /a",
        "A /a/b/c",
    ):
        assert want in lines, lines
    # the runtime's mount points are not the user's changes
    assert not any("hostname" in ln or "resolv.conf" in ln for ln in lines)
    api = busybox_env.engine().diff_container("df")
    assert {"Path": "/bin/ls", "Kind": 2} in api
    b("rm", "-f", "df", check=True)


def test_commit_then_run(busybox_env):
    b = busybox_env.berth
    _run_d(busybox_env, "--name", "cm", "-e", "KEEP=1")
    b("exec", "cm", "sh", "-c", "echo committed > /hello; rm /bin/ls", check=True)
    p = b(
        "commit", "-m", "my message", "-a", "me", "-c", "ENV ADDED=2", "cm", "mine:v1", check=True
    )
    image_id = p.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    p = b(
        "run",
        "--rm",
        "mine:v1",
        "sh",
        "-c",
        "cat /hello; echo $KEEP$ADDED; ls /bin/ls || echo gone",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["committed", "12", "gone"]
    # the container was paused for the commit and runs on
    assert b("exec", "cm", "true").returncode == 0
    rec = busybox_env.engine().images.get("mine:v1")
    assert rec.config["history"][-1]["comment"] == "my message"
    assert rec.config["config"]["Cmd"] == ["sleep", "300"]
    assert not any(
        h in n for n in _layer_names(busybox_env, rec) for h in ("hostname", "resolv.conf")
    )
    b("rm", "-f", "cm", check=True)


def _layer_names(env, rec) -> list[str]:
    store = env.engine().images
    with store.blobs.open(rec.layer_digests[-1]) as f:
        return tarfile.open(fileobj=f).getnames()
