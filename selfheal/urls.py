from __future__ import annotations

from django.urls import path

from selfheal import views

app_name = "selfheal"
urlpatterns = [path("", views.index, name="index")]
