"""OperationLog.kind and its units besides tokens (images, seconds of audio and video,
characters), each added with one ALTER TABLE on both databases, as `usage_flag` was
(0008): Django would rebuild the table on SQLite and drop the append-only log's
triggers with the old one."""

from django.db import migrations, models

import routing.models.catalog

COLUMNS = {
    "kind": "varchar(16) NOT NULL DEFAULT 'chat'",
    "images": 'integer NOT NULL DEFAULT 0 CHECK ("images" >= 0)',
    "audio_seconds": "numeric(12, 3) NOT NULL DEFAULT 0",
    "video_seconds": "numeric(12, 3) NOT NULL DEFAULT 0",
    "characters": 'integer NOT NULL DEFAULT 0 CHECK ("characters" >= 0)',
}


def _add(name: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"ALTER TABLE routing_operationlog ADD COLUMN {name} {COLUMNS[name]}",
        f"ALTER TABLE routing_operationlog DROP COLUMN {name}",
    )


class Migration(migrations.Migration):
    dependencies = [("routing", "0009_operation_log_truncate_and_sqlite_guards")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[_add(name) for name in COLUMNS],
            state_operations=[
                migrations.AddField(
                    model_name="operationlog",
                    name="kind",
                    field=models.CharField(
                        choices=routing.models.catalog.CallKind.choices,
                        db_default="chat",
                        default="chat",
                        max_length=16,
                    ),
                ),
                migrations.AddField(
                    model_name="operationlog",
                    name="images",
                    field=models.PositiveIntegerField(db_default=0, default=0),
                ),
                migrations.AddField(
                    model_name="operationlog",
                    name="audio_seconds",
                    field=models.DecimalField(
                        db_default=0, decimal_places=3, default=0, max_digits=12
                    ),
                ),
                migrations.AddField(
                    model_name="operationlog",
                    name="video_seconds",
                    field=models.DecimalField(
                        db_default=0, decimal_places=3, default=0, max_digits=12
                    ),
                ),
                migrations.AddField(
                    model_name="operationlog",
                    name="characters",
                    field=models.PositiveIntegerField(db_default=0, default=0),
                ),
            ],
        )
    ]
