from __future__ import annotations

from django.urls import path

from healthmon import views

app_name = "healthmon"
urlpatterns = [path("", views.index, name="index")]
