"""The `berth` command line: Docker's verbs over engine.api.

Startup time matters (`berth --version` <= 80 ms including the interpreter):
only argparse and the command modules are imported up front; each command
module imports what it needs inside its handlers.

Conventions for command modules (engine/cli/cmd_*.py):
  - ``register(sub)`` adds subparsers; each sets ``func=handler``.
  - ``handler(args) -> int`` returns the exit code; it gets the engine with
    ``engine_from(args)``; EngineError propagates to main(), which prints a
    one-line "Error: ..." and exits 125 like Docker.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine import __version__

COMMAND_MODULES = (
    "engine.cli.cmd_containers",
    "engine.cli.cmd_ops",
    "engine.cli.cmd_stats",
    "engine.cli.cmd_images",
    "engine.cli.cmd_volumes",
    "engine.cli.cmd_system",
    "engine.cli.cmd_maint",
    "engine.cli.cmd_network",
    "engine.cli.cmd_diagnose",
    "engine.cli.cmd_build",
    "engine.cli.cmd_registry",
    "engine.cli.cmd_advise",
)


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad flag; Docker exits 125. Raise instead."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgumentError(f"{self.prog}: {message}")


def engine_from(args: argparse.Namespace):
    from engine.api import Engine
    from engine.config import EngineConfig

    env = dict(os.environ)
    if getattr(args, "root", None):
        env["BERTH_ROOT"] = args.root
    if getattr(args, "run_dir", None):
        env["BERTH_RUN"] = args.run_dir
    if getattr(args, "runtime_flag", None):
        env["BERTH_RUNTIME"] = args.runtime_flag
    return Engine(EngineConfig.from_env(env))


# Which module registers each top-level verb, so a command builds only its own
# parsers (building all of them costs ~20 ms on every `berth run`).
VERB_MODULES = {
    "engine.cli.cmd_containers": "run create start stop restart kill pause unpause wait rm rename ps inspect logs attach port container",
    "engine.cli.cmd_ops": "exec top cp export diff commit",
    "engine.cli.cmd_stats": "stats update",
    "engine.cli.cmd_images": "images image import load save tag rmi history",
    "engine.cli.cmd_volumes": "volume",
    "engine.cli.cmd_system": "version info events system",
    "engine.cli.cmd_network": "network",
    "engine.cli.cmd_build": "build builder",
    "engine.cli.cmd_registry": "pull push login logout",
}
# Modules that add subcommands to verbs owned by another module.
EXTENDS = {
    "container": ("engine.cli.cmd_ops", "engine.cli.cmd_stats"),
    "system": ("engine.cli.cmd_maint",),
    "network": ("engine.cli.cmd_diagnose",),
    "image": ("engine.cli.cmd_build", "engine.cli.cmd_registry", "engine.cli.cmd_advise"),
}


def _modules_for(argv: list[str]) -> tuple[str, ...]:
    verb = next((a for a in argv if not a.startswith("-")), None)
    # Global flags that take a value come before the verb; skip their values.
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--root", "--run-dir", "--runtime"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        verb = a
        break
    else:
        return COMMAND_MODULES
    for mod, verbs in VERB_MODULES.items():
        if verb in verbs.split():
            return (mod, *EXTENDS.get(verb, ()))
    return COMMAND_MODULES


def build_parser(argv: list[str] | None = None) -> Parser:
    import importlib

    p = Parser(prog="berth", description="Berth container engine")
    p.add_argument("--version", "-v", action="store_true", help="print the version")
    p.add_argument("--root", help="engine root directory (default $BERTH_ROOT or /var/lib/berth)")
    p.add_argument("--run-dir", dest="run_dir", help="runtime directory (default /run/berth)")
    p.add_argument("--runtime", dest="runtime_flag", help="OCI runtime: crun or runc")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    modules = COMMAND_MODULES if argv is None else _modules_for(argv)
    for name in modules:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None, parser: Parser | None = None) -> int:
    """Run one command. ``parser``: a full parser built earlier (the CLI server's)."""
    argv = sys.argv[1:] if argv is None else argv
    # Fast path: no parser construction, no engine import.
    if argv in (["--version"], ["-v"]):
        print(f"Berth version {__version__}")
        return 0
    from engine.errors import EngineError

    try:
        parser = parser or build_parser(argv)
        args = parser.parse_args(argv)
        if args.version:
            print(f"Berth version {__version__}")
            return 0
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if not args.command else 125
        return int(args.func(args) or 0)
    except ArgumentError as e:
        print(f"Error: {e}", file=sys.stderr)
        print("See 'berth --help'.", file=sys.stderr)
        return 125
    except EngineError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
