from django.apps import AppConfig


class ResourcesConfig(AppConfig):
    name = "dashboard.resources"
    label = "berth_resources"
