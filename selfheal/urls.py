from __future__ import annotations

from django.urls import path

from selfheal import views

app_name = "selfheal"
urlpatterns = [
    path("", views.index, name="index"),
    path("engine/", views.engine, name="engine"),
    path("diagnose/", views.diagnose, name="diagnose"),
    path("repair/", views.repair, name="repair"),
    path("autoheal/", views.autoheal, name="autoheal"),
    path(
        "executions/<int:execution_id>/rollback/",
        views.rollback_execution,
        name="rollback",
    ),
    path("tasks/<int:task_id>/retry/", views.retry_task, name="retry_task"),
    path("tasks/<int:task_id>/cancel/", views.cancel_task, name="cancel_task"),
    path("tasks/<int:task_id>/done/", views.done_task, name="done_task"),
]
