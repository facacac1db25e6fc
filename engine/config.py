"""Where an engine instance keeps its state, and what it calls itself.

Every kernel object an instance creates (cgroup parents, interface names, netns
names, nftables table) carries ``prefix`` so that several instances (tests,
simulated hosts) can share one kernel without touching each other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidArgument

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")


@dataclass(frozen=True)
class EngineConfig:
    root: Path = Path("/var/lib/berth")
    run: Path = Path("/run/berth")
    # Short instance prefix (2-8 chars) so interface names stay <= 15 chars.
    prefix: str = "berth"
    # "crun", "runc" or "" for auto (crun where the host allows it).
    runtime: str = ""
    # Named network namespace that this instance treats as its host ("" = real host).
    host_netns: str = ""
    conmon: str = "conmon"
    # The network of containers run without --network ("bridge" as Docker's).
    default_network: str = "bridge"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise InvalidArgument(
                f"invalid engine prefix {self.prefix!r}: 2-8 lowercase letters/digits, starting with a letter"
            )

    @classmethod
    def from_env(cls, env: dict | None = None) -> EngineConfig:
        env = os.environ if env is None else env
        return cls(
            root=Path(env.get("BERTH_ROOT", "/var/lib/berth")),
            run=Path(env.get("BERTH_RUN", "/run/berth")),
            prefix=env.get("BERTH_PREFIX", "berth"),
            runtime=env.get("BERTH_RUNTIME", ""),
            host_netns=env.get("BERTH_HOST_NETNS", ""),
            default_network=env.get("BERTH_DEFAULT_NETWORK", "") or "bridge",
        )

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce this config in a child process."""
        return {
            "BERTH_ROOT": str(self.root),
            "BERTH_RUN": str(self.run),
            "BERTH_PREFIX": self.prefix,
            "BERTH_RUNTIME": self.runtime,
            "BERTH_HOST_NETNS": self.host_netns,
            "BERTH_DEFAULT_NETWORK": self.default_network,
        }

    # Layout of the root directory ------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "berth.db"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def locks_dir(self) -> Path:
        return self.run / "locks"

    @property
    def exits_dir(self) -> Path:
        return self.run / "exits"

    @property
    def cgroup_parent(self) -> str:
        """Name of the cgroup directory (under each hierarchy) holding our containers."""
        return self.prefix
