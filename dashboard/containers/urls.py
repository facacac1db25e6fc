from django.urls import path

from dashboard.containers import views

app_name = "containers"
urlpatterns: list = [
    path("", views.container_list, name="list"),
    path("bulk/", views.bulk, name="bulk"),
    path("run/", views.run, name="run"),
    path("<str:ref>/", views.detail, name="detail"),
    path("<str:ref>/logs/download/", views.logs_download, name="logs_download"),
    path("<str:ref>/action/<str:action>/", views.action, name="action"),
    path("<str:ref>/<str:tab>/", views.detail, name="tab"),
]
