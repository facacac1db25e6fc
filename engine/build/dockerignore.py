"""``.dockerignore`` with Docker's rules (moby/patternmatcher).

- one pattern per line; blank lines and lines starting with ``#`` are skipped;
  surrounding blanks are trimmed; ``!`` starts an exception (re-include);
- patterns are cleaned (``./a//b/`` -> ``a/b``, a leading ``/`` dropped) and
  matched against the path relative to the context root with Go's
  ``filepath.Match`` syntax (``*`` and ``?`` never match ``/``, ``[...]``
  classes, ``\\`` escapes) plus ``**``, which matches any number of
  directories, none included;
- a pattern that matches a parent directory matches everything below it;
- the last pattern that matches decides;
- the Dockerfile and ``.dockerignore`` are read by the build even when
  excluded, but an excluded one is not copied by COPY/ADD (as Docker documents).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from engine.errors import InvalidArgument

__all__ = ["Matcher", "read_patterns"]


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned as Docker cleans them."""
    out = []
    for i, raw in enumerate(text.split("\n")):
        line = raw.lstrip("\ufeff") if i == 0 else raw
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = posixpath.normpath(line)
            if len(line) > 1 and line.startswith("/"):
                line = line.lstrip("/") or "/"
        out.append(("!" if invert else "") + line)
    return out


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool  # a "!" exception
    rx: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                if i + 1 >= n:
                    out.append(".*")  # "**" at the end: everything
                else:
                    out.append("(.*/)?")  # any number of directories, even none
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i >= n:
                raise InvalidArgument(f".dockerignore: bad escape at the end of {pattern!r}")
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "!") else i + 1)
            if end < 0:
                raise InvalidArgument(f".dockerignore: unterminated [ in {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as e:
        raise InvalidArgument(f".dockerignore: bad pattern {pattern!r}: {e}") from None


class Matcher:
    """``excluded(rel_path)`` says whether a path of the context is left out."""

    def __init__(self, patterns: list[str]):
        self.patterns: list[_Pattern] = []
        for p in patterns:
            exclusion = p.startswith("!")
            text = p[1:] if exclusion else p
            if not text:
                continue
            self.patterns.append(_Pattern(text, exclusion, _compile(text)))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, rel: str) -> bool:
        """Docker's MatchesOrParentMatches: the last matching pattern wins."""
        if not self.patterns:
            return False
        parents = rel.split("/")[:-1]
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:
                continue  # cannot change the outcome
            hit = bool(p.rx.match(rel))
            if not hit:
                for i in range(len(parents)):
                    if p.rx.match("/".join(parents[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not p.exclusion
        return matched

    def may_include_below(self, rel_dir: str) -> bool:
        """Whether the walk must still enter the excluded directory ``rel_dir``:
        Docker goes in only when an exception pattern starts with ``rel_dir/``."""
        prefix = rel_dir + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)
