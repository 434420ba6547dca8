"""Rating a run's reply: who may, when, and what the verdict is attributed to."""

from __future__ import annotations

from chat.models import Run, RunRating, RunStatus
from chat.run_calls import models_that_answered
from controlplane.tiers import StaffUser


class NotRatable(Exception):
    """The run has no finished reply to rate yet."""


def can_rate(run: Run) -> bool:
    # A reply is judged once it is whole: a working run's reply is still growing.
    return run.status == RunStatus.STOPPED


def rate_run(run: Run, user: StaffUser, verdict: str) -> RunRating:
    """Record `user`'s verdict on the run's reply, or change the one they gave. Every
    staff member who can see the run may rate it: a verdict is an opinion about a
    reply, not a change to what the system does. Audited (`RunRating` is audited)."""
    if not can_rate(run):
        raise NotRatable(f"Run #{run.pk} is still {run.get_status_display().lower()}.")
    if verdict not in RunRating.Verdict.values:
        raise ValueError(f"Unknown verdict {verdict!r}: rate a reply good or bad.")
    # update_or_create settles two clicks at once on the unique (run, person) pair.
    rating, _ = RunRating.objects.update_or_create(
        run=run,
        rated_by=user,
        defaults={"verdict": verdict, "answered_by": models_that_answered(run.pk)},
    )
    return rating


def rating_summary(run: Run, user: StaffUser) -> dict[str, object]:
    """What the rating control shows: the person's own verdict and everyone's count."""
    verdicts = list(RunRating.objects.filter(run=run).values_list("rated_by_id", "verdict"))
    return {
        "mine": next((v for who, v in verdicts if who == user.pk), ""),
        "good": sum(v == RunRating.Verdict.GOOD for _, v in verdicts),
        "bad": sum(v == RunRating.Verdict.BAD for _, v in verdicts),
    }
