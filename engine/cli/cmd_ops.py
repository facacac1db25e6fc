"""exec, top, cp, export, diff, commit commands (being written)."""


def register(sub) -> None:
    pass
