from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "dashboard.core"
    default_auto_field = "django.db.models.BigAutoField"
