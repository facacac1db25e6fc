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
