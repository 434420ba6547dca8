"""The stale write-off sweep: a reservation still held long after any call ends
belongs to a call whose process stopped before recording it."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from routing.models import OperationLog, Reservation
from routing.reservations import settle

log = logging.getLogger(__name__)

# A reservation still held after this long belongs to a call whose process stopped.
STALE_AFTER = timedelta(hours=1)
SWEEP_BATCH = 500

WRITE_OFF_ERROR = (
    "The call's outcome was never recorded (the process serving it stopped): charged "
    "at its reservation, the most it was allowed to cost."
)


def write_off_stale_reservations(older_than: timedelta = STALE_AFTER) -> int:
    """Periodic sweep: a reservation held longer than any call lasts belongs to a
    call whose process stopped before recording it (mid-call, or after answering).
    The provider may well have charged for it, so the money is not given back: the
    reservation is settled at its amount and the call gets its log row, marked as
    charged at its reservation. Returns how many were written off."""
    cutoff = timezone.now() - older_than
    stale = Reservation.objects.filter(status=Reservation.Status.HELD, created_at__lt=cutoff)
    written_off = 0
    for reservation in stale.order_by("pk")[:SWEEP_BATCH]:
        with transaction.atomic():
            if not settle(reservation, reservation.amount):
                continue  # recorded meanwhile
            OperationLog.objects.create(
                request_id=reservation.request_id,
                operation=reservation.operation,
                service=reservation.service,
                user_id=reservation.user_id,
                cost=reservation.amount,
                cost_source=OperationLog.CostSource.RESERVED,
                status=OperationLog.Status.ERROR,
                error=WRITE_OFF_ERROR,
            )
        written_off += 1
        log.warning(
            "wrote off the stale reservation %s (%s), held since %s",
            reservation.request_id,
            reservation.amount,
            reservation.created_at.isoformat(),
        )
    return written_off
