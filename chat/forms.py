from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from chat import budget_bounds
from chat.runs import LIMIT_FIELDS
from routing.models import Mode

MESSAGE_MAX_CHARS = 20_000


class NewSessionForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    mode = forms.ChoiceField(choices=Mode.choices, initial=Mode.NORMAL)


class ModeForm(forms.Form):
    mode = forms.ChoiceField(choices=Mode.choices)


class RunForm(forms.Form):
    message = forms.CharField(max_length=MESSAGE_MAX_CHARS, strip=True)
    mode = forms.ChoiceField(choices=Mode.choices)


class RetryForm(forms.Form):
    """Run a message again: in `mode` (its own when blank), with `budget` raised to `value`."""

    mode = forms.ChoiceField(choices=[("", "same"), *Mode.choices], required=False)
    budget = forms.ChoiceField(
        choices=[("", "none")] + [(f, f) for f in LIMIT_FIELDS], required=False
    )
    # Checked against the chosen budget's own bounds in clean(), saying which.
    value = forms.DecimalField(required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        budget, value = cleaned.get("budget"), cleaned.get("value")
        if budget and value is None and "value" not in self.errors:
            self.add_error("value", "Say what to raise the budget to.")
        elif budget and value is not None:
            problem = budget_bounds.problem(budget, value)
            if problem:
                self.add_error("value", f"{problem[0].upper()}{problem[1:]}.")
        return cleaned

    def limits(self) -> dict[str, Any]:
        budget = self.cleaned_data.get("budget")
        if not budget:
            return {}
        value: Decimal = self.cleaned_data["value"]
        return {budget: value if budget == "max_cost" else int(value)}


class SessionFilterForm(forms.Form):
    """The chat index's filter and search: by the last run's status, the session's
    mode and owner, and words in its title or its messages."""

    STATUS_CHOICES = [
        ("", "Any status"),
        ("running", "Running now"),
        ("waiting_approval", "Waiting for approval"),
        ("stopped", "Stopped"),
        ("never", "Never run"),
    ]
    q = forms.CharField(max_length=200, required=False, label="Search")
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    mode = forms.ChoiceField(choices=[("", "Any mode"), *Mode.choices], required=False)
    owner = forms.ChoiceField(choices=[("", "Anyone"), ("me", "Me")], required=False)
