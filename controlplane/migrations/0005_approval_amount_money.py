# Approval.amount becomes money: exact on SQLite too (text there, as routing's and
# chat's money columns are), 30 digits and 18 places like every other amount.

from django.db import migrations

import controlplane.money

MONEY = {"approval": ["amount"]}


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0004_approval_owner_permission"),
    ]

    operations = [
        migrations.AlterField(
            model_name="approval",
            name="amount",
            field=controlplane.money.MoneyField(
                blank=True, help_text="USD, when money is involved.", null=True
            ),
        ),
        migrations.RunPython(
            controlplane.money.canonical_text_on_sqlite("controlplane", MONEY),
            migrations.RunPython.noop,
        ),
    ]
