"""Reading RUN commands for the Dockerfile advisor: which packages a command
installs or purges, what it writes, what it deletes. Shell is not parsed,
only split on its list operators: good enough for advice, never for execution."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from fnmatch import fnmatchcase

from engine.images import advise_rules as R

SEP = re.compile(r"&&|\|\||;|\||\n")
INSTALL = re.compile(
    r"\b(?:apt-get|apt|aptitude)\s+(?:-\S+\s+)*install\b|\bapk\s+(?:-\S+\s+)*add\b"
    r"|\b(?:yum|dnf|microdnf)\s+(?:-\S+\s+)*install\b"
)
PURGE = re.compile(
    r"\b(?:apt-get|apt)\s+(?:-\S+\s+)*(?:purge|remove|autoremove)\b|\bapk\s+(?:-\S+\s+)*del\b"
    r"|\b(?:yum|dnf)\s+(?:-\S+\s+)*(?:remove|erase)\b"
)
# What in a RUN writes a path: download outputs, redirections, extraction dirs, copies.
WRITES = (
    r"(?:-O\s*|-o\s*|\bof=|--output(?:-document)?[=\s]|>>?\s*|\btee\s+(?:-a\s+)?|-C\s*"
    r"|\bclone\s+\S+\s+|\bmkdir\s+(?:-p\s+)?|\b(?:cp|mv)\s+(?:-\S+\s+)*\S+\s+|\btouch\s+)['\"]?"
)
SHARED_DIRS = ("/tmp", "/var", "/usr", "/root", "/opt", "/home", "/etc", "/srv")
RM = re.compile(r"(?:^|\s)rm\s+((?:-\S+\s+)*)(.*)$")


def hide(text: str, values: list[str]) -> str:
    for v in values:
        bare = v.strip("'\"")
        if bare:
            text = text.replace(bare, R.masked(bare))
    return text


def rm_targets(cmd: str, workdir: str, expand: Callable[[str], str] = str) -> list[str]:
    """Absolute paths an ``rm`` in ``cmd`` deletes (wildcards kept); ``expand``
    substitutes variables the step knows (its ENV); words still holding a
    ``$`` are skipped."""
    out = []
    for seg in SEP.split(cmd):
        m = RM.search(seg)
        if not m:
            continue
        for w in m.group(2).split():
            if w.startswith("-"):
                continue
            if "$" in w:
                w = expand(w)
                if "$" in w:
                    continue
            w = w.strip("'\"")
            path = posixpath.normpath(w if w.startswith("/") else posixpath.join(workdir, w))
            if path != "/":
                out.append(path)
    return out


def covers(target: str, path: str) -> bool:
    """Does deleting ``target`` (wildcards allowed) remove ``path``?"""
    want = target.strip("/").split("/")
    have = path.strip("/").split("/")
    return len(have) >= len(want) and all(
        fnmatchcase(h, w) for h, w in zip(have, want, strict=False)
    )


def virtual(words: list[str]) -> str:
    for i, w in enumerate(words):
        if w in ("--virtual", "-t") and i + 1 < len(words):
            return words[i + 1]
        if w.startswith("--virtual="):
            return w.split("=", 1)[1]
    return ""


def packages(words: list[str]) -> list[str]:
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--virtual", "-t", "-o", "--option", "--repository", "-X"):
            skip = True
            continue
        if w.startswith("-") or "$" in w or "\\" == w:
            continue
        out.append(w.split("=", 1)[0].strip("'\""))
    return out
