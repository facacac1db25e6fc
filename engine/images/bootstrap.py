"""Base images built from the host, because no registry on the internet is
reachable: a busybox image from Debian's ``busybox-static`` and a Debian
image from ``debootstrap``.

The busybox image is reproducible: the same ``/bin/busybox`` gives the same
tar (fixed mtimes, sorted entries, numeric owners) and the same config (its
``created`` is the binary's mtime), hence the same image ID, so running the
bootstrap again only re-tags.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import EngineError, HostNotReady
from engine.images import layers as layer_tars
from engine.images.store import HOST_ARCH, ImageRecord, ImageStore

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_PACKAGE = "busybox-static"

# The accounts of Docker Hub's busybox image (uids/gids match it).
_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
_SHADOW = "".join(f"{line.split(':')[0]}:*:10933:0:99999:7:::\n" for line in _PASSWD.splitlines())

PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a program interpreter
    (static or static-pie): it can run in an otherwise empty rootfs."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            f.seek(0x20)
            (phoff,) = struct.unpack(endian + "Q", f.read(8))
            f.seek(0x36)
        else:
            f.seek(0x1C)
            (phoff,) = struct.unpack(endian + "I", f.read(4))
            f.seek(0x2A)
        phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == PT_INTERP:
                return False
    return True


def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def _busybox_version(busybox: Path) -> str:
    proc = subprocess.run([str(busybox)], capture_output=True, text=True)
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    return first[0].strip() if first else "BusyBox"


def build_busybox_rootfs(dest: Path, busybox: Path, mtime: int) -> None:
    """Lay out a busybox userland in the empty directory ``dest``."""
    for d, mode in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr/sbin", 0o755),
        ("var/spool/mail", 0o755),
        ("var/www", 0o755),
    ]:
        (dest / d).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / d, mode)  # mkdir's mode is filtered by the umask; chmod is not
    shutil.copyfile(busybox, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    # Every applet (sbin ones too, as in Docker Hub's image) lives in /bin,
    # a relative link so it resolves inside any rootfs.
    for applet in _busybox_applets(busybox):
        os.symlink("busybox", dest / "bin" / applet)
    for name, text, mode in [
        ("passwd", _PASSWD, 0o644),
        ("group", _GROUP, 0o644),
        ("shadow", _SHADOW, 0o640),
    ]:
        (dest / "etc" / name).write_text(text)
        os.chmod(dest / "etc" / name, mode)
    # Owners and times are part of the layer digest: pin them.
    as_root = os.geteuid() == 0
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames + ["."]:
            p = os.path.join(dirpath, name)
            if as_root:
                os.lchown(p, 0, 0)
            os.utime(p, (mtime, mtime), follow_symlinks=False)


def bootstrap_busybox(
    store: ImageStore, ref: str = "busybox:latest", *, busybox: Path = Path("/bin/busybox")
) -> ImageRecord:
    """Build (or re-tag) the busybox image from the host's static busybox."""
    if not busybox.is_file():
        raise HostNotReady(
            f"{busybox} is missing: install the {BUSYBOX_PACKAGE} package (apt-get install {BUSYBOX_PACKAGE})",
            obj=str(busybox),
        )
    if not is_static_elf(busybox):
        raise HostNotReady(
            f"{busybox} is not a static executable: install the {BUSYBOX_PACKAGE} package "
            f"(Debian's plain busybox is dynamically linked)",
            obj=str(busybox),
        )
    mtime = int(busybox.stat().st_mtime)
    created = _rfc3339(mtime)
    version = _busybox_version(busybox)
    store.blobs.ensure_dirs()
    with tempfile.TemporaryDirectory(dir=store.blobs.tmp, prefix="bootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        build_busybox_rootfs(rootfs, busybox, mtime)
        layer = Path(tmp) / "layer.tar"
        with open(layer, "wb") as out:
            layer_tars.tar_dir(rootfs, out, mtime=mtime)
        config = {
            "architecture": HOST_ARCH,
            "os": "linux",
            "created": created,
            "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
            "history": [
                {
                    "created": created,
                    "created_by": f"berth bootstrap: {version} from {BUSYBOX_PACKAGE} ({busybox})",
                    "comment": f"{BUSYBOX_PACKAGE} {busybox}",
                },
                {"created": created, "created_by": 'CMD ["sh"]', "empty_layer": True},
            ],
        }
        return store.add_image([layer], config, [ref])


def bootstrap_debian(
    store: ImageStore,
    ref: str = "debian:bookworm",
    include: Sequence[str] = (),
    *,
    suite: str = "bookworm",
    mirror: str = "http://deb.debian.org/debian",
) -> ImageRecord:
    """A minimal Debian image made by ``debootstrap --variant=minbase`` (slow: minutes)."""
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise HostNotReady(
            "debootstrap is not installed: install debootstrap (apt-get install debootstrap)"
        )
    store.blobs.ensure_dirs()
    with tempfile.TemporaryDirectory(dir=store.blobs.tmp, prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [debootstrap, "--variant=minbase"]
        if include:
            cmd.append("--include=" + ",".join(include))
        cmd += [suite, str(rootfs), mirror]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            # debootstrap mounts /proc, /sys and device binds in its target and leaves
            # them when it fails or is killed (Ctrl-C): detach them before anything
            # below is deleted, or the deletion would reach through them.
            from engine.build.rootfs import detach_mounts_below

            detach_mounts_below(rootfs)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise EngineError(f"debootstrap {suite} failed: " + " | ".join(tail), obj=ref)
        # The runtime mounts /dev, /proc and /sys; apt caches only add weight.
        for sub in ("dev", "proc", "sys", "var/cache/apt/archives", "var/lib/apt/lists", "tmp"):
            d = rootfs / sub
            if d.is_dir():
                for child in d.iterdir():
                    if child.name in ("lock", "partial"):
                        continue  # apt expects these to exist
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        layer = Path(tmp) / "layer.tar"
        with open(layer, "wb") as out:
            layer_tars.tar_dir(rootfs, out)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        config = {
            "created": created,
            "config": {"Env": [DEFAULT_PATH], "Cmd": ["bash"]},
            "history": [
                {
                    "created": created,
                    "created_by": f"berth bootstrap: debootstrap --variant=minbase {suite} {mirror}",
                },
                {"created": created, "created_by": 'CMD ["bash"]', "empty_layer": True},
            ],
        }
        return store.add_image([layer], config, [ref])


def apt_mirror(default: str = "http://deb.debian.org/debian") -> str:
    """The Debian mirror this host's apt uses (deb822 ``.sources`` or one-line
    ``.list`` files), so debootstrap reaches the same, known-reachable mirror."""
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.glob("*.sources")) + sorted(d.glob("*.list"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            words = line.split()
            if line.startswith("URIs:"):
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if "security" not in uri and "://" in uri:
                    return uri.rstrip("/")
    return default


def cached_debian_archive(
    cache_dir: Path,
    ref: str,
    include: Sequence[str] = (),
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
) -> Path:
    """A ``save`` archive of a debootstrapped image tagged ``ref``, made once and
    kept in ``cache_dir`` (named after the suite, the packages and the mirror);
    import it into any engine with ``load``. Concurrent callers wait for the
    first one (a lock file); an interrupted run leaves no archive behind."""
    import hashlib

    from engine.images.archive import save
    from engine.locks import file_lock

    mirror = mirror or apt_mirror()
    tag = hashlib.sha256(f"{suite} {sorted(include)} {mirror} {ref}".encode()).hexdigest()[:12]
    final = Path(cache_dir) / f"debian-{suite}-{tag}.tar"
    if final.is_file():
        return final
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{final.name}.lock"):
        if final.is_file():
            return final
        for old in cache_dir.glob(".*-[0-9]*"):  # left by a run that was killed
            pid = old.name.rsplit("-", 1)[1]
            if (
                old.name.startswith((".work-", f".{final.name}.tmp-"))
                and not Path(f"/proc/{pid}").exists()
            ):
                if old.is_dir():
                    _remove_work_dir(old)
                else:
                    old.unlink(missing_ok=True)
        work = cache_dir / f".work-{os.getpid()}"
        _remove_work_dir(work)
        try:
            store = ImageStore(work / "images", work / "locks")
            bootstrap_debian(store, ref, include, suite=suite, mirror=mirror)
            tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}"
            with open(tmp, "wb") as out:
                save(store, [ref], out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            _remove_work_dir(work)
    return final


def _remove_work_dir(work: Path) -> None:
    """A work dir, after detaching what a killed debootstrap left mounted in it."""
    from engine.build.rootfs import detach_mounts_below

    if work.is_dir():
        detach_mounts_below(work)
    shutil.rmtree(work, ignore_errors=True)
