"""ContainerOpsAPI: exec, top, cp, export, diff, commit (being written)."""


class ContainerOpsAPI:
    pass
