from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

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
    value = forms.DecimalField(min_value=Decimal("0.000001"), required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("budget") and cleaned.get("value") is None:
            self.add_error("value", "Say what to raise the budget to.")
        return cleaned

    def limits(self) -> dict[str, Any]:
        budget = self.cleaned_data.get("budget")
        return {budget: self.cleaned_data["value"]} if budget else {}
