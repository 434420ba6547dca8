"""OperationLog.usage_flag: what a provider reported that could not be used.

Added with one ALTER TABLE on both databases: Django would rebuild the table on
SQLite (a new table, the rows copied, the old one dropped), and the append-only
log's triggers would go with the old table.
"""

from django.db import migrations, models

ADD = "ALTER TABLE routing_operationlog ADD COLUMN usage_flag text NOT NULL DEFAULT ''"
DROP = "ALTER TABLE routing_operationlog DROP COLUMN usage_flag"


class Migration(migrations.Migration):
    dependencies = [("routing", "0007_recommendation_dismiss_permission")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD, DROP)],
            state_operations=[
                migrations.AddField(
                    model_name="operationlog",
                    name="usage_flag",
                    field=models.TextField(
                        blank=True,
                        db_default="",
                        default="",
                        help_text="What the provider reported that could not be used, and "
                        "what was used instead.",
                    ),
                )
            ],
        )
    ]
