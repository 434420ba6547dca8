"""The admin's integration form, built from the kind's declaration
(`controlplane.integrations`): one password input per secret, one input per setting.

A secret is write-only: the input never renders it back, and left blank on an edit it
keeps the stored value. Settings are plain and show their current value.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms

from controlplane.integrations import IntegrationKind, SecretField, SettingField
from controlplane.models import Integration

# Input names: a kind's field names may not clash with the model's own.
SECRET_INPUT_PREFIX = "secret_"  # noqa: S105  (a name, not a password)
SETTING_INPUT_PREFIX = "setting_"
MAX_SECRET_LENGTH = 4000


def secret_input_name(field: SecretField) -> str:
    return f"{SECRET_INPUT_PREFIX}{field.name}"


def setting_input_name(field: SettingField) -> str:
    return f"{SETTING_INPUT_PREFIX}{field.name}"


class IntegrationForm(forms.ModelForm):
    """The fields every kind has; `integration_form(kind)` adds the kind's own."""

    declaration: ClassVar[IntegrationKind]

    class Meta:
        model = Integration
        fields = ["name", "kind", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        declaration = self.declaration
        if "kind" in self.fields:
            # The kind decides the fields below, so it is chosen before the form
            # (the add page's ?kind=) and never changed on it.
            kind = self.fields["kind"]
            assert isinstance(kind, forms.ChoiceField)
            kind.choices = [(declaration.kind, declaration.label)]
            kind.initial, kind.disabled = declaration.kind, True
        stored = self.instance.secrets if self.instance.pk else {}
        for secret in declaration.secrets:
            name = secret_input_name(secret)
            if name in self.fields and stored.get(secret.name):
                self.fields[name].help_text = (
                    f"{secret.help_text} Stored encrypted; leave blank to keep the current one."
                ).strip()
        for setting in declaration.settings:
            name = setting_input_name(setting)
            if name in self.fields:
                self.fields[name].initial = self.instance.setting(setting.name) or setting.default

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        declaration = self.declaration
        secrets = dict(self.instance.secrets) if self.instance.pk else {}
        for secret in declaration.secrets:
            name = secret_input_name(secret)
            value = cleaned.get(name) or ""
            if value:
                secrets[secret.name] = value
            elif secret.required and not secrets.get(secret.name):
                self.add_error(
                    name,
                    f"A {declaration.label} integration needs a {secret.label.lower()}.",
                )
        settings = dict(self.instance.settings or {})
        for setting in declaration.settings:
            name = setting_input_name(setting)
            if name in cleaned:
                settings[setting.name] = cleaned[name] or setting.default
        if declaration.validate is not None and not self.errors:
            inputs = {f.name: secret_input_name(f) for f in declaration.secrets}
            inputs |= {f.name: setting_input_name(f) for f in declaration.settings}
            for field, error in declaration.validate(secrets, settings).items():
                self.add_error(inputs.get(field), error)
        self.instance.set_secrets(secrets)
        self.instance.settings = settings
        return cleaned


def _secret_input(field: SecretField) -> forms.CharField:
    return forms.CharField(
        label=field.label,
        required=False,
        max_length=MAX_SECRET_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=f"{field.help_text} Stored encrypted; never shown again.".strip(),
        validators=[_no_control_characters],
    )


def _setting_input(field: SettingField) -> forms.Field:
    common: dict[str, Any] = {
        "label": field.label,
        "required": field.required and not field.default,
        "help_text": field.help_text,
    }
    if field.choices:
        return forms.ChoiceField(choices=field.choices, **common)
    if field.is_url:
        return forms.URLField(max_length=500, assume_scheme="https", **common)
    return forms.CharField(max_length=500, **common)


def _no_control_characters(value: str) -> None:
    # Secrets travel in HTTP headers: a line break there would split the request.
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise forms.ValidationError("It cannot contain line breaks or control characters.")


_forms: dict[str, type[IntegrationForm]] = {}


def integration_form(declaration: IntegrationKind) -> type[IntegrationForm]:
    """The form class of a kind, built once from its declaration."""
    form = _forms.get(declaration.kind)
    if form is None or form.declaration is not declaration:
        inputs: dict[str, Any] = {
            secret_input_name(f): _secret_input(f) for f in declaration.secrets
        }
        inputs |= {setting_input_name(f): _setting_input(f) for f in declaration.settings}
        name = f"{declaration.kind.title()}IntegrationForm"
        form = type(name, (IntegrationForm,), {**inputs, "declaration": declaration})
        _forms[declaration.kind] = form
    return form


def input_names(declaration: IntegrationKind) -> tuple[list[str], list[str]]:
    """The form's secret inputs and setting inputs, in declared order."""
    return (
        [secret_input_name(f) for f in declaration.secrets],
        [setting_input_name(f) for f in declaration.settings],
    )
