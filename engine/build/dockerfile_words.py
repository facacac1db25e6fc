"""The words of a Dockerfile instruction, as Docker's parser shapes them: leading
``--flags``, JSON (exec) forms, ENV/LABEL name=value pairs, HEALTHCHECK, and
``parse_words`` (quotes kept). :mod:`engine.build.dockerfile` puts them together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from engine.errors import InvalidArgument

# The flags each instruction accepts (BuildKit's names); others are refused.
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"network", "mount", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be parsed; ``line`` is 1-based (0 when not about a line)."""

    def __init__(self, message: str, line: int = 0, name: str = "Dockerfile"):
        where = f"{name}:{line}: " if line else f"{name}: "
        super().__init__(f"dockerfile parse error: {where}{message}", obj=name)
        self.line = line
        self.reason = message


def extract_flags(rest: str) -> tuple[str, list[str]]:
    """Leading ``--name[=value]`` words (BuildKit's extractBuilderFlags): (rest, flag words)."""
    words: list[str] = []
    pos = 0
    n = len(rest)
    while True:
        while pos < n and rest[pos].isspace():
            pos += 1
        if not rest.startswith("--", pos):
            return rest[pos:], words
        word = []
        quote = ""
        while pos < n and (quote or not rest[pos].isspace()):
            ch = rest[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(rest[pos])
                else:
                    word.append(ch)
            elif ch in "'\"":
                quote = ch
            elif ch == "\\" and pos + 1 < n:
                pos += 1
                word.append(rest[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return rest[pos:].lstrip(), words
        words.append(text)


def check_flags(
    keyword: str, words: list[str], line: int, name: str
) -> list[tuple[str, str | None]]:
    allowed = FLAGS.get(keyword, set())
    out: list[tuple[str, str | None]] = []
    for w in words:
        key, eq, value = w[2:].partition("=")
        if key not in allowed:
            raise DockerfileError(f"unknown flag: --{key} ({keyword} takes "
                                  + (", ".join(f"--{f}" for f in sorted(allowed)) or "no flags")
                                  + ")", line, name)  # fmt: skip
        out.append((key, value if eq else None))
    return out


def _parse_json(rest: str) -> tuple[list[str] | None, str]:
    """(the string list, "") or (None, why it is not one)."""
    if not rest.startswith("["):
        return None, "not a JSON array"
    try:
        value = json.loads(rest)
    except ValueError as e:
        return None, f"invalid JSON: {e}"
    if not isinstance(value, list):
        return None, "not a JSON array"
    if not all(isinstance(v, str) for v in value):
        return None, "strings only"
    return value, ""


def _json_error(keyword: str, line: int, name: str) -> DockerfileError:
    return DockerfileError(
        f"{keyword}: when using JSON array syntax, arrays must be comprised of strings only",
        line,
        name,
    )


def maybe_json(
    rest: str, keyword: str, line: int, warnings: list[tuple[int, str]], name: str
) -> tuple[list[str], bool]:
    rest = rest.strip()
    if not rest:
        return [], False
    value, why = _parse_json(rest)
    if value is not None:
        return value, True
    if why == "strings only":
        raise _json_error(keyword, line, name)
    if rest.startswith("[") and rest.endswith("]"):
        # Docker runs it as a shell command; say why, since that is rarely meant.
        warnings.append(
            (
                line,
                f"{keyword} looks like the JSON (exec) form but is not valid JSON ({why[14:]});"
                " it runs as a shell command",
            )  # fmt: skip
        )
    return [rest], False


def json_or_words(rest: str, keyword: str, line: int, name: str) -> tuple[list[str], bool]:
    rest = rest.strip()
    value, why = _parse_json(rest)
    if value is not None:
        return value, True
    if why == "strings only":
        raise _json_error(keyword, line, name)
    return rest.split(), False


def healthcheck_args(
    rest: str,
    line: int,
    warnings: list[tuple[int, str]],
    err: Callable[[str], DockerfileError],
    name: str,
) -> tuple[list[str], bool]:
    rest = rest.strip()
    if not rest:
        raise err("HEALTHCHECK requires an argument: NONE or CMD <command>")
    typ = re.split(r"\s", rest, maxsplit=1)[0]
    cmd = rest[len(typ) :].strip()
    if typ.upper() == "NONE":
        if cmd:
            raise err("HEALTHCHECK NONE takes no arguments")
        return ["NONE"], False
    if typ.upper() != "CMD":
        raise err(f"HEALTHCHECK: unknown type {typ!r}: expected CMD or NONE")
    args, is_json = maybe_json(cmd, "HEALTHCHECK", line, warnings, name)
    if not args:
        raise err("HEALTHCHECK CMD requires a command")
    return ["CMD", *args], is_json


def name_vals(
    rest: str, keyword: str, escape: str, err: Callable[[str], DockerfileError]
) -> list[str]:
    """ENV/LABEL: ``KEY value...`` (old form) or ``K=V K2="v 2"`` (BuildKit's parseNameVal)."""
    words = parse_words(rest, escape)
    if not words:
        raise err(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = re.split(r"\s+", rest.strip(), maxsplit=1)
        if len(parts) < 2:
            raise err(f"{keyword} must have two arguments: {keyword} <key>=<value>")
        return [parts[0], parts[1]]
    out: list[str] = []
    for w in words:
        if "=" not in w:
            raise err(f"Syntax error - can't find = in {w!r}. Must be of the form: name=value")
        key, _, value = w.partition("=")
        if not key:
            raise err(f"{keyword} names can not be blank: {w!r}")
        out += [key, value]
    return out


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """Split on unquoted blanks, keeping quotes and escapes in the words (parseWords)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False  # a quoted empty string ("") is still a word
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
            i += 1
            continue
        if ch.isspace():
            if word or started:
                words.append("".join(word))
            word, started = [], False
            i += 1
            continue
        if ch in "'\"":
            quote = ch
            started = True
        elif ch == escape:
            if i + 1 == n:
                i += 1
                continue
            word.append(ch)
            i += 1
            ch = rest[i]
        word.append(ch)
        i += 1
    if word or started:
        words.append("".join(word))
    return words
