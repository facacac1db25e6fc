from django.urls import path  # noqa: F401

app_name = "resources"  # routes: volumes/, networks/, system/
urlpatterns: list = []
