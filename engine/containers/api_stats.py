"""ContainerStatsAPI: stats, update, anatomy (being written)."""


class ContainerStatsAPI:
    pass
