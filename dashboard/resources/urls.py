from django.urls import path

from dashboard.resources import views_networks, views_system, views_volumes

app_name = "resources"  # mounted at the root: volumes/, networks/, system/
urlpatterns = [
    path("volumes/", views_volumes.volumes, name="volumes"),
    path("volumes/create/", views_volumes.volume_create, name="volume_create"),
    path("volumes/prune/", views_volumes.volume_prune, name="volume_prune"),
    path("volumes/<str:name>/", views_volumes.volume_detail, name="volume"),
    path("volumes/<str:name>/remove/", views_volumes.volume_remove, name="volume_remove"),
    path("networks/", views_networks.networks, name="networks"),
    path("networks/create/", views_networks.network_create, name="network_create"),
    path("networks/<str:ref>/", views_networks.network_detail, name="network"),
    path("networks/<str:ref>/connect/", views_networks.network_connect, name="network_connect"),
    path(
        "networks/<str:ref>/disconnect/",
        views_networks.network_disconnect,
        name="network_disconnect",
    ),  # fmt: skip
    path("networks/<str:ref>/remove/", views_networks.network_remove, name="network_remove"),
    path("system/", views_system.system, name="system"),
    path("system/prune/", views_system.system_prune, name="system_prune"),
]
