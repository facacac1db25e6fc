"""Named network namespaces under ``/run/netns``, made without netlink.

``berth run --network none`` has a ~50 ms budget end to end and importing
pyroute2 alone costs ~200 ms, so the namespace every container gets is made
here with plain syscalls (ctypes: unshare, mount, umount2, setns) in one
short-lived thread. The result is exactly what ``ip netns add`` and pyroute2's
``netns.create`` produce -- an nsfs bind mount on ``/run/netns/<name>`` -- so
``ip netns exec`` and ``IPRoute(netns=name)`` work on it afterwards.

Nothing here ever calls ``setns``/``unshare`` in a thread of the caller: the
caller may be threaded (Celery, the web process), and a namespace switch
applies to one thread only, which would leave the process half in and half
out. A new namespace is made by a thread started for it alone, which ends
right after; running code inside a namespace happens in a forked child.
"""

from __future__ import annotations

# This module is on the `berth run` hot path, so imports are kept lean: the C
# ``_socket`` rather than ``socket`` (whose Python layer pulls in enums and
# selectors), no ``re``, and ``pickle`` only inside run_in_netns; ~2 ms each.
import _socket
import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from engine.errors import Conflict, EngineError, HostNotReady, InvalidArgument, NotFound

__all__ = [
    "NETNS_DIR",
    "create_netns",
    "delete_netns",
    "list_netns",
    "loopback_state",
    "netns_inode",
    "netns_path",
    "run_in_netns",
]

T = TypeVar("T")

# The directory iproute2 and pyroute2 use; sharing it is the point.
NETNS_DIR = Path("/run/netns")

# <linux/sched.h>, <linux/mount.h>, <linux/sockios.h>, <linux/if.h>
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# struct ifreq is 40 bytes on 64-bit Linux: 16-byte name, then a union whose
# first member we use is ``short ifr_flags``.
_IFREQ = struct.Struct("16sh22x")

# A first character that is not '.' or '-' keeps "." / ".." / hidden files and
# things that look like options to `ip netns` out; 255 is NAME_MAX. A set
# rather than a regex: `re` is another import on the hot path.
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

# The shared-mount setup is needed once per process (it survives until
# reboot); skipping it afterwards saves a syscall and a propagation walk.
_dir_ready = False

_STEPS = {
    1: "unshare(CLONE_NEWNET)",
    2: "bring lo up",
    3: "bind-mount /proc/thread-self/ns/net",
}


def _check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 255
        or name[0] in ".-"
        or not _NAME_CHARS.issuperset(name)
    ):
        raise InvalidArgument(
            f"invalid network namespace name {name!r}: use 1-255 of [A-Za-z0-9_.-], "
            "not starting with '.' or '-'",
            obj=str(name),
        )


def netns_path(name: str) -> Path:
    """The path of the named namespace (whether or not it exists)."""
    _check_name(name)
    return NETNS_DIR / name


def netns_inode(path: Path | str) -> int:
    """The nsfs inode of a namespace file: equal inodes mean the same namespace."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist", obj=str(path)) from None


def list_netns(prefix: str = "") -> list[str]:
    """Names in ``/run/netns`` starting with ``prefix``, sorted (for the orphan check)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def _mount(src: bytes | None, dst: bytes, fstype: bytes | None, flags: int) -> int:
    """mount(2); returns 0 or the errno."""
    if _libc.mount(src, dst, fstype, flags, None) != 0:
        return ctypes.get_errno()
    return 0


def _os_error(what: str, err: int, obj: str) -> EngineError:
    cls = HostNotReady if err in (errno.EPERM, errno.EACCES) else EngineError
    return cls(f"{what}: {os.strerror(err)} (errno {err})", obj=obj, errno=err)


