"""Every editable model's admin form, its list and its search, fed what a fuzzer types:
an error on the form or the list, never a 500, and nothing half-written."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.db import models
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.integrations import declared_kinds
from tests.fuzz.conftest import record_status
from tests.fuzz.form_values import form_value, query_strings

PRODUCT_APPS = {"controlplane", "routing", "chat", "selfheal", "healthmon", "auth"}


def _product_admins() -> list[tuple[type[models.Model], admin.ModelAdmin[Any]]]:
    return sorted(
        (
            (model, model_admin)
            for model, model_admin in admin.site._registry.items()
            if model._meta.app_label in PRODUCT_APPS
        ),
        key=lambda pair: pair[0]._meta.label,
    )


ADMINS = _product_admins()
LISTS = [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m, _ in ADMINS]
# Add pages whose form depends on a kind chosen first (?kind=): one form per kind.
ADD_PAGES = [
    *(f"{url}add/" for url in LISTS if url != "/admin/controlplane/integration/"),
    *(f"/admin/controlplane/integration/add/?kind={kind.kind}" for kind in declared_kinds()),
]
# Every model's list and form is a test of its own: a sixth of the profile's
# examples each keeps the suite's share bounded (about 550 requests in CI).
PER_ADMIN = settings(max_examples=max(10, settings.default.max_examples // 6))


def _add_form_fields(client: Client, url: str) -> list[str] | None:
    response = client.get(url)
    if response.status_code != 200 or response.context is None:
        return None  # read-only history: nobody adds through the admin
    form = response.context["adminform"].form
    return list(form.fields)


@pytest.fixture
def admin_client_as_superuser(superuser: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(superuser)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("list_url", LISTS)
@PER_ADMIN
@given(query=query_strings)
def test_a_list_answers_any_query_string_without_a_500(
    admin_client_as_superuser: Client, list_url: str, query: dict[str, str]
) -> None:
    response = admin_client_as_superuser.get(list_url, query)
    record_status(f"GET {list_url}", response.status_code)
    assert response.status_code < 500


@pytest.mark.django_db
@pytest.mark.parametrize("add_url", ADD_PAGES)
@PER_ADMIN
@given(data=st.data())
def test_an_add_form_answers_any_input_with_form_errors_not_a_500(
    admin_client_as_superuser: Client, add_url: str, data: st.DataObject
) -> None:
    fields = _add_form_fields(admin_client_as_superuser, add_url)
    if fields is None:
        return
    body = {name: data.draw(form_value, label=name) for name in fields}
    response = admin_client_as_superuser.post(add_url, body)
    record_status(f"POST {add_url}", response.status_code)
    assert response.status_code < 500
    if response.status_code == 200 and "secret" not in response.context:
        # Re-shown: the form says why (a new key or token is shown once instead).
        form = response.context["adminform"].form
        assert form.errors or response.context.get("errors"), "re-shown without saying why"
