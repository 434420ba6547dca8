from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from controlplane.checks import critical_toggles
from controlplane.models import FeatureToggle

pytestmark = pytest.mark.django_db


# The critical toggles the migrations seed, in their required states.
SEEDED = {"notifications.enabled": True, "routing.budgets.enforced": True}


def error_ids() -> list[str]:
    return [error.id for error in critical_toggles()]


def set_enabled(key: str, enabled: bool) -> None:
    FeatureToggle.objects.filter(key=key).update(enabled=enabled)


def test_the_migrated_database_passes_the_default_critical_toggles(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED}
    assert critical_toggles() == []


def test_no_errors_when_every_critical_toggle_exists_in_its_required_state(settings):
    FeatureToggle.objects.create(key="agents.kill-switch", enabled=False, critical=True)
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.kill-switch": False}
    assert critical_toggles() == []


def test_a_missing_critical_toggle_is_e001(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.kill-switch": False}
    errors = critical_toggles()
    assert [error.id for error in errors] == ["controlplane.E001"]
    assert "'agents.kill-switch' does not exist" in errors[0].msg
    assert "off" in errors[0].hint


def test_a_critical_toggle_that_is_off_when_it_must_be_on_is_e002(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED}
    set_enabled("notifications.enabled", False)
    errors = critical_toggles()
    assert [error.id for error in errors] == ["controlplane.E002"]
    assert "'notifications.enabled' must be on" in errors[0].msg


def test_a_critical_toggle_that_is_on_when_it_must_be_off_is_e002(settings):
    FeatureToggle.objects.create(key="agents.kill-switch", enabled=True, critical=True)
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.kill-switch": False}
    errors = critical_toggles()
    assert [error.id for error in errors] == ["controlplane.E002"]
    assert "'agents.kill-switch' must be off" in errors[0].msg


def test_a_row_marked_critical_without_a_required_state_is_e003(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED}
    FeatureToggle.objects.create(key="agents.kill-switch", critical=True)
    errors = critical_toggles()
    assert [error.id for error in errors] == ["controlplane.E003"]
    assert "'agents.kill-switch' is marked critical" in errors[0].msg


def test_an_empty_critical_toggles_setting_flags_the_migrated_critical_rows(settings):
    settings.CRITICAL_TOGGLES = {}
    assert error_ids() == ["controlplane.E003", "controlplane.E003"]  # both seeded rows


def test_a_critical_toggle_in_the_setting_need_not_be_marked_critical(settings):
    FeatureToggle.objects.create(key="agents.kill-switch", enabled=False)
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.kill-switch": False}
    assert critical_toggles() == []


def test_every_problem_is_reported_at_once(settings):
    set_enabled("notifications.enabled", False)
    FeatureToggle.objects.create(key="agents.unlisted", critical=True)
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.missing": True}
    assert sorted(error_ids()) == ["controlplane.E001", "controlplane.E002", "controlplane.E003"]


def test_a_locked_critical_toggle_in_the_right_state_passes(settings):
    FeatureToggle.objects.filter(key="notifications.enabled").update(locked=True)
    settings.CRITICAL_TOGGLES = {**SEEDED}
    assert critical_toggles() == []


def test_manage_check_passes_when_the_critical_toggles_are_right(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED}
    out = StringIO()
    call_command("check", stdout=out, stderr=StringIO())
    assert "no issues" in out.getvalue()


def test_manage_check_fails_when_a_critical_toggle_is_in_the_wrong_state(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED}
    set_enabled("notifications.enabled", False)
    with pytest.raises(SystemCheckError, match=re.escape("controlplane.E002")):
        call_command("check", stdout=StringIO(), stderr=StringIO())


def test_manage_check_fails_when_a_critical_toggle_is_missing(settings):
    settings.CRITICAL_TOGGLES = {**SEEDED, "agents.kill-switch": False}
    with pytest.raises(SystemCheckError, match=re.escape("controlplane.E001")):
        call_command("check", stdout=StringIO(), stderr=StringIO())
