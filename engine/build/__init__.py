"""Berth's own Dockerfile builder (``berth build``).

- dockerfile.py   the parser: ``parse(text) -> Dockerfile`` (stable API, also used by advise)
- shell.py        Docker's variable substitution (``${VAR:-x}``, quotes, escapes)
- dockerignore.py ``.dockerignore`` patterns with Docker's rules
- context.py      the build context: a directory or a tar, read only inside itself
- cache.py        the build cache: step key -> image ID, crash-safe files under the root
- executor.py     stages and steps; steps.py the instructions that make layers
"""
