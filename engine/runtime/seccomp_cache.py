"""Compiled seccomp programs, kept so crun does not compile the profile on every create.

crun turns ``linux.seccomp`` (JSON) into a BPF program with libseccomp on every
``crun create``: ~5-10 ms of the ~35 ms a create takes here. It also writes the
program it loaded to ``<crun root>/<id>/seccomp.bpf`` (that is what ``crun exec``
applies later), and it accepts a ready program in the annotation
``run.oci.seccomp_bpf_data`` (base64), in which case it skips the compilation and
loads that program instead (with the flags from ``linux.seccomp``).

So after a create that compiled, we keep that file under ``<run>/seccomp/<key>``;
the next create with the same profile passes it in the annotation. ``key`` hashes
everything the program depends on: the exact ``linux.seccomp`` section, the crun
binary and the libseccomp library (path, size, mtime, inode: an upgrade changes
them) and the kernel release. The run directory is normally a tmpfs, so a reboot
empties the cache anyway.

Only crun reads the annotation. runc ignores it and compiles ``linux.seccomp``,
which stays in config.json for every runtime: the annotation only ever replaces
crun's compilation of that same section by its earlier result.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

ANNOTATION = "run.oci.seccomp_bpf_data"
_FORMAT = "berth-seccomp-bpf-v1"
_MAX_ENTRIES = 64  # one per distinct profile (caps, --security-opt seccomp=FILE)
_LIB_DIRS = ("/lib64", "/usr/lib64", "/usr/lib", "/lib")
_lib_ids: str | None = None


def _file_id(path: str) -> str:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return f"{path}:missing"
    return f"{real}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _libseccomp_ids() -> str:
    """Identity of every libseccomp.so.2 the dynamic linker may give crun (its
    SONAME link in the multiarch and plain library dirs; an upgrade changes the
    file it points to); looked up once per process.

    Named paths, not a glob over /lib/* and /usr/lib/*: listing those dirs
    costs ~10 ms, on every `berth run` of a process that starts fresh."""
    global _lib_ids
    if _lib_ids is None:
        arch = getattr(sys.implementation, "_multiarch", "")  # x86_64-linux-gnu
        dirs = [f"{d}/{arch}" for d in ("/lib", "/usr/lib") if arch] + list(_LIB_DIRS)
        links = (f"{d}/libseccomp.so.2" for d in dirs)
        _lib_ids = ";".join(sorted({_file_id(p) for p in links if os.path.exists(p)}))
    return _lib_ids


def cache_key(runtime_path: str, seccomp: dict) -> str:
    """The name of the cached program for this profile and this crun."""
    h = hashlib.sha256()
    for part in (
        _FORMAT,
        _file_id(runtime_path),
        _libseccomp_ids(),
        os.uname().release,
        json.dumps(seccomp, sort_keys=True, separators=(",", ":")),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _dir(run_dir: Path) -> Path:
    return run_dir / "seccomp"


def _valid(prog: bytes) -> bool:
    # A classic BPF program is an array of 8-byte sock_filter; the kernel takes at
    # most 4096 of them. Anything else is a torn or foreign file: ignore it.
    return 0 < len(prog) <= 4096 * 8 and len(prog) % 8 == 0


def lookup(run_dir: Path, key: str) -> str | None:
    """The cached program for ``key`` as the annotation's value (base64), or None."""
    try:
        prog = (_dir(run_dir) / key).read_bytes()
    except OSError:
        return None
    return base64.b64encode(prog).decode("ascii") if _valid(prog) else None


def remember(run_dir: Path, key: str, compiled: Path) -> None:
    """Keep the program crun compiled (``<crun root>/<id>/seccomp.bpf``) under ``key``.

    Best effort: without a cache entry the next create simply compiles again.
    Written to a temporary name and renamed, so a reader never sees half a program.
    """
    try:
        prog = compiled.read_bytes()
    except OSError:
        return
    if not _valid(prog):
        return
    import tempfile  # only on a miss: the hot path (lookup) stays lean

    d = _dir(run_dir)
    tmp = ""
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A name of its own per writer: the pid alone is shared by the threads of
        # one process (a Celery thread pool), and two writers of one temp file
        # could publish a mix or a truncated program. mkstemp makes it 0600.
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=d)
        try:
            view = memoryview(prog)
            while view:  # os.write may write less than asked (signals, full disk)
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, d / key)
        tmp = ""
        _prune(d)
    except OSError:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def forget(run_dir: Path, key: str) -> None:
    """Drop the entry for ``key``: crun refused it (a damaged file, or a program the
    kernel no longer takes). Without this every later create with that profile
    would fail the same way until the run directory is emptied (a reboot)."""
    try:
        os.unlink(_dir(run_dir) / key)
    except OSError:
        pass


def _prune(d: Path) -> None:
    """Keep the newest entries only (profiles change rarely; this bounds the directory)."""
    entries = [e for e in os.scandir(d) if not e.name.startswith(".")]
    if len(entries) <= _MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for e in entries[: len(entries) - _MAX_ENTRIES]:
        try:
            os.unlink(e.path)
        except OSError:
            pass
