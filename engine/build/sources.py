"""COPY and ADD as build steps: where the files come from, the cache key, the layer.

Sources: the build context (``.dockerignore`` applied), a ``--build-context``
directory, or with ``--from`` an earlier stage or a local image, mounted
read-only for the step. The cache key holds the hash of the content and
metadata of every file the step copies (:func:`engine.build.copy.hash_entries`),
so any change to a copied file is a miss and nothing else is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from engine.build import copy as cp
from engine.build.dockerfile import Instruction
from engine.errors import InvalidArgument, InvalidState, NotFound, Unsupported
from engine.safepath import (
    clean_path,
    mkdirs_in_root,
    open_in_root,
    open_root,
    wrap_oserror,
)

if TYPE_CHECKING:
    from engine.build.executor import Builder, StageState

_URL_TIMEOUT = 15.0


@dataclass
class _Root:
    rfd: int
    excluded: cp.Excluded
    may_enter: cp.Excluded


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _is_git(s: str) -> bool:
    return s.startswith("git@") or (_is_url(s) and s.split("?")[0].endswith(".git"))


def _chmod(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid --chmod={text}: expected an octal mode like 0755")
    return mode


def _owner(root: str, spec: str | None) -> cp.Owner:
    """``--chown=user[:group]``: names from the image's passwd/group; no group: gid = uid."""
    if not spec:
        return cp.Owner()
    from engine.runtime.users import resolve_user

    user_part, _, group_part = spec.partition(":")
    uid, gid, _ = resolve_user(root, spec if group_part else user_part)
    if not group_part:
        gid = uid  # Docker: a user without a group uses the same number as the gid
    return cp.Owner(uid, gid)


