from __future__ import annotations

from django.urls import path

from routing import views

app_name = "routing"
urlpatterns = [path("", views.index, name="index")]
