"""The engine's facade. The dashboard, Celery tasks and the CLI use only this.

``Engine`` is assembled from one mixin per area (containers, images, volumes,
system); each mixin lives beside the code it fronts. Option objects in, plain
report dicts/dataclasses out, errors from engine.errors.
"""

from __future__ import annotations

from functools import cached_property

from engine.api_advise import AdviseAPI
from engine.api_build import BuildAPI
from engine.api_images import ImagesAPI
from engine.api_maint import MaintAPI
from engine.api_networks import NetworksAPI
from engine.api_registry import RegistryAPI
from engine.api_system import SystemAPI
from engine.api_topology import TopologyAPI
from engine.api_volumes import VolumesAPI
from engine.config import EngineConfig
from engine.containers.api import ContainersAPI
from engine.containers.api_ops import ContainerOpsAPI
from engine.containers.api_stats import ContainerStatsAPI
from engine.events import append as _append_event
from engine.events import default_actor
from engine.network.kernel import NetworkKernelAPI
from engine.state import StateDB


class Engine(
    ContainersAPI,
    ContainerOpsAPI,
    ContainerStatsAPI,
    ImagesAPI,
    VolumesAPI,
    SystemAPI,
    MaintAPI,
    NetworksAPI,
    NetworkKernelAPI,
    BuildAPI,
    RegistryAPI,
    TopologyAPI,
    AdviseAPI,
):
    def __init__(self, config: EngineConfig | None = None, actor: str | None = None):
        self.config = config or EngineConfig.from_env()
        # Who acts: the dashboard passes "user:<name>", the CLI the Unix uid.
        self.actor = actor or default_actor()

    @cached_property
    def db(self) -> StateDB:
        return StateDB(self.config.db_path)

    @cached_property
    def images(self):
        from engine.images.store import ImageStore

        return ImageStore(self.config.images_dir, self.config.locks_dir)

    def emit(self, type_: str, action: str, obj_id: str, **attrs: object) -> int:
        """Append an event (with this engine's actor); returns its sequence number."""
        return _append_event(self.db, self.actor, type_, action, obj_id, **attrs)
