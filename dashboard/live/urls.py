from django.urls import path

from dashboard.live import views

app_name = "live"  # routes: events/, tasks/
urlpatterns = [
    path("events/", views.events_page, name="events"),
    path("tasks/", views.tasks_page, name="tasks"),
    path("tasks/<str:task_id>/", views.task_page, name="task"),
]
