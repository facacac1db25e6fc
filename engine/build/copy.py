"""COPY and ADD: find the sources, hash them for the cache, write them into an image.

Sources are read from a *source root* (the build context, a named context or
another stage's mounted filesystem) only through fds opened inside it:
parent directories that are symlinks resolve inside the source root, and the
entries themselves are never followed, so a symlink that points out of the
context is copied as a symlink and nothing outside is ever read. Writes go to
the image's mounted root through :mod:`engine.safepath` helpers (the image's
own symlinks are followed *inside the image*, never on the host).

Docker's rules: a directory source copies its *contents*; several sources (or
a wildcard) need a destination ending in ``/``; a file copied to an existing
directory or to ``dest/`` keeps its name; a relative destination is under
WORKDIR; files belong to root (or ``--chown``) and keep their mode (or get
``--chmod``) and mtime. ADD also unpacks local tar archives (plain, gzip,
bzip2, xz) with the layer extractor's safety, and downloads URLs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import InvalidArgument, InvalidState, NotFound
from engine.safepath import clean_path, open_in_root, open_parent_in_root, wrap_oserror

Excluded = Callable[[str], bool]
_WILD = set("*?[")
_BUF = 1 << 20


@dataclass(frozen=True)
class Source:
    """One matched source: its path in the source root and how it lands under dest."""

    rel: str  # cleaned path in the source root ("" = the root itself)
    is_dir: bool


def _lstat_at(rfd: int, rel: str) -> os.stat_result | None:
    """lstat of ``rel`` with its parents resolved inside the root (None if absent)."""
    try:
        fd = open_in_root(rfd, rel, os.O_PATH | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise wrap_oserror(e, rel) from None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def real_rel(rfd: int, rel: str) -> str:
    """``rel`` with its parent directories resolved inside the root (the last
    component as it is): the path a file really has in the context, which is
    what ``.dockerignore`` applies to (``alias/key`` with ``alias -> secrets``
    is ``secrets/key``, excluded by ``secrets``)."""
    if "/" not in rel:
        return rel  # its parent is the root itself
    fd = open_in_root(rfd, rel, os.O_PATH | os.O_NOFOLLOW)
    try:
        full = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    real = os.path.relpath(full, os.readlink(f"/proc/self/fd/{rfd}"))
    return "" if real == "." else real


def find_sources(rfd: int, patterns: list[str], excluded: Excluded, what: str) -> list[Source]:
    """Expand the source patterns (Go's filepath.Match per component). Each
    source is named by its real path in the root (see :func:`real_rel`)."""
    out: list[Source] = []
    for pat in patterns:
        if pat.startswith("../") or pat == ".." or "/../" in pat:
            # Docker refuses to climb out of the context, even lexically.
            if posixpath.normpath(pat).startswith(".."):
                raise InvalidArgument(
                    f"{what}: forbidden path outside the build context: {pat}", obj=pat
                )
        rel = clean_path(pat)
        comps = rel.split("/") if rel else []
        if not any(c in _WILD for c in rel):
            st = _lstat_at(rfd, rel)
            real = real_rel(rfd, rel) if st is not None else rel
            if st is None or (rel and (excluded(rel) or excluded(real))):
                raise NotFound(
                    f"{what}: file not found in build context or excluded by .dockerignore:"
                    f" stat {pat}: file does not exist",
                    obj=pat,
                )
            out.append(Source(real, stat.S_ISDIR(st.st_mode)))
            continue
        found = sorted({real for r in _glob(rfd, "", comps, excluded)
                        if not excluded(real := real_rel(rfd, r))})  # fmt: skip
        if not found:
            raise NotFound(
                f"{what}: no source files were specified: {pat!r} matches no file in the"
                " build context (or they are excluded by .dockerignore)",
                obj=pat,
            )
        for r in found:
            st = _lstat_at(rfd, r)
            out.append(Source(r, bool(st and stat.S_ISDIR(st.st_mode))))
    return out


def _glob(rfd: int, prefix: str, comps: list[str], excluded: Excluded) -> Iterator[str]:
    if not comps:
        yield prefix
        return
    head, rest = comps[0], comps[1:]
    if not any(c in _WILD for c in head):
        path = posixpath.join(prefix, head) if prefix else head
        if _lstat_at(rfd, path) is not None:
            yield from _glob(rfd, path, rest, excluded)
        return
    try:
        dfd = open_in_root(rfd, prefix, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        names = sorted(os.listdir(dfd))
    finally:
        os.close(dfd)
    for name in names:
        if fnmatch.fnmatchcase(name, head):
            path = posixpath.join(prefix, name) if prefix else name
            if excluded(path):
                continue
            if rest:
                st = _lstat_at(rfd, path)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    continue
            yield from _glob(rfd, path, rest, excluded)


# -- walking a source ----------------------------------------------------------------------


@dataclass
class Entry:
    rel: str  # path in the source root
    dest: str  # path in the image (cleaned, no leading "/")
    st: os.stat_result
    link: str = ""
    digest: str = ""  # a regular file's sha256 as hashed for the cache key


def rebased(entries: list[Entry], dest: str) -> list[Entry]:
    """Entries walked with dest "" placed under ``dest`` (the same stat and digest:
    what is written is what was hashed)."""
    return [
        dataclasses.replace(e, dest=posixpath.join(dest, e.dest) if e.dest else dest)
        for e in entries
    ]


def walk(
    rfd: int, src: Source, dest: str, excluded: Excluded, may_enter: Callable[[str], bool]
) -> Iterator[Entry]:
    """The entries a source copies (sorted), each with its destination in the image.

    A directory's own entry comes first with its contents (the directory
    itself maps to ``dest``); excluded paths are left out, and excluded
    directories are entered only where an exception may re-include something.
    """
    fd = open_in_root(rfd, src.rel, os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            link = os.readlink("", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
            yield Entry(src.rel, dest, st, link)
            return
        yield Entry(src.rel, dest, st)
        stack = [(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY), src.rel, dest)]
    finally:
        os.close(fd)
    while stack:
        dfd, rel, dst = stack.pop()
        try:
            for name in sorted(os.listdir(dfd), reverse=True):
                crel = posixpath.join(rel, name) if rel else name
                cdst = posixpath.join(dst, name) if dst else name
                cst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                is_dir = stat.S_ISDIR(cst.st_mode)
                if excluded(crel):
                    if is_dir and may_enter(crel):
                        cfd = os.open(
                            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd
                        )
                        stack.append((cfd, crel, cdst))
                    continue
                if is_dir:
                    yield Entry(crel, cdst, cst)
                    cfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                    stack.append((cfd, crel, cdst))
                else:
                    link = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(cst.st_mode) else ""
                    yield Entry(crel, cdst, cst, link)
        finally:
            os.close(dfd)


def file_digest(rfd: int, rel: str) -> str:
    fd = open_in_root(rfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, _BUF):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def hash_entries(rfd: int, entries: list[Entry], h: hashlib._Hash) -> None:
    """Feed every entry's content and metadata into ``h``: its path, its
    type and permission bits, its size and content hash or link target. mtime
    and owner are left out (Docker's cache ignores them too); content is
    always read, never trusted from a timestamp. Each file's digest is kept in
    its entry: the copy checks that it writes those very bytes."""
    for e in entries:
        mode = e.st.st_mode
        if stat.S_ISREG(mode):
            e.digest = file_digest(rfd, e.rel)
            what = f"f {e.digest} {e.st.st_size}"
        elif stat.S_ISLNK(mode):
            what = f"l {e.link}"
        elif stat.S_ISDIR(mode):
            what = "d"
        else:
            what = "s"  # sockets, fifos, devices: skipped by the copy
        h.update(f"{e.rel}\0{what}\0{stat.S_IMODE(mode):o}\n".encode("utf-8", "surrogateescape"))


# -- writing into the image -----------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0


def write_entries(
    rfd: int,
    image_root: str,
    entries: list[Entry],
    owner: Owner,
    chmod: int | None,
) -> None:
    """Create the entries in the mounted image root (``image_root``)."""
    from engine.safepath import root_fd

    with root_fd(image_root) as ifd:
        for e in entries:
            try:
                _write_one(rfd, ifd, e, owner, chmod)
            except OSError as err:
                raise wrap_oserror(err, "/" + e.dest) from None


def _write_one(rfd: int, ifd: int, e: Entry, owner: Owner, chmod: int | None) -> None:
    mode = e.st.st_mode
    perm = chmod if chmod is not None else stat.S_IMODE(mode)
    if stat.S_ISDIR(mode):
        pfd, name = open_parent_in_root(ifd, e.dest, create=True)
        try:
            if not name:  # the image root itself: keep it as it is
                return
            existing = _lstat_name(pfd, name)
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                if stat.S_ISLNK(existing.st_mode):
                    # A link to a directory in the image is followed inside it (Docker).
                    try:
                        os.close(open_in_root(ifd, e.dest, os.O_PATH | os.O_DIRECTORY))
                        return
                    except OSError:
                        pass
                os.unlink(name, dir_fd=pfd)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=pfd)
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                os.fchown(dfd, owner.uid, owner.gid)
                if existing is None or chmod is not None:
                    os.fchmod(dfd, perm)
                os.utime(dfd, (e.st.st_mtime, e.st.st_mtime))
            finally:
                os.close(dfd)
        finally:
            os.close(pfd)
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return  # fifos, sockets, devices are not copied
    pfd, name = open_parent_in_root(ifd, e.dest, create=True)
    try:
        if not name:
            raise InvalidArgument(f"cannot copy a file onto the image's root: {e.rel}")
        existing = _lstat_name(pfd, name)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise InvalidArgument(
                    f"cannot copy {e.rel or '.'} to /{e.dest}: a directory is in the way",
                    obj=e.dest,
                )
            os.unlink(name, dir_fd=pfd)
        if stat.S_ISLNK(mode):
            os.symlink(e.link, name, dir_fd=pfd)
            os.chown(name, owner.uid, owner.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, (e.st.st_mtime, e.st.st_mtime), dir_fd=pfd, follow_symlinks=False)
            return
        src = open_in_root(rfd, e.rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, 0o600, dir_fd=pfd)
            try:
                _copy_checked(src, out, e)
                os.fchown(out, owner.uid, owner.gid)
                os.fchmod(out, perm)  # after chown, which clears setuid bits
                os.utime(out, (e.st.st_mtime, e.st.st_mtime))
            finally:
                os.close(out)
        finally:
            os.close(src)
    finally:
        os.close(pfd)


def _lstat_name(pfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _copy_checked(src: int, dst: int, e: Entry) -> None:
    """Copy and hash in one pass: a file changed since it was hashed for the cache
    key would put other bytes under that key (a stale layer for a later build)."""
    h = hashlib.sha256()
    while chunk := os.read(src, _BUF):
        h.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
    if e.digest and h.hexdigest() != e.digest:
        raise InvalidState(
            f"{e.rel}: the file changed while the build was copying it; build again",
            obj=e.rel,
        )


def is_dir_in_image(image_root: str, path: str) -> bool:
    """Whether ``path`` names a directory in the image (links followed inside it)."""
    try:
        fd = open_in_root(image_root, path, os.O_PATH)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def plan_destinations(
    sources: list[Source], dest: str, workdir: str, image_root: str, what: str
) -> list[tuple[Source, str]]:
    """Where each source lands (a cleaned in-image path), by Docker's rules."""
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest)
    to_dir = dest.endswith("/") or dest.endswith("/.") or dest in ("/", ".")
    if len(sources) > 1 and not to_dir:
        raise InvalidArgument(
            f"{what}: when using {what} with more than one source file, the destination must be"
            f" a directory and end with a /",
            obj=dest,
        )
    cdest = clean_path(dest)
    out = []
    for s in sources:
        if s.is_dir:
            out.append((s, cdest))
        elif to_dir or is_dir_in_image(image_root, cdest):
            out.append((s, posixpath.join(cdest, posixpath.basename(s.rel)).lstrip("/")))
        else:
            out.append((s, cdest))
    return out
