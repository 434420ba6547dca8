from __future__ import annotations

from django import forms


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    note = forms.CharField(required=False, max_length=2000)


class ToggleChangeRequestForm(forms.Form):
    key = forms.CharField(max_length=100)
    enabled = forms.TypedChoiceField(
        choices=[("true", "Turn on"), ("false", "Turn off")], coerce=lambda v: v == "true"
    )
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why."},
    )


class ToggleSwitchForm(forms.Form):
    """An Owner's switch of one toggle on the Toggles page: which, to what, and why."""

    key = forms.CharField(max_length=100, error_messages={"required": "Name the toggle."})
    enabled = forms.TypedChoiceField(
        choices=[("true", "Switch on"), ("false", "Switch off")], coerce=lambda v: v == "true"
    )
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why."},
    )
