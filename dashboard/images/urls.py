from django.urls import path

from dashboard.images import views

app_name = "images"
urlpatterns = [
    path("", views.image_list, name="list"),
    path("pull/", views.pull, name="pull"),
    path("push/", views.push, name="push"),
    path("build/", views.build, name="build"),
    path("import/", views.import_archive, name="import"),
    path("export/", views.export, name="export"),
    path("exports/<str:task_id>/", views.export_download, name="export_download"),
    path("remove/", views.remove, name="remove"),
    path("prune/", views.prune, name="prune"),
    path("<str:image_id>/", views.image_detail, name="detail"),
    path("<str:image_id>/tag/", views.tag, name="tag"),
]
