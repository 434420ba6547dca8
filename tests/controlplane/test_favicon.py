"""The site's icon: named by every page of the product, and /favicon.ico (what
browsers ask for on pages that name none, the admin's) answers it instead of a 404."""

from __future__ import annotations

import re

from django.test import Client


def test_favicon_ico_leads_to_the_icon(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert icon["Content-Type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
    assert b"".join(icon.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert client.head("/favicon.ico")["Location"] == response["Location"]


def test_pages_name_the_svg_icon(client: Client) -> None:
    page = client.get("/accounts/login/").content.decode()

    found = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert found is not None
    icon = client.get(found.group(1))
    assert icon.status_code == 200
    assert icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)
