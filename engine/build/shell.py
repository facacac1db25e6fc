"""Docker's variable substitution for Dockerfile words (BuildKit's shell lexer).

Used for the instructions where Docker substitutes (ADD, COPY, ENV, EXPOSE,
FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG defaults and the flags of
COPY/ADD); RUN, CMD and ENTRYPOINT are left to the shell in the container.

- ``$VAR`` and ``${VAR}``; unset variables expand to "";
- ``${VAR:-word}`` / ``${VAR-word}``: word when VAR is unset or empty / unset;
- ``${VAR:+word}`` / ``${VAR+word}``: word when VAR is set and not empty / set;
- ``${VAR:?msg}`` / ``${VAR?msg}``: an error naming VAR when unset or empty / unset;
- ``${VAR#pat}`` ``${VAR##pat}`` ``${VAR%pat}`` ``${VAR%%pat}``: prefix/suffix removal
  (``*``, ``?``, ``[...]`` patterns);
- single quotes keep everything literally, double quotes allow substitution;
  quotes are removed; the escape character (``\\`` or the ``# escape=``
  one) makes the next character literal (``\\$HOME`` is ``$HOME``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

from engine.errors import InvalidArgument

__all__ = ["ShellLex", "SubstitutionError"]

_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


class SubstitutionError(InvalidArgument):
    pass


class ShellLex:
    def __init__(self, escape: str = "\\"):
        self.escape = escape

    def word(self, text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
        """One word: quotes removed, variables substituted, no splitting."""
        return _Run(text, env, self.escape, used).word(split=False)[0]

    def words(self, text: str, env: Mapping[str, str], used: set[str] | None = None) -> list[str]:
        """Split on unquoted blanks (after substitution of each word's parts)."""
        return _Run(text, env, self.escape, used).word(split=True)


class _Run:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, used: set[str] | None):
        self.s = text
        self.i = 0
        self.env = env
        self.esc = escape
        self.used = used if used is not None else set()

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def word(self, split: bool, stop: str = "") -> list[str]:
        words: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            ch = self.peek()
            if stop and ch == stop:
                break
            if split and ch.isspace():
                self.i += 1
                if cur or started:
                    words.append("".join(cur))
                cur, started = [], False
                continue
            self.i += 1
            if ch == "'":
                cur.append(self._single())
                started = True
            elif ch == '"':
                cur.append(self._double())
                started = True
            elif ch == "$":
                cur.append(self._dollar())
            elif ch == self.esc:
                nxt = self.next()
                cur.append(nxt)  # at the end: the escape just disappears
            else:
                cur.append(ch)
        if cur or started or not split:
            words.append("".join(cur))
        return words

    def _single(self) -> str:
        end = self.s.find("'", self.i)
        if end < 0:
            raise SubstitutionError(
                f"unexpected end of statement while looking for matching single-quote in {self.s!r}"
            )
        out = self.s[self.i : end]
        self.i = end + 1
        return out

    def _double(self) -> str:
        out: list[str] = []
        while True:
            if self.i >= len(self.s):
                raise SubstitutionError(
                    "unexpected end of statement while looking for matching double-quote"
                    f" in {self.s!r}"
                )
            ch = self.next()
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
            elif ch == self.esc:
                nxt = self.peek()
                if nxt in ('"', "$", self.esc) and nxt:
                    self.i += 1
                    out.append(nxt)
                else:
                    out.append(ch)
            else:
                out.append(ch)

    def _name(self) -> str:
        start = self.i
        if self.i < len(self.s) and _NAME_START.match(self.s[self.i]):
            self.i += 1
            while self.i < len(self.s) and _NAME_CHAR.match(self.s[self.i]):
                self.i += 1
        elif self.i < len(self.s) and self.s[self.i].isdigit():
            self.i += 1  # positional parameters: one digit, always empty here
        return self.s[start : self.i]

    def _lookup(self, name: str) -> str | None:
        self.used.add(name)
        return self.env.get(name)

    def _dollar(self) -> str:
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"  # a lone "$" stays
            return self._lookup(name) or ""
        self.i += 1  # "{"
        name = self._name()
        if not name:
            raise SubstitutionError(f"bad substitution in {self.s!r}: expected a name after '${{'")
        op = self.next()
        if op == "}":
            return self._lookup(name) or ""
        if op == "":
            raise SubstitutionError(f"missing '}}' in {self.s!r}")
        colon = False
        if op == ":":
            colon = True
            op = self.next()
            if op not in ("-", "+", "?"):
                raise SubstitutionError(f"unsupported modifier (:{op}) in substitution {self.s!r}")
        elif op in ("#", "%") and self.peek() == op:
            self.i += 1
            op += op
        if op not in ("-", "+", "?", "#", "##", "%", "%%"):
            raise SubstitutionError(f"unsupported modifier ({op}) in substitution {self.s!r}")
        arg = self.word(split=False, stop="}")[0]
        if self.next() != "}":
            raise SubstitutionError(f"missing '}}' in {self.s!r}")
        value = self._lookup(name)
        unset = value is None or (colon and value == "")
        if op == "-":
            return arg if unset else value or ""
        if op == "+":
            return "" if unset else arg
        if op == "?":
            if unset:
                why = arg or ("parameter null or not set" if colon else "parameter not set")
                raise SubstitutionError(f"{name}: {why}", obj=name)
            return value or ""
        return _trim(value or "", arg, op)


def _trim(value: str, pattern: str, op: str) -> str:
    rx = re.compile(fnmatch.translate(pattern))
    spans = range(len(value) + 1)
    if op in ("#", "##"):
        cuts = spans if op == "#" else reversed(spans)
        for n in cuts:
            if rx.match(value[:n]):
                return value[n:]
        return value
    cuts = reversed(spans) if op == "%" else spans
    for n in cuts:
        if rx.match(value[n:]):
            return value[:n]
    return value
