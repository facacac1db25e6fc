"""Hostile contexts and archives stay inside; failures and crashes leave nothing behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import BERTH, REPO
from tests.engine.build.conftest import write_tree

pytestmark = pytest.mark.root


def _scratch_left(root: Path) -> list[Path]:
    """What builds left in their scratch space (made only when a step needs it)."""
    tmp = root / "build" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def _cgroups(prefix: str) -> list[str]:
    found = []
    for ctl in Path("/sys/fs/cgroup").iterdir():
        d = ctl / prefix
        if d.is_dir():
            found += [str(c) for c in d.iterdir() if c.is_dir()]
    return found


def test_symlinks_in_context_are_copied_as_links_never_followed_out(busybox_env, tmp_path):
    outside = tmp_path / "outside"
    write_tree(outside, {"secret.txt": "host secret\n", "dir/inner.txt": "inner\n"})
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY . /ctx/\nCOPY to-secret /single\nCOPY to-dir/ /d/\n",
            "real.txt": "ok\n",
        },
    )
    os.symlink(str(outside / "secret.txt"), ctx / "to-secret")
    os.symlink("../outside/dir", ctx / "to-dir")  # relative, climbing out
    p = busybox_env.berth("build", "-q", "-t", "links", str(ctx))
    assert p.returncode == 0, p.stderr
    out = busybox_env.berth(
        "run", "--rm", "links", "sh", "-c",
        "for l in /ctx/to-secret /single /ctx/to-dir; do readlink $l; done;"
        " cat /ctx/to-secret /single 2>&1;"
        " ls -a /d 2>&1; cat /ctx/real.txt",
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[:3] == [str(outside / "secret.txt"), str(outside / "secret.txt"), "../outside/dir"]
    assert "host secret" not in out and "inner" not in out
    assert "ok" in lines[-1]


def test_copy_cannot_climb_out_of_the_context(busybox_env, tmp_path):
    write_tree(tmp_path, {"outside.txt": "no\n"})
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY ../outside.txt /x\n"})
    p = busybox_env.berth("build", str(ctx))
    assert p.returncode != 0
    assert "forbidden path outside the build context: ../outside.txt" in p.stderr


def _hostile_tar(host_target: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:

        def add(name, kind=tarfile.REGTYPE, data=b"", link=""):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.size = len(data)
            ti.linkname = link
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data) if data else None)

        add("../../climb.txt", data=b"climbed\n")
        add("/abs.txt", data=b"absolute\n")
        add("escape", tarfile.SYMTYPE, link=str(host_target.parent))
        add(f"escape/{host_target.name}", data=b"through the link\n")
        add("dev-null", tarfile.CHRTYPE)
        add("ok/file.txt", data=b"fine\n")
    return buf.getvalue()


def test_add_tar_is_extracted_inside_the_image_only(busybox_env, tmp_path):
    # The tar's link points at the host's /tmp, which the image has too.
    host_target = Path("/tmp") / f"berth-pwned-{busybox_env.prefix}.txt"
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nADD bundle.tar /dest/\n"})
    (ctx / "bundle.tar").write_bytes(_hostile_tar(host_target))
    p = busybox_env.berth("build", "-q", "-t", "tarry", str(ctx))
    assert p.returncode == 0, p.stderr
    try:
        assert not host_target.exists()
    finally:
        host_target.unlink(missing_ok=True)
    assert not (tmp_path / "climb.txt").exists()
    out = busybox_env.berth(
        "run", "--rm", "tarry", "sh", "-c",
        f"cat /dest/climb.txt /dest/abs.txt /dest/ok/file.txt {host_target} 2>&1; ls /dest",
    ).stdout  # fmt: skip
    # Names were cleaned into /dest; the link's target resolved inside the image.
    assert "climbed" in out and "absolute" in out and "fine" in out
    assert "through the link" in out  # written at the link's target *inside the image*
    assert "dev-null" not in out


def test_add_url_unreachable_and_reachable(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx", {"Dockerfile": "FROM busybox\nADD http://127.0.0.1:9/x /x\n"}
    )
    p = busybox_env.berth("build", str(ctx))
    assert p.returncode != 0
    assert "ADD http://127.0.0.1:9/x: cannot reach the URL" in p.stderr

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"downloaded payload\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/files/tool.txt"
        (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {url} /opt/\n")
        p = busybox_env.berth("build", "-q", "-t", "fetched", str(ctx))
        assert p.returncode == 0, p.stderr
    finally:
        server.shutdown()
        server.server_close()
    out = busybox_env.berth(
        "run", "--rm", "fetched", "sh", "-c", "cat /opt/tool.txt; stat -c '%a %Y' /opt/tool.txt"
    ).stdout  # fmt: skip
    assert out.splitlines() == ["downloaded payload", "600 1445412480"]


def test_failing_run_reports_and_leaves_nothing(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": 'FROM busybox\nENV A=1\nRUN echo partial > /made && echo before-failure && exit 3\nCMD ["true"]\n'
        },
    )
    eng = busybox_env.engine()
    images_before = {i["FullID"] for i in eng.list_images(all=True)}
    p = busybox_env.berth("build", "-t", "broken:1", str(ctx))
    assert p.returncode == 1
    assert "before-failure" in p.stdout  # the step's output was shown
    assert (
        "step 3/4: the command '/bin/sh -c echo partial > /made && echo before-failure && exit 3'"
        " returned a non-zero code: 3" in p.stderr
    )
    assert eng.containers(all=True) == []
    assert _mounts_under(busybox_env.root) == []
    assert _cgroups(busybox_env.prefix) == []
    assert not eng.images.exists("broken:1")
    made = {i["FullID"] for i in eng.list_images(all=True)} - images_before
    # Only the ENV step's image (complete, and cached) was made; nothing from the RUN.
    assert len(made) == 1
    (new,) = made
    assert (
        json.loads(busybox_env.berth("image", "inspect", new, check=True).stdout)[0]["Config"][
            "Env"
        ][-1]
        == "A=1"
    )
    assert _scratch_left(busybox_env.root) == []


def test_builder_killed_mid_run_is_cleaned_up_by_the_next_build(busybox_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {"Dockerfile": "FROM busybox\nRUN echo started && sleep 60\n", "f": "x"},
    )
    proc = subprocess.Popen(
        [*BERTH, "build", "-t", "killed", str(ctx)],
        env=busybox_env.env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        out = b""
        deadline = time.monotonic() + 60
        while b"\nstarted\n" not in out and time.monotonic() < deadline:
            out += proc.stdout.read1(4096) if proc.stdout else b""
        assert b"\nstarted\n" in out  # the RUN's own output: its container runs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    eng = busybox_env.engine()
    assert len(eng.containers(all=True)) == 1  # the orphan, for now
    # The next build (here: a different Dockerfile) removes the orphan and the stale workspace.
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo fine > /fine\n")
    p = busybox_env.berth("build", "-q", "-t", "after", str(ctx))
    assert p.returncode == 0, p.stderr
    assert eng.containers(all=True) == []
    assert _mounts_under(busybox_env.root) == []
    assert _scratch_left(busybox_env.root) == []
    # The killed step cached nothing: no entry leads to an image that ran it.
    cache = busybox_env.root / "build" / "cache"
    for entry in cache.iterdir():
        assert not entry.name.startswith(".tmp")
        history = eng.image_history(entry.read_text().strip())
        assert not any("sleep 60" in h["CreatedBy"] for h in history)


def test_run_uses_the_network_asked_for(net_env, tmp_path):
    ctx = write_tree(
        tmp_path / "ctx",
        {"Dockerfile": "FROM busybox\nRUN ls /sys/class/net | sort | tr '\\n' ' '\n"},
    )
    p = net_env.berth("build", "--no-cache", str(ctx))
    assert p.returncode == 0, p.stderr
    assert "eth0 lo" in p.stdout  # the engine's default (bridge) network
    p = net_env.berth("build", "--no-cache", "--network", "none", str(ctx))
    assert p.returncode == 0, p.stderr
    assert "eth0" not in p.stdout and "lo " in p.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_removes_its_container(busybox_env, tmp_path, sig):
    ctx = write_tree(
        tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started && sleep 60\n"}
    )
    proc = subprocess.Popen(
        [*BERTH, "build", "-t", "interrupted", str(ctx)],
        env=busybox_env.env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        out = b""
        deadline = time.monotonic() + 60
        while b"\nstarted\n" not in out and time.monotonic() < deadline:
            out += proc.stdout.read1(4096) if proc.stdout else b""
        assert b"\nstarted\n" in out
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    eng = busybox_env.engine()
    assert eng.containers(all=True) == []
    assert _mounts_under(busybox_env.root) == []
    assert _cgroups(busybox_env.prefix) == []
    assert _scratch_left(busybox_env.root) == []
    assert not eng.images.exists("interrupted")


def test_dockerignore_beside_the_dockerfile_is_read_inside_the_context(busybox_env, tmp_path):
    # <Dockerfile>.dockerignore in the context is a context file like any other: a symlink
    # pointing out is resolved inside the context, never followed to the host file.
    outside = write_tree(tmp_path / "outside", {"ignore": "*.txt\n"})
    ctx = write_tree(
        tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY a.txt /a\n", "a.txt": "a\n"}
    )
    os.symlink(str(outside / "ignore"), ctx / "Dockerfile.dockerignore")
    p = busybox_env.berth("build", "-q", str(ctx))
    assert p.returncode == 0, p.stderr  # the host's "*.txt" was not applied
    # A FIFO there must not hang the build either.
    os.unlink(ctx / "Dockerfile.dockerignore")
    os.mkfifo(ctx / "Dockerfile.dockerignore")
    p = busybox_env.berth("build", "-q", str(ctx), timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("source", ["alias/key", "alias/*", "alias/deeper/", "alias/deeper/more"])
def test_dockerignored_files_stay_out_through_a_symlinked_parent(busybox_env, tmp_path, source):
    # Docker never sends an excluded file; reaching it through a link to its directory
    # must not copy it either.
    ctx = write_tree(
        tmp_path / "ctx",
        {
            ".dockerignore": "secrets\n",
            "Dockerfile": f"FROM busybox\nCOPY {source} /got/\n",
            "secrets/key": "s3cret\n",
            "secrets/deeper/more": "s3cret too\n",
        },
    )
    os.symlink("secrets", ctx / "alias")
    p = busybox_env.berth("build", "-t", "leak", str(ctx))
    assert p.returncode == 1, p.stdout
    assert "excluded by .dockerignore" in p.stderr


def test_closed_output_stops_the_build_and_says_so(busybox_env, tmp_path):
    # `berth build . | head -1`: the build cannot go on reporting; it must not exit 0
    # as if it had built and tagged the image.
    ctx = write_tree(
        tmp_path / "ctx",
        {"Dockerfile": "FROM busybox\nRUN echo one\nRUN echo two\nRUN echo three\n"},
    )
    proc = subprocess.Popen(
        [*BERTH, "build", "-t", "piped", str(ctx)], env=busybox_env.env, cwd=str(REPO),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        proc.wait(60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "output was closed" in err, err
    eng = busybox_env.engine()
    assert not eng.images.exists("piped")
    assert eng.containers(all=True) == []
    assert _mounts_under(busybox_env.root) == []


def test_add_url_streams_to_disk_not_to_memory(busybox_env, tmp_path):
    import sys

    size = 160 << 20

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"z" * (1 << 20)
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/big.bin"
        ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM busybox\nADD {url} /big.bin\n"})
        # The peak RSS of the build alone: measured by a fresh parent of its own.
        measure = (
            "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]);"
            " print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        p = subprocess.run(
            [sys.executable, "-c", measure, *BERTH, "build", "-q", "-t", "big", str(ctx)],
            env=busybox_env.env, cwd=str(REPO), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        code, peak = p.stdout.split()[-2:]
        assert code == "0", p.stderr
    finally:
        server.shutdown()
        server.server_close()
    # The builder never holds the body in memory (it was 160 MiB here).
    assert int(peak) < 120 << 10, peak  # KiB
    out = busybox_env.berth("run", "--rm", "big", "wc", "-c", "/big.bin", check=True).stdout
    assert out.split()[0] == str(size)


def test_run_after_volume_and_healthcheck_leaves_no_volume_and_no_health_runner(
    busybox_env, tmp_path
):
    # Like Docker's builder: what a RUN writes under a VOLUME path is not kept, the
    # step's anonymous volume goes with its container, and no health check runs for it.
    ctx = write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nVOLUME /data\nHEALTHCHECK CMD true\n"
            "RUN echo x > /data/x && echo y > /y\n"
        },
    )
    p = busybox_env.berth("build", "-q", "-t", "vol", str(ctx))
    assert p.returncode == 0, p.stderr
    eng = busybox_env.engine()
    assert eng.list_volumes() == []
    from engine import helpers

    assert helpers.all_helpers(eng) == []  # no health-check runner was started for the step
    assert busybox_env.berth("run", "--rm", "vol", "ls", "/data", check=True).stdout == ""


def test_a_named_context_keeps_its_own_dockerignore(busybox_env, tmp_path):
    # BuildKit applies a local named context's .dockerignore: excluded files are not sent.
    extra = write_tree(
        tmp_path / "extra", {".dockerignore": "secret\n", "secret": "s3cret\n", "ok": "ok\n"}
    )
    ctx = write_tree(
        tmp_path / "ctx",
        {"Dockerfile": 'FROM busybox\nCOPY --from=extra . /d/\nCMD ["ls", "-A", "/d"]\n'},
    )
    p = busybox_env.berth(
        "build", "-q", "-t", "named", "--build-context", f"extra={extra}", str(ctx)
    )
    assert p.returncode == 0, p.stderr
    assert busybox_env.berth("run", "--rm", "named", check=True).stdout.split() == [
        ".dockerignore", "ok",
    ]  # fmt: skip
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY --from=extra secret /s\n")
    p = busybox_env.berth("build", "--build-context", f"extra={extra}", str(ctx))
    assert p.returncode == 1 and "excluded by .dockerignore" in p.stderr


def test_concurrent_builds_in_one_process_keep_each_others_containers(busybox_env, tmp_path):
    # Threads of one process (a worker running builds side by side) share a pid: the
    # orphan sweep of one build must not take the other's running RUN container.
    from engine.build.options import BuildOptions

    first = write_tree(
        tmp_path / "a",
        {"Dockerfile": "FROM busybox\nRUN echo a-started && sleep 3 && echo a-done\n"},
    )
    second = write_tree(tmp_path / "b", {"Dockerfile": "FROM busybox\nRUN echo b-ran\n"})
    started = threading.Event()
    results: dict[str, object] = {}

    def out_a(data: bytes) -> None:
        if b"a-started" in data:
            started.set()

    def build(name: str, ctx: Path, out) -> None:
        try:
            opts = BuildOptions(context=str(ctx), tags=[f"{name}:1"])
            results[name] = busybox_env.engine().build_image(opts, None, out)
        except BaseException as e:  # noqa: BLE001 - reported below
            results[name] = e

    t = threading.Thread(target=build, args=("a", first, out_a))
    t.start()
    try:
        assert started.wait(60)
        build("b", second, None)
    finally:
        t.join(120)
    assert not isinstance(results["a"], BaseException), results["a"]
    assert not isinstance(results["b"], BaseException), results["b"]
    assert busybox_env.engine().containers(all=True) == []
