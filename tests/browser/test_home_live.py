from __future__ import annotations

from typing import Any

import pytest

from controlplane.models import Approval, FeatureToggle
from tests.personas import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def test_an_approval_requested_elsewhere_appears_on_home_without_reloading(
    live_server_url: str, browser: Any, owner: Any, operator: Any
) -> None:
    FeatureToggle.objects.create(key="reports.weekly", enabled=True, description="Weekly report")
    owner_view = browser.new_context()
    operator_view = browser.new_context()
    try:
        home = owner_view.new_page()
        log_in(home, live_server_url, owner.username)
        assert "Nothing waits for a decision" in home.inner_text("#pending-approvals")
        home.wait_for_function("() => window.htmx !== undefined")
        # The websocket is open once htmx's ws extension reports it.
        home.wait_for_function(
            "() => document.querySelector('[ws-connect]')['htmx-internal-data']"
            "?.webSocket?.socket?.readyState === 1"
        )
        navigations = []
        home.on("framenavigated", lambda frame: navigations.append(frame.url))

        other = operator_view.new_page()
        log_in(other, live_server_url, operator.username)
        other.goto(f"{live_server_url}/toggles/")
        other.select_option("#id_key", "reports.weekly")
        other.select_option("#id_enabled", "false")
        other.fill("#id_reason", "Quiet period during the <migration>")
        other.click("text=Request approval")
        other.wait_for_selector("text=an Owner decides")

        row = home.wait_for_selector("#pending-approvals .approval")
        assert "Quiet period during the <migration>" in row.inner_text()
        assert home.inner_text("#pending-count") == "1"
        assert home.is_visible("#pending-approvals button[value=approve]")
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        owner_view.close()
        operator_view.close()


def test_an_approval_pushed_live_to_home_is_approved_by_clicking_without_a_reload(
    live_server_url: str, browser: Any, owner: Any, operator: Any
) -> None:
    toggle = FeatureToggle.objects.create(
        key="reports.weekly", enabled=True, description="Weekly report"
    )
    owner_view = browser.new_context()
    operator_view = browser.new_context()
    try:
        home = owner_view.new_page()
        log_in(home, live_server_url, owner.username)
        home.wait_for_function(
            "() => document.querySelector('[ws-connect]')?.['htmx-internal-data']"
            "?.webSocket?.socket?.readyState === 1"
        )
        other = operator_view.new_page()
        log_in(other, live_server_url, operator.username)
        other.goto(f"{live_server_url}/toggles/")
        other.select_option("#id_key", "reports.weekly")
        other.select_option("#id_enabled", "false")
        other.fill("#id_reason", "Quiet period")
        other.click("text=Request approval")
        other.wait_for_selector("text=an Owner decides")

        # The row came over /ws/home/, rendered without a request: no token field.
        home.click("#pending-approvals .approval button[value=approve]")

        home.wait_for_url(f"{live_server_url}/approvals/")
        assert "approved" in home.inner_text(".messages")
        [approval] = Approval.objects.all()
        assert approval.status == Approval.Status.APPROVED
        toggle.refresh_from_db()
        assert toggle.enabled is False
    finally:
        owner_view.close()
        operator_view.close()
