"""Self-heal has one service account, and a finding says whether it needs a person.

1. The engine asked for approvals as `selfheal-engine`, the playbooks as
   `service-selfheal`; both are `service-selfheal` now. The old account is renamed,
   so the approvals and audit events it made stay attributed to the account that asks
   today. Where both exist already, the old one is left as it is: the audit trail is
   append-only, so its events cannot be moved to the other account.
2. Stored findings get `needs_person`, which the checks now set. Findings stored
   before were judged by their suggestion text (any sentence not starting with
   "Run repair" or "None needed" needed a person); that rule is applied here, once,
   so old reports show the same "Needs a person" box as before.
"""

import re

from django.db import migrations

OLD_ACCOUNT = "selfheal-engine"
ACCOUNT = "service-selfheal"

AUTOMATED_SUGGESTIONS = ("Run repair", "None needed")
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def one_service_account(apps, schema_editor):
    User = apps.get_model("auth", "User")
    if not User.objects.filter(username=ACCOUNT).exists():
        User.objects.filter(username=OLD_ACCOUNT).update(username=ACCOUNT)


def two_service_accounts(apps, schema_editor):
    """Reverse: the account that asked for unblock approvals gets its old name back
    when nothing else (no over-cap repair approval) was asked under the new one."""
    User = apps.get_model("auth", "User")
    Approval = apps.get_model("controlplane", "Approval")
    account = User.objects.filter(username=ACCOUNT).first()
    if account is None or User.objects.filter(username=OLD_ACCOUNT).exists():
        return
    asked = set(Approval.objects.filter(requested_by=account).values_list("action", flat=True))
    if asked and asked <= {"selfheal.unblock_task"}:
        User.objects.filter(pk=account.pk).update(username=OLD_ACCOUNT)


def judged_by_text(finding):
    if finding.get("severity", "ok") == "ok":
        return False
    sentences = SENTENCE_BREAK.split(str(finding.get("suggested_action") or "").strip())
    return any(s and not s.startswith(AUTOMATED_SUGGESTIONS) for s in sentences)


def structured_findings(apps, schema_editor):
    PlaybookExecution = apps.get_model("selfheal", "PlaybookExecution")
    for execution in PlaybookExecution.objects.only("pk", "findings").iterator():
        findings = execution.findings or []
        if not any(isinstance(f, dict) and "needs_person" not in f for f in findings):
            continue
        execution.findings = [
            {**f, "needs_person": judged_by_text(f)}
            if isinstance(f, dict) and "needs_person" not in f
            else f
            for f in findings
        ]
        execution.save(update_fields=["findings"])


class Migration(migrations.Migration):
    dependencies = [
        ("selfheal", "0002_seed"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("controlplane", "0003_append_only_triggers"),
    ]
    operations = [
        migrations.RunPython(one_service_account, two_service_accounts),
        # Reversing keeps the field: older code ignores it.
        migrations.RunPython(structured_findings, migrations.RunPython.noop),
    ]
