"""URL map: one include per app, each app owns its prefix (see docs/architecture.md)."""

from django.urls import include, path

from dashboard.core import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("", include("dashboard.accounts.urls")),  # login, logout, password, users, teams, audit
    path("containers/", include("dashboard.containers.urls")),
    path("images/", include("dashboard.images.urls")),
    path("", include("dashboard.resources.urls")),  # volumes/, networks/, system/
    path("", include("dashboard.live.urls")),  # events/, tasks/
    path("topology/", include("dashboard.topology.urls")),
]
