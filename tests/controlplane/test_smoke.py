from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_home_renders_for_an_observer(client, observer):
    client.force_login(observer)
    response = client.get("/")
    assert response.status_code == 200
    assert b"Pending approvals" in response.content