def _ensure_netns_dir() -> None:
    """Make ``/run/netns`` a shared mount point, as iproute2 does.

    Shared, so that a namespace mounted later shows up in mount namespaces
    cloned earlier (and the reverse), and so that unmounting it in one place
    unmounts it everywhere; otherwise a container's mount namespace could pin
    a deleted network namespace alive.
    """
    global _dir_ready
    if _dir_ready:
        return
    NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = bytes(NETNS_DIR)
    err = _mount(b"none", target, b"none", MS_SHARED | MS_REC)
    if err == errno.EINVAL:
        # Not a mount point yet. Serialise with other Berth processes doing the
        # same so we don't stack two bind mounts (harmless but untidy); a
        # racing `ip netns add` may still stack one, which is also harmless.
        fd = os.open(NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            err = _mount(b"none", target, b"none", MS_SHARED | MS_REC)
            if err == errno.EINVAL:  # still not a mount point: we make it one
                err = _mount(target, target, b"none", MS_BIND | MS_REC)
                if err == 0:
                    err = _mount(b"none", target, b"none", MS_SHARED | MS_REC)
        finally:
            os.close(fd)  # drops the flock
    if err:
        raise _os_error(f"cannot make {NETNS_DIR} a shared mount point", err, str(NETNS_DIR))
    _dir_ready = True


def _set_lo_up() -> None:
    """Bring ``lo`` up in the current network namespace with two ioctls."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        req = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        flags = _IFREQ.unpack(req)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))
    finally:
        s.close()


def _lo_is_up() -> bool:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        req = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
    finally:
        s.close()
    return bool(_IFREQ.unpack(req)[1] & IFF_UP)


def _create_in_thread(target: bytes, lo_up: bool) -> tuple[int, int]:
    """unshare(CLONE_NEWNET) in a thread made for it, which ends right after.

    A network namespace belongs to a task (thread), not to the process: the new
    namespace is this one thread's, pinned by the bind mount of
    ``/proc/thread-self/ns/net``; the thread then returns to its old namespace
    and ends. No other thread of the process ever changes namespace. Cheaper than forking the (large) engine
    process, which cost ~3 ms here. Returns (failed step, errno); (0, 0) is success.
    """
    import threading

    report = [(1, errno.EIO)]

    def body() -> None:
        step, err = 1, 0
        # Go back before ending, too: a finished thread lingers in /proc/self/task
        # for a moment, and nothing should see it in another namespace meanwhile.
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
            else:
                if lo_up:
                    step = 2
                    try:
                        _set_lo_up()  # the socket is made after unshare: in the new netns
                    except OSError as e:
                        err = e.errno or errno.EIO
                if not err:
                    step = 3
                    err = _mount(b"/proc/thread-self/ns/net", target, b"none", MS_BIND)
                _libc.setns(home, CLONE_NEWNET)
        finally:
            os.close(home)
        report[0] = (step if err else 0, err)

    t = threading.Thread(target=body, name="berth-netns", daemon=True)
    t.start()
    t.join()
    return report[0]


def _reap(pid: int) -> int:
    """waitpid that survives EINTR and signal handlers raising; returns the status."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _undo(path: Path) -> None:
    """Remove a namespace file and any mounts on it; each step tolerates 'not there'."""
    raw = bytes(path)
    # Loop: an interrupted create plus a retry (or a racing iproute2) can stack
    # mounts; unlink fails with EBUSY while any of them is left.
    for _ in range(16):
        if _libc.umount2(raw, MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
                break
            raise _os_error(f"cannot unmount network namespace {path}", err, str(path))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _os_error(f"cannot remove network namespace {path}", e.errno or 0, str(path)) from e


def create_netns(name: str, lo_up: bool = True) -> Path:
    """Create the named network namespace at ``/run/netns/<name>`` and return its path.

    ``lo`` is brought up unless ``lo_up`` is false. An existing name raises
    Conflict (also a stale file from a crash: ``delete_netns`` heals that). On
    any failure nothing is left behind.
    """
    path = netns_path(name)
    _ensure_netns_dir()
    try:
        # Mode 0 and O_EXCL like iproute2: the file is only a mount target, and
        # O_EXCL is what makes a concurrent create of the same name lose cleanly.
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except FileExistsError:
        raise Conflict(f"network namespace {name} already exists", obj=name) from None
    except OSError as e:
        raise _os_error(f"cannot create {path}", e.errno or 0, name) from e

    done = False
    try:
        step, err = _create_in_thread(bytes(path), lo_up)
        if step:
            raise _os_error(
                f"cannot create network namespace {name}: {_STEPS.get(step, step)}", err, name
            )
        done = True
        return path
    finally:
        if not done:
            try:
                _undo(path)
            except EngineError:
                pass  # the original error is the one worth reporting


def delete_netns(name: str) -> None:
    """Unmount and remove the named namespace; a missing one is fine (for retries).

    MNT_DETACH so that a process still inside (or holding an fd) does not make
    this fail: the namespace lives on until its last user goes, as with
    ``ip netns delete``.
    """
    _undo(netns_path(name))


class _ChildFailure(EngineError):
    """An exception from run_in_netns's child that could not be sent as itself."""


def _run_child(nsfd: int, fn: Callable[[], Any], wfd: int, pickle: ModuleType) -> None:
    """Runs in the forked child of run_in_netns; never returns.

    ``pickle`` comes from the parent: importing after fork could wait forever
    on an import lock another thread of the parent held at fork time.
    """
    code = 0
    try:
        try:
            if _libc.setns(nsfd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise _os_error("setns into network namespace failed", err, str(nsfd))
            msg: tuple[str, Any] = ("ok", fn())
        except Exception as e:
            msg = ("err", e)
        except BaseException as e:  # SystemExit etc. must not end the parent
            msg = ("err", _ChildFailure(f"{type(e).__name__}: {e}"))
        try:
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            what = "result" if msg[0] == "ok" else f"exception {msg[1]!r}"
            data = pickle.dumps(("err", _ChildFailure(f"cannot send {what} back: {e}")))
        view = memoryview(data)
        while view:
            view = view[os.write(wfd, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def run_in_netns(path: Path | str, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside the network namespace at ``path`` and return its result.

    ``fn`` runs in a forked child (never setns in this process: it may be
    threaded), so its result and exceptions travel back pickled; side effects on
    Python state in the child are lost. Keep ``fn`` small: in the child, locks
    held by other threads of the parent at fork time stay held.
    """
    import pickle

    try:
        nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist", obj=str(path)) from None
    except OSError as e:
        raise _os_error(f"cannot open network namespace {path}", e.errno or 0, str(path)) from e
    try:
        rfd, wfd = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                _run_child(nsfd, fn, wfd, pickle)
            os.close(wfd)
            wfd = -1
            try:
                data = _read_all(rfd)  # read before waiting: big results fill the pipe
            finally:
                status = _reap(pid)
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
    finally:
        os.close(nsfd)
    if not data:
        raise EngineError(
            f"process in network namespace {path} died without a result (wait status {status:#x})",
            obj=str(path),
        )
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def loopback_state(path: Path | str) -> bool:
    """Whether ``lo`` is up inside the namespace at ``path``."""
    return run_in_netns(path, _lo_is_up)
