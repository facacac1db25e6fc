from django.urls import path  # noqa: F401

app_name = "live"  # routes: events/, tasks/
urlpatterns: list = []
