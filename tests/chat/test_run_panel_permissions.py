"""The run panel asks each viewer's permissions the way a page asks `perms`: Operators
retry and raise step budgets, only Owners raise a cost budget or switch a toggle back
on, Observers only watch; a live frame is shared only by viewers who may do the same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chat import consumers
from chat.consumers import rendered
from chat.models import StopReason, StreamEvent
from chat.rendering import render_event, viewer_permissions

RUN_ID = 7
RAISE_COST = {
    "reason": StopReason.COST_BUDGET,
    "next_action": {
        "kind": "raise_budget",
        "label": "Run again with $1.00",
        "budget": "max_cost",
        "value": "1.00",
        "mode": "normal",
        "tier": "owner",
    },
}
SWITCH_ON = {
    "reason": StopReason.TOGGLE_OFF,
    "next_action": {
        "kind": "enable_toggle",
        "label": "Switch chat.runs.enabled on",
        "toggle": "chat.runs.enabled",
        "url": "/toggles/",
        "tier": "owner",
    },
}


@pytest.fixture(autouse=True)
def _forget_rendered_frames() -> Iterator[None]:
    # Frames are kept per process by run and seq: this run's id is made up.
    consumers._recent_frames.clear()
    yield
    consumers._recent_frames.clear()


def _stop_reason(user: Any, data: dict[str, Any]) -> str:
    return render_event(
        RUN_ID, StreamEvent.Type.STOP_REASON, data, perms=viewer_permissions(user), oob=False
    )


@pytest.mark.django_db
def test_only_an_owner_is_offered_a_bigger_cost_budget(observer, operator, owner):
    for person in (observer, operator):
        html = _stop_reason(person, RAISE_COST)
        assert "An Owner can do this." in html
        assert "Raise this mode&#x27;s budget" not in html
        assert '"budget": "max_cost"' not in html
    html = _stop_reason(owner, RAISE_COST)
    assert "can do this" not in html
    assert f'hx-post="/chat/runs/{RUN_ID}/retry/"' in html
    assert "Raise this mode" in html


@pytest.mark.django_db
def test_only_an_owner_is_offered_to_switch_a_toggle_back_on(operator, owner):
    assert "An Owner can do this." in _stop_reason(operator, SWITCH_ON)
    html = _stop_reason(owner, SWITCH_ON)
    assert "can do this" not in html
    # The event's stored url predates the switches: the page still leads to the switch.
    assert 'href="/toggles/?toggle=chat.runs.enabled#toggle-chat.runs.enabled"' in html


@pytest.mark.django_db
def test_an_observer_is_not_offered_the_retry_modes(observer, operator):
    assert 'id="retry-modes"' not in _stop_reason(observer, RAISE_COST)
    assert 'id="retry-modes"' in _stop_reason(operator, RAISE_COST)


@pytest.mark.django_db
def test_a_live_frame_is_not_shared_between_an_operator_and_an_owner(operator, owner):
    events = [{"seq": 1, "event_type": StreamEvent.Type.STOP_REASON, "data": RAISE_COST}]
    for_operator = rendered(RUN_ID, events, viewer_permissions(operator))
    for_owner = rendered(RUN_ID, events, viewer_permissions(owner))
    assert "An Owner can do this." in for_operator
    assert "An Owner can do this." not in for_owner
