"""Small pieces every command module uses the same way."""

from __future__ import annotations

import argparse
import sys


def print_help(parser: argparse.ArgumentParser) -> int:
    """A bare group verb (`berth volume`) prints its help and succeeds, like docker."""
    parser.print_help()
    return 0


def pairs(items: list[str], what: str, need_value: bool) -> dict[str, str]:
    """`--label K=V` / `-o K=V` lists as a dict; a missing `=` is an error when ``need_value``."""
    from engine.errors import InvalidArgument

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or (need_value and not sep):
            raise InvalidArgument(f"invalid key/value pair format in {what}: {item!r}")
        out[key] = value
    return out


def confirm(warning: str) -> bool:
    """docker's PromptForConfirmation: the warning, then the question; no answer
    (EOF, or a stdin that cannot be read) is no."""
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError, AttributeError):
        answer = ""
    if not answer.endswith("\n"):
        sys.stdout.write("\n")  # keep the shell prompt off the question's line
    return answer.strip().lower() in ("y", "yes")


def verb_subparsers(sub, verb: str):
    """The subparsers action of ``verb`` (``image``, ``network``...) for a module that
    adds subcommands to a verb another module owns; None when main.py did not build
    that verb (it builds only the parsers of the verb being run)."""
    parser = sub.choices.get(verb)
    group = getattr(parser, "_subparsers", None) if parser is not None else None
    if group is None:
        return None
    # argparse keeps a parser's subparsers action among its _subparsers group's actions.
    for action in group._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None
