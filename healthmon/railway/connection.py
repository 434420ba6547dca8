"""The Railway integration's "Test connection": one cheap query with its token.

An account or team token asks who it belongs to (`me`); a project token asks which
project and environment it opens (`projectToken`), since it cannot read `me`.
"""

from __future__ import annotations

from django.utils import timezone

from controlplane.integrations import ConnectionResult
from controlplane.models import Integration
from healthmon.railway.client import (
    PROJECT_SCOPE,
    USER_META,
    RailwayClient,
    RailwayError,
)


def check_railway_connection(integration: Integration) -> ConnectionResult:
    try:
        with RailwayClient(integration, timeout=10.0) as client:
            if client.project_token:
                data = client.query(PROJECT_SCOPE, now=timezone.now())
                token = data.get("projectToken") or {}
                return ConnectionResult(
                    True,
                    f"Connected with a project token: project {token.get('projectId')}, "
                    f"environment {token.get('environmentId')}.",
                )
            data = client.query(USER_META, now=timezone.now())
    except RailwayError as exc:
        return ConnectionResult(False, str(exc))
    me = data.get("me") or {}
    who = me.get("name") or me.get("email") or "an unnamed account"
    email = f" <{me['email']}>" if me.get("email") and me.get("name") else ""
    return ConnectionResult(True, f"Connected as {who}{email}.")
