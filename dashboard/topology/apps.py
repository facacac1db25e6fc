from django.apps import AppConfig


class TopologyConfig(AppConfig):
    name = "dashboard.topology"
    label = "berth_topology"
