"""stats, update, anatomy commands (being written)."""


def register(sub) -> None:
    pass
