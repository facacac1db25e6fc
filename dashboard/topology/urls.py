from django.urls import path

from dashboard.topology import views

app_name = "topology"
urlpatterns = [
    path("", views.page, name="page"),
    path("graph.json", views.graph_json, name="graph_json"),
    path("node/<path:node_id>/", views.node, name="node"),
    path("reach/", views.reach, name="reach"),
    path("anatomy/<str:ref>/", views.anatomy, name="anatomy"),
]
