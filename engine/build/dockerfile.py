"""The Dockerfile parser: text in, instructions with their line numbers out.

Stable API (``berth build`` and ``berth image advise`` both use it)::

    df = parse(text)                 # raises DockerfileError (an InvalidArgument)
    df.directives                    # {"syntax": ..., "escape": "\\"} as written
    df.escape                        # the escape character in force
    df.instructions                  # every Instruction, in order (ARGs before FROM too)
    df.meta_args                     # the ARG instructions before the first FROM
    df.stages                        # Stage(index, name, base, from_instr, instructions)
    df.warnings                      # [(line, message)] (e.g. JSON-looking shell forms)

    ins.keyword   "COPY"             ins.line / ins.end_line  1-based, first and last line
    ins.original  the lines as written (continuations and skipped comments included)
    ins.text      keyword + arguments with continuations joined (Docker's ``created_by``)
    ins.args      the arguments (see below)    ins.flags  (("from", "build"), ("chown", "1:1"))
    ins.json      True for the exec/JSON form  ins.sub    ONBUILD's instruction
    ins.flag(name, default) -> str | None

``args`` per instruction, as Docker's parser shapes them (quotes are still in
the words: the variable expansion in :mod:`engine.build.shell` removes them):

- RUN, CMD, ENTRYPOINT, SHELL: the JSON list (``json``), else ``[command string]``;
- COPY, ADD, VOLUME: the JSON list, else whitespace-separated words;
- ENV, LABEL: ``[key1, value1, key2, value2 ...]`` (see ``pairs``);
- ARG: ``["NAME", "NAME=default", ...]``;
- HEALTHCHECK: ``["NONE"]`` or ``["CMD", *command]`` (command as for CMD);
- ONBUILD: ``[the trigger's text]`` and ``sub`` holds it parsed;
- everything else: whitespace-separated words.

Lines follow BuildKit's rules: parser directives (``# syntax=``, ``# escape=``)
only at the very top; comments are lines starting with ``#``; a line ending
in the escape character (trailing blanks allowed) continues on the next, where
comment and empty lines are skipped. Heredocs are refused with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.build.dockerfile_words import (
    DockerfileError,
    check_flags,
    extract_flags,
    healthcheck_args,
    json_or_words,
    maybe_json,
    name_vals,
    parse_words,
)

__all__ = [
    "Dockerfile", "DockerfileError", "Instruction", "Stage", "parse", "parse_line", "parse_words",
]  # fmt: skip

INSTRUCTIONS = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN "
    "SHELL STOPSIGNAL USER VOLUME WORKDIR".split()
)
_DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_HEREDOC_RE = re.compile(r"(?:^|\s)<<-?[\"']?[A-Za-z_][A-Za-z0-9_]*[\"']?(?:\s|$)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: tuple[str, ...]
    line: int
    end_line: int
    original: str
    text: str
    flags: tuple[tuple[str, str | None], ...] = ()
    json: bool = False
    sub: Instruction | None = None

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The flag's value (the last one given); ``""`` for a bare ``--flag``."""
        found = default
        for k, v in self.flags:
            if k == name:
                found = "" if v is None else v
        return found

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """ENV/LABEL arguments as (key, value) pairs (values still quoted as written)."""
        return list(zip(self.args[::2], self.args[1::2], strict=True))


@dataclass
class Stage:
    index: int
    base: str  # as written (variables not yet expanded)
    name: str  # "" when the stage has no AS name
    from_instr: Instruction
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    directives: dict[str, str]
    escape: str
    instructions: list[Instruction]
    meta_args: list[Instruction]
    stages: list[Stage]
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def stage(self, name_or_index: str) -> Stage | None:
        """The stage named so (case-insensitive) or with that index."""
        for s in self.stages:
            if s.name and s.name == name_or_index.lower():
                return s
        if name_or_index.isdigit() and int(name_or_index) < len(self.stages):
            return self.stages[int(name_or_index)]
        return None


# -- lines ------------------------------------------------------------------------------------


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _continues(line: str, escape: str) -> tuple[str, bool]:
    """(line without its continuation mark, whether it continues)."""
    stripped = line.rstrip(" \t")
    if stripped.endswith(escape):
        return stripped[:-1], True
    return line, False