def _archive_kind(rfd: int, rel: str) -> str:
    """The compression of a local tar archive ("tar", "gzip"...), or "" if not one."""
    from engine.build.context import decompressing

    try:
        fd = open_in_root(rfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        try:
            kind, plain = decompressing(f)
            if kind == "tar":
                return kind
            if kind in ("gzip", "bzip2", "xz"):
                import gzip

                inner = gzip.GzipFile(fileobj=plain) if kind == "gzip" else plain
                head = inner.read(512)
                return kind if len(head) >= 262 and head[257:262] == b"ustar" else ""
        except (OSError, EOFError, ValueError):
            return ""
    return ""


def copy_or_add(b: Builder, st: StageState, ins: Instruction) -> None:
    what = ins.keyword
    scope = st.scope()
    words = [st.lex.word(a, scope) for a in ins.args]
    srcs, dest = words[:-1], words[-1]
    if ins.flag("parents") is not None or ins.flag("exclude") is not None:
        raise Unsupported(f"{what} --parents and --exclude are not supported by Berth's builder")
    chown = ins.flag("chown")
    chown = st.lex.word(chown, scope) if chown else None
    chmod_text = ins.flag("chmod")
    chmod = _chmod(st.lex.word(chmod_text, scope) if chmod_text else None)
    from_raw = ins.flag("from")
    # BuildKit expands --from with the ARGs before the first FROM only, as the
    # executor does when it picks the stages a target needs.
    from_ = st.lex.word(from_raw, st.meta) if from_raw else ""
    if from_raw and not from_:
        raise InvalidArgument(
            f"{what} --from={from_raw} expands to an empty name (only ARGs declared before"
            " the first FROM apply there)"
        )
    checksum = ins.flag("checksum")
    urls = [s for s in srcs if _is_url(s) or _is_git(s)]
    if urls and what == "COPY":
        raise InvalidArgument(f"COPY: source can't be a URL: {urls[0]} (use ADD)")
    if urls and from_:
        raise InvalidArgument(f"{what} --from cannot be used with a URL source")
    for u in urls:
        if _is_git(u):
            raise Unsupported(f"ADD {u}: git sources are not supported by Berth's builder")
    local = [s for s in srcs if s not in urls]
    with contextlib.ExitStack() as stack:
        root = _source_root(b, st, from_, what, stack)
        h = hashlib.sha256()
        h.update(json.dumps([what, srcs, dest, chown, chmod, from_]).encode())
        sources = cp.find_sources(root.rfd, local, root.excluded, what) if local else []
        archives: dict[str, str] = {}  # rel -> digest of an ADD'ed local tar
        walked: list[list[cp.Entry]] = []  # walked once: the copy writes what was hashed
        for s in sources:
            try:
                entries = list(cp.walk(root.rfd, s, "", root.excluded, root.may_enter))
                cp.hash_entries(root.rfd, entries, h)
            except OSError as e:  # unreadable, or changed while we read it
                raise wrap_oserror(e, os.fsdecode(e.filename or s.rel)) from None
            walked.append(entries)
            if what == "ADD" and not s.is_dir and not from_ and entries[0].digest:
                if _archive_kind(root.rfd, s.rel):
                    archives[s.rel] = entries[0].digest
                    h.update(f"archive {s.rel}\n".encode())
        downloads = [_download(b, u, checksum, h) for u in urls]
        flags = [f"--{k}={v}" if v is not None else f"--{k}" for k, v in ins.flags]
        text = " ".join([what, *flags, *srcs, dest])
        key, hit = b.cached_step(st, text, {"content": h.hexdigest()})
        if hit:
            return
        with b.image_fs(st) as fs:
            image_root = str(fs.root)
            owner = _owner(image_root, chown)
            workdir = st.cfg.get("WorkingDir") or "/"
            planned = cp.plan_destinations(
                sources + [cp.Source(d.name, False) for d in downloads],
                dest, workdir, image_root, what,
            )  # fmt: skip
            for (s, dst), entries in zip(planned[: len(sources)], walked, strict=True):
                if s.rel in archives:
                    _extract(root.rfd, s.rel, archives[s.rel], image_root, dest, workdir)
                    continue
                cp.write_entries(root.rfd, image_root, cp.rebased(entries, dst), owner, chmod)
            for d, (_, dst) in zip(downloads, planned[len(sources) :], strict=True):
                # The body waits in the scratch space (mode 0600, Last-Modified as
                # mtime) and is copied like a context file, checked against its digest.
                dfd = open_root(d.dir)
                try:
                    entry = cp.Entry(_BODY, dst, os.lstat(d.dir / _BODY), digest=d.digest)
                    cp.write_entries(dfd, image_root, [entry], owner, chmod)
                finally:
                    os.close(dfd)
            layer = fs.commit(b.eng.images, always=True)
    b.commit(st, layer, text, key=key)


def _source_root(
    b: Builder, st: StageState, from_: str, what: str, stack: contextlib.ExitStack
) -> _Root:
    never = lambda _rel: False  # noqa: E731
    if not from_:
        ctx = b.ctx
        assert ctx is not None
        return _Root(ctx.rfd, ctx.excluded, ctx.may_enter)
    if from_ in b.named:
        ctx = b.named[from_]
        return _Root(ctx.rfd, ctx.excluded, ctx.may_enter)
    ref = b.stage_ref(from_, before=st.stage.index)
    if ref is not None:
        rec = b.stage_images.get(ref.index)
        if rec is None:  # e.g. a base image's ONBUILD trigger naming a stage of ours
            raise InvalidArgument(f"{what} --from={from_}: stage {from_!r} was not built")
    else:
        rec = b.resolve_image(from_, f"{what} --from")
    from engine.build.rootfs import ImageFS

    fs = stack.enter_context(ImageFS(b.workspace(), b.eng.images.layer_dirs(rec)))
    rfd = open_root(fs.root)
    stack.callback(os.close, rfd)
    return _Root(rfd, never, never)


class _Hashing(io.RawIOBase):
    """A file read through sha256: the archive extracted is the one hashed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._f.readinto(b)  # type: ignore[attr-defined]
        self.h.update(memoryview(b)[:n])
        return n


def _extract(rfd: int, rel: str, digest: str, image_root: str, dest: str, workdir: str) -> None:
    """ADD of a local tar: unpacked into ``dest`` with the layer extractor's safety
    (names cleaned and kept below dest, links never followed, no devices), and
    refused if its bytes are not the ones hashed for the step's cache key."""
    from engine.build.context import decompressing
    from engine.images import layers

    if not dest.startswith("/"):
        dest = posixpath.join(workdir, dest)
    target = clean_path(dest)
    mkdirs_in_root(image_root, target)
    fd = open_in_root(rfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb", buffering=0) as f:
        src = _Hashing(f)  # type: ignore[arg-type]
        _, plain = decompressing(src)  # type: ignore[arg-type]
        layers.copy_in(image_root, "/" + target, plain, preserve_owner=True)
        while src.read(1 << 20):  # what the extractor left unread (padding, trailers)
            pass
        if src.h.hexdigest() != digest:
            raise InvalidState(
                f"ADD {rel}: the archive changed while the build was reading it; build again",
                obj=rel,
            )


_BODY = "body"


@dataclass
class _Download:
    url: str
    name: str
    dir: Path  # holds the body (file _BODY) in the build's scratch space
    digest: str  # sha256 hex of the body


def _download(b: Builder, url: str, checksum: str | None, h: hashlib._Hash) -> _Download:
    import urllib.error
    import urllib.parse
    import urllib.request  # ~30 ms to import: only when a URL is added

    b.say(f"Downloading {url}")
    name = posixpath.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise InvalidArgument(
            f"ADD {url}: cannot determine a file name from the URL; give one in the destination"
        )
    d = b.workspace().new_dir("download")
    body = hashlib.sha256()
    try:
        # Streamed to disk: a large body never sits in memory.
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT) as resp:  # noqa: S310 - http(s) only
            modified = resp.headers.get("Last-Modified")
            fd = os.open(d / _BODY, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                while chunk := resp.read(1 << 20):
                    body.update(chunk)
                    f.write(chunk)
    except urllib.error.HTTPError as e:
        raise NotFound(f"ADD {url}: download failed: HTTP {e.code} {e.reason}", obj=url) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise InvalidArgument(
            f"ADD {url}: cannot reach the URL ({reason}); this host may have no route to it",
            obj=url,
        ) from None
    digest = "sha256:" + body.hexdigest()
    if checksum and checksum != digest:
        raise InvalidArgument(f"ADD {url}: checksum mismatch: expected {checksum}, got {digest}")
    if modified:
        import email.utils

        with contextlib.suppress(TypeError, ValueError, OverflowError):
            mtime = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(d / _BODY, (mtime, mtime))
    h.update(f"url {url} {digest}\n".encode())
    return _Download(url, name, d, body.hexdigest())
