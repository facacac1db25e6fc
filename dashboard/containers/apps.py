from django.apps import AppConfig


class ContainersConfig(AppConfig):
    name = "dashboard.containers"
    label = "berth_containers"