def _directives(lines: list[str], name: str) -> tuple[dict[str, str], int]:
    """Parser directives at the top; returns them and how many lines they took."""
    found: dict[str, str] = {}
    n = 0
    for raw in lines:
        m = _DIRECTIVE_RE.match(raw.strip())
        if not m or m.group(1).lower() not in _DIRECTIVES:
            break
        key = m.group(1).lower()
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", n + 1, name)
        found[key] = m.group(2)
        n += 1
    esc = found.get("escape", "\\")
    if esc not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token {esc!r} does not match ` or \\", 1, name)
    return found, n


def parse(text: str, name: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile; ``name`` only appears in error messages."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    directives, i = _directives(lines, name)
    escape = directives.get("escape", "\\")
    warnings: list[tuple[int, str]] = []
    instructions: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        start = i
        i += 1
        if not raw.strip() or _is_comment(raw):
            continue
        logical, more = _continues(raw.lstrip(), escape)
        while more and i < len(lines):
            nxt = lines[i]
            i += 1
            if _is_comment(nxt) or not nxt.strip():
                continue  # BuildKit skips these inside a continuation
            part, more = _continues(nxt, escape)
            logical += part
        if not logical.strip():
            continue  # a lone continuation mark
        original = "\n".join(lines[start:i])
        instructions.append(parse_line(logical, start + 1, i, original, escape, warnings, name))
    if not instructions:
        raise DockerfileError("file with no instructions", 0, name)
    meta_args: list[Instruction] = []
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append(_stage(ins, len(stages), stages, name))
        elif not stages:
            if ins.keyword != "ARG":
                raise DockerfileError(
                    f"{ins.keyword} before the first FROM: only ARG may come before FROM"
                    " (no build stage in current context)",
                    ins.line,
                    name,
                )
            meta_args.append(ins)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError("no FROM instruction: a Dockerfile must start a stage", 0, name)
    return Dockerfile(directives, escape, instructions, meta_args, stages, warnings)


def _stage(ins: Instruction, index: int, stages: list[Stage], name: str) -> Stage:
    args = ins.args
    if len(args) == 3 and args[1].lower() == "as":
        stage_name = args[2].lower()
        if not _STAGE_NAME_RE.match(stage_name):
            raise DockerfileError(
                f"invalid name for build stage: {args[2]!r}, name can't start with a number"
                " or contain symbols",
                ins.line,
                name,
            )
        if any(s.name == stage_name for s in stages):
            raise DockerfileError(f"duplicate stage name {stage_name!r}", ins.line, name)
    elif len(args) == 1:
        stage_name = ""
    else:
        raise DockerfileError(
            "FROM requires either one argument, or three: FROM <source> [AS <name>]",
            ins.line,
            name,
        )
    return Stage(index, args[0], stage_name, ins)


# -- one logical line -------------------------------------------------------------------------


def parse_line(
    logical: str,
    line: int = 1,
    end_line: int | None = None,
    original: str | None = None,
    escape: str = "\\",
    warnings: list[tuple[int, str]] | None = None,
    name: str = "Dockerfile",
) -> Instruction:
    """One instruction from its logical line (continuations already joined)."""
    end_line = line if end_line is None else end_line
    original = logical if original is None else original
    warnings = [] if warnings is None else warnings
    stripped = logical.strip()
    parts = re.split(r"\s+", stripped, maxsplit=1)
    keyword = parts[0].upper()
    rest = parts[1] if len(parts) > 1 else ""
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {parts[0]}", line, name)
    rest, raw_flags = extract_flags(rest)
    flags = check_flags(keyword, raw_flags, line, name)
    text = " ".join([keyword, *raw_flags, rest.strip()]).rstrip()

    def err(msg: str) -> DockerfileError:
        return DockerfileError(msg, line, name)

    is_json = False
    sub = None
    args: list[str]
    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        if keyword == "RUN" and _HEREDOC_RE.search(rest):
            raise err("heredocs (<<EOF) are not supported by Berth's builder")
        args, is_json = maybe_json(rest, keyword, line, warnings, name)
        if keyword == "SHELL" and not is_json:
            raise err(
                'SHELL requires the arguments to be in JSON form: SHELL ["executable", "param"]'
            )
        if keyword == "RUN" and not args:
            raise err("RUN requires at least one argument")
    elif keyword in ("COPY", "ADD", "VOLUME"):
        if keyword != "VOLUME" and _HEREDOC_RE.search(rest):
            raise err(f"heredocs (<<EOF) in {keyword} are not supported by Berth's builder")
        args, is_json = json_or_words(rest, keyword, line, name)
        if keyword != "VOLUME" and len(args) < 2:
            raise err(f"{keyword} requires at least two arguments, but only one was provided"
                      f" (source and destination)")  # fmt: skip
        if keyword == "VOLUME" and not args:
            raise err("VOLUME requires at least one argument")
    elif keyword in ("ENV", "LABEL"):
        args = name_vals(rest, keyword, escape, err)
    elif keyword == "ARG":
        args = parse_words(rest, escape)
        if not args:
            raise err("ARG requires at least one argument")
        for a in args:
            if not a.split("=", 1)[0]:
                raise err(f"ARG names can not be blank: {a!r}")
    elif keyword == "HEALTHCHECK":
        args, is_json = healthcheck_args(rest, line, warnings, err, name)
    elif keyword == "ONBUILD":
        if not rest.strip():
            raise err("ONBUILD requires at least one argument")
        sub = parse_line(rest, line, end_line, original, escape, warnings, name)
        if sub.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            what = (
                "Chaining ONBUILD via `ONBUILD ONBUILD`"
                if sub.keyword == "ONBUILD"
                else sub.keyword
            )
            raise err(f"{what} isn't allowed as an ONBUILD trigger")
        args = [rest.strip()]
    elif keyword in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        # One string argument, spaces and all (Docker's parseString).
        if not rest.strip():
            raise err(f"{keyword} requires exactly one argument")
        args = [rest.strip()]
    else:  # FROM, EXPOSE
        args = rest.split()
        if not args:
            raise err(f"{keyword} requires at least one argument")
    return Instruction(
        keyword=keyword,
        args=tuple(args),
        line=line,
        end_line=end_line,
        original=original,
        text=text,
        flags=tuple(flags),
        json=is_json,
        sub=sub,
    )
