"""Admin lists that refuse a query string the database cannot run, as Django refuses
one it cannot build: a lookup on a key past its range (`?id__in=9223372036854775808`)
builds fine and only fails when the list is counted (an OverflowError on SQLite, a
DataError where the database range-checks it). `ControlPlaneAdminSite` gives every
registered ModelAdmin this list, which turns such a failure into Django's own
"incorrect lookup" answer: a redirect to the list with `?e=1`."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import DataError, transaction
from django.http import HttpRequest


class InRangeChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        try:
            # A savepoint: on PostgreSQL a refused statement must not spoil a caller's
            # transaction (the redirect is answered inside it).
            with transaction.atomic(using=self.queryset.db):
                super().get_results(request)
        except (OverflowError, DataError) as error:
            raise IncorrectLookupParameters(error) from error


class InRangeListMixin:
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return InRangeChangeList
