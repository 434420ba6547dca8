"""Which gateway calls a run made: every model call of a run carries a request id
that starts with the run's own prefix, so the run's `OperationLog` rows are found by
that prefix (an indexed `LIKE 'run-12-%'`) without the routing log knowing about
runs."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from routing.models import OperationLog


def run_prefix(run_id: int) -> str:
    # The trailing dash keeps run 1's calls apart from run 12's.
    return f"run-{run_id}-"


def request_id_for(run_id: int) -> str:
    """A fresh request id for one model call of the run (fits the log's 64 characters)."""
    return f"{run_prefix(run_id)}{uuid.uuid4().hex}"


def calls_of(run_id: int) -> QuerySet[OperationLog]:
    return OperationLog.objects.filter(request_id__startswith=run_prefix(run_id))


def models_that_answered(run_id: int) -> list[str]:
    """The models whose answers made up the run's reply: those that answered in full
    or until the run was stopped (a refused or failed call wrote nothing of it)."""
    answered = calls_of(run_id).filter(
        status__in=[OperationLog.Status.OK, OperationLog.Status.CANCELLED]
    )
    return sorted(
        set(answered.exclude(model_used="").values_list("model_used", flat=True).order_by())
    )
