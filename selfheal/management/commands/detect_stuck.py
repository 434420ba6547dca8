"""`bin/manage detect_stuck`: run the stuck detector once and print what it did.

Workers silent for three heartbeat intervals go offline and their tasks go back to
the queue; running tasks past their lease go back to pending, or fail when they
have no attempts left. The same runs every 15 seconds in the periodic schedule.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from selfheal.stuck import detect_stuck


class Command(BaseCommand):
    help = "Put back the work of expired leases and silent workers; print what changed."

    def handle(self, *args: Any, **options: Any) -> None:
        report = detect_stuck()
        for worker in report.offline:
            heard = (
                f"{worker.last_heartbeat:%Y-%m-%d %H:%M:%S %Z}"
                if worker.last_heartbeat
                else "never"
            )
            self.stdout.write(f"Worker {worker.name}: offline (last heartbeat {heard}).")
        for task in report.requeued:
            self.stdout.write(
                f"Task #{task.pk} “{task.title}”: back to pending "
                f"(attempt {task.attempts} of {task.max_attempts} used). {task.error}"
            )
        for task in report.failed:
            self.stdout.write(
                f"Task #{task.pk} “{task.title}”: failed after {task.attempts} attempts. "
                f"{task.error}"
            )
        if not report.changed_anything:
            self.stdout.write("Nothing stuck: every running task holds a live lease.")
            return
        self.stdout.write(
            f"Done: {len(report.offline)} workers offline, {len(report.requeued)} tasks "
            f"back to pending, {len(report.failed)} failed."
        )
