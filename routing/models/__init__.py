from __future__ import annotations

from routing.models.budgets import Budget, BudgetDay, Recommendation, Reservation
from routing.models.catalog import AIModel, Provider
from routing.models.costs import DailySpend, OperationLog
from routing.models.gateway import ServiceKey
from routing.models.routes import Mode, Policy, Route, RouteFallback, UpstreamApi

__all__ = [
    "AIModel",
    "Budget",
    "BudgetDay",
    "DailySpend",
    "Mode",
    "OperationLog",
    "Policy",
    "Provider",
    "Recommendation",
    "Reservation",
    "Route",
    "RouteFallback",
    "ServiceKey",
    "UpstreamApi",
]
