"""crun gets the seccomp program it compiled before (annotation run.oci.seccomp_bpf_data):
what the profile blocks stays blocked, for run and exec, and runc still gets the JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

DENIED = "Operation not permitted"


def _profile(tmp_path: Path, name: str, deny: list[str]) -> Path:
    """Allow everything but ``deny`` (EPERM)."""
    f = tmp_path / name
    rules = [{"names": deny, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}] if deny else []
    f.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
    return f


def _mkdir(env, profile: Path, *extra: str):
    return env.berth(
        "run", "--rm", "--security-opt", f"seccomp={profile}", *extra,
        "busybox", "mkdir", "/tmp/made",
    )  # fmt: skip


def _cache(env) -> list[Path]:
    d = env.run / "seccomp"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def test_cached_program_still_blocks_what_the_profile_blocks(busybox_env, tmp_path):
    deny = _profile(tmp_path, "deny.json", ["mkdir", "mkdirat"])
    first = _mkdir(busybox_env, deny)  # crun compiles; we keep its program
    assert first.returncode != 0 and DENIED in first.stderr, first.stderr
    assert len(_cache(busybox_env)) == 1
    second = _mkdir(busybox_env, deny)  # crun loads the kept program
    assert second.returncode != 0 and DENIED in second.stderr, second.stderr

    # A running container made from the cache: config.json carries the program,
    # the kernel says a filter is on, and exec (crun applies seccomp.bpf) is blocked too.
    cid = busybox_env.berth(
        "run", "-d", "--security-opt", f"seccomp={deny}", "busybox", "sleep", "30", check=True
    ).stdout.strip()
    try:
        spec = json.loads((busybox_env.run / "containers" / cid / "config.json").read_text())
        assert spec["annotations"].get("run.oci.seccomp_bpf_data")
        assert spec["linux"]["seccomp"]["syscalls"][0]["names"] == ["mkdir", "mkdirat"]
        status = busybox_env.berth("exec", cid, "cat", "/proc/1/status", check=True).stdout
        assert "Seccomp:\t2" in status
        ex = busybox_env.berth("exec", cid, "mkdir", "/tmp/x")
        assert ex.returncode != 0 and DENIED in ex.stderr, ex.stderr
    finally:
        busybox_env.berth("rm", "-f", cid, check=True)

    # Another profile is another program: nothing of the first one leaks into it.
    allow = _profile(tmp_path, "allow.json", ["swapon"])
    for _ in range(2):
        ok = _mkdir(busybox_env, allow)
        assert ok.returncode == 0, ok.stderr
    assert len(_cache(busybox_env)) == 2


def test_damaged_cache_entry_is_ignored(busybox_env, tmp_path):
    deny = _profile(tmp_path, "deny.json", ["mkdir", "mkdirat"])
    assert DENIED in _mkdir(busybox_env, deny).stderr
    (entry,) = _cache(busybox_env)
    entry.write_bytes(b"\x06\x00\x00\x00")  # not a whole BPF instruction: never handed on
    p = _mkdir(busybox_env, deny)
    assert p.returncode != 0 and DENIED in p.stderr, p.stderr
    assert len(entry.read_bytes()) % 8 == 0  # replaced by what crun compiled


@pytest.mark.skipif(not shutil.which("runc"), reason="runc not installed")
def test_runc_gets_the_profile_and_no_annotation(busybox_env, tmp_path):
    deny = _profile(tmp_path, "deny.json", ["mkdir", "mkdirat"])
    assert DENIED in _mkdir(busybox_env, deny).stderr  # crun: fills the cache
    p = _mkdir(busybox_env, deny, "--runtime", "runc")
    assert p.returncode != 0 and DENIED in p.stderr, p.stderr
    cid = busybox_env.berth(
        "run", "-d", "--runtime", "runc", "--security-opt", f"seccomp={deny}",
        "busybox", "sleep", "30", check=True,
    ).stdout.strip()  # fmt: skip
    try:
        spec = json.loads((busybox_env.run / "containers" / cid / "config.json").read_text())
        assert "run.oci.seccomp_bpf_data" not in spec.get("annotations", {})
        assert spec["linux"]["seccomp"]["syscalls"][0]["names"] == ["mkdir", "mkdirat"]
    finally:
        busybox_env.berth("rm", "-f", cid, check=True)


def test_cached_program_crun_rejects_is_dropped_and_compiled_again(busybox_env, tmp_path):
    """A whole-instruction entry that is not a program the kernel takes (a BPF
    filter must end in a return): crun refuses it, the run still works with what
    crun compiles from the JSON, and the entry is replaced by that program."""
    deny = _profile(tmp_path, "deny.json", ["mkdir", "mkdirat"])
    assert DENIED in _mkdir(busybox_env, deny).stderr
    (entry,) = _cache(busybox_env)
    good = entry.read_bytes()
    garbage = b"\xff" * 64  # 8 instructions of an unknown opcode
    entry.write_bytes(garbage)
    p = _mkdir(busybox_env, deny)
    assert p.returncode != 0 and DENIED in p.stderr, p.stderr  # still blocked, still ran
    assert entry.read_bytes() == good
    ok = _mkdir(busybox_env, _profile(tmp_path, "allow.json", []))
    assert ok.returncode == 0, ok.stderr
    # Nothing of the failed create is left over: a detached run works and rm is clean.
    entry.write_bytes(garbage)
    cid = busybox_env.berth(
        "run", "-d", "--security-opt", f"seccomp={deny}", "busybox", "sleep", "30", check=True
    ).stdout.strip()
    try:
        spec = json.loads((busybox_env.run / "containers" / cid / "config.json").read_text())
        assert "run.oci.seccomp_bpf_data" not in spec.get("annotations", {})
        assert busybox_env.berth("exec", cid, "mkdir", "/tmp/x").returncode != 0
    finally:
        busybox_env.berth("rm", "-f", cid, check=True)
    assert entry.read_bytes() == good


def test_kept_program_is_whole_despite_short_writes(tmp_path, monkeypatch):
    import os

    from engine.runtime import seccomp_cache

    prog = bytes(range(64))
    compiled = tmp_path / "seccomp.bpf"
    compiled.write_bytes(prog)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:8])))
    seccomp_cache.remember(tmp_path / "run", "k", compiled)
    assert (tmp_path / "run" / "seccomp" / "k").read_bytes() == prog


def test_two_threads_keeping_a_program_never_publish_a_mix(tmp_path, monkeypatch):
    """Threads of one process (a Celery pool) share a pid: each writer still gets a
    temporary file of its own, so what is published is one program, whole."""
    import os
    import threading

    from engine.runtime import seccomp_cache

    a, b = tmp_path / "a.bpf", tmp_path / "b.bpf"
    a.write_bytes(b"A" * 16)
    b.write_bytes(b"B" * 64)
    a_started, b_done = threading.Event(), threading.Event()
    real_write = os.write

    def write(fd, data):
        if bytes(data[:1]) == b"A" and not a_started.is_set():
            a_started.set()
            b_done.wait(5)  # B writes and publishes while A is half-way
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    run = tmp_path / "run"
    t = threading.Thread(target=seccomp_cache.remember, args=(run, "k", a))
    t.start()
    assert a_started.wait(5)
    seccomp_cache.remember(run, "k", b)
    b_done.set()
    t.join()
    assert (run / "seccomp" / "k").read_bytes() in (b"A" * 16, b"B" * 64)
    assert [p.name for p in (run / "seccomp").iterdir()] == ["k"]  # no temp file left
