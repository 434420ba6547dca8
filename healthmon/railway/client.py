"""Railway's public GraphQL API (`https://backboard.railway.com/graphql/v2`), as
Railway's own CLI queries it (railwayapp/cli, `src/gql/queries/strings/`).

The three log queries answer the same way: the *last* `limit` lines of a time window,
oldest first (the CLI keeps the last `limit`, since the API may send one more). The
crawler pages backwards through a window with that (`healthmon.railway.crawler`).

Failures are typed so the crawler can act on them: `RailwayAuthError` (401/403 or a
GraphQL "Not Authorized"), `RailwayRateLimited` (429, with when to come back),
`RailwayUnavailable` (5xx or the network), `RailwayQueryError` (anything else the API
refused). Messages never hold the token or the request's headers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from controlplane.integrations import auth_headers
from controlplane.integrations import setting as kind_setting
from controlplane.models import Integration

DEFAULT_API_URL = "https://backboard.railway.com/graphql/v2"

_LOG_FIELDS = """
fragment LogFields on Log {
  timestamp
  message
  severity
  attributes { key value }
  tags { deploymentId serviceId environmentId }
}
"""

DEPLOYMENT_LOGS = (
    """
query DeploymentLogs($deploymentId: String!, $limit: Int, $filter: String,
                     $startDate: DateTime, $endDate: DateTime) {
  deploymentLogs(deploymentId: $deploymentId, limit: $limit, filter: $filter,
                 startDate: $startDate, endDate: $endDate) { ...LogFields }
}
"""
    + _LOG_FIELDS
)

ENVIRONMENT_LOGS = (
    """
query EnvironmentLogs($environmentId: String!, $filter: String, $beforeLimit: Int,
                      $beforeDate: String, $anchorDate: String, $afterDate: String,
                      $afterLimit: Int) {
  environmentLogs(environmentId: $environmentId, filter: $filter,
                  beforeLimit: $beforeLimit, beforeDate: $beforeDate,
                  anchorDate: $anchorDate, afterDate: $afterDate,
                  afterLimit: $afterLimit) { ...LogFields }
}
"""
    + _LOG_FIELDS
)

HTTP_LOGS = """
query HttpLogs($deploymentId: String!, $filter: String, $beforeLimit: Int!,
               $beforeDate: String, $anchorDate: String, $afterDate: String,
               $afterLimit: Int) {
  httpLogs(deploymentId: $deploymentId, filter: $filter, beforeLimit: $beforeLimit,
           beforeDate: $beforeDate, anchorDate: $anchorDate, afterDate: $afterDate,
           afterLimit: $afterLimit) {
    timestamp method path httpStatus totalDuration requestId host clientUa srcIp
    edgeRegion txBytes rxBytes upstreamRqDuration upstreamAddress upstreamProto
    downstreamProto upstreamErrors responseDetails deploymentId deploymentInstanceId
  }
}
"""

LATEST_DEPLOYMENT = """
query LatestDeployment($serviceId: String!, $environmentId: String!) {
  serviceInstance(environmentId: $environmentId, serviceId: $serviceId) {
    latestDeployment { id status }
  }
}
"""

USER_META = "query UserMeta { me { name email } }"
PROJECT_SCOPE = "query ProjectToken { projectToken { projectId environmentId } }"


class RailwayError(Exception):
    """A failure a person can read (no token, no headers)."""


class RailwayAuthError(RailwayError):
    pass


class RailwayUnavailable(RailwayError):
    pass


class RailwayQueryError(RailwayError):
    pass


class RailwayRateLimited(RailwayError):
    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class RateLimit:
    """What the last answer said about the rate limit (None: it did not say)."""

    remaining: int | None = None
    reset_at: datetime | None = None


def timestamp_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the CLI sends dates."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_FRACTION = re.compile(r"\.(\d+)")


def parse_timestamp(text: str) -> datetime:
    """Railway's RFC 3339 timestamps carry nanoseconds; Python keeps microseconds."""
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip(), count=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class RailwayClient:
    """One integration's view of the API. Each call takes `now`, the caller's clock:
    a rate limit reset given as a delay is read against it."""

    def __init__(
        self,
        integration: Integration,
        *,
        timeout: float = 20.0,
    ) -> None:
        # The kind's declaration (controlplane.integrations) says how its token is sent.
        self.url = str(kind_setting(integration, "api_url") or DEFAULT_API_URL)
        if not integration.secrets.get("token"):
            raise RailwayAuthError(f"Integration {integration.name} has no token.")
        headers = auth_headers(integration)
        self.project_token = kind_setting(integration, "token_type") == "project"
        self._http = httpx.Client(headers=headers, timeout=timeout, follow_redirects=False)
        self.rate_limit = RateLimit()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RailwayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(
        self, document: str, variables: dict[str, Any] | None = None, *, now: datetime
    ) -> dict[str, Any]:
        try:
            response = self._http.post(
                self.url, json={"query": document, "variables": variables or {}}
            )
        except httpx.HTTPError as exc:
            raise RailwayUnavailable(
                f"Railway's API did not answer ({type(exc).__name__})."
            ) from None
        self.rate_limit = _rate_limit(response.headers, now)
        status = response.status_code
        if status == 429:
            retry_at = _retry_at(response.headers, now) or now + timedelta(seconds=60)
            raise RailwayRateLimited(
                "Railway's rate limit was reached",
                retry_at,
            )
        if status in (401, 403):
            raise RailwayAuthError(
                f"Railway refused the token (HTTP {status}): it is invalid, expired or "
                "lacks access. Set a new token on the integration."
            )
        if status >= 500:
            raise RailwayUnavailable(f"Railway's API failed (HTTP {status}).")
        try:
            body = response.json()
        except ValueError:
            raise RailwayQueryError(f"Railway's API answered HTTP {status} without JSON.") from None
        if not isinstance(body, dict):
            raise RailwayQueryError("Railway's API answered with an unexpected body.")
        errors = body.get("errors") or []
        if errors:
            messages = "; ".join(
                str(error.get("message", "")) for error in errors if isinstance(error, dict)
            )
            if _is_auth_error(errors):
                raise RailwayAuthError(
                    f"Railway refused the token ({messages[:300]}): it is invalid, expired "
                    "or lacks access to this project. Set a new token on the integration."
                )
            raise RailwayQueryError(f"Railway's API refused the query: {messages[:500]}")
        if status >= 400:
            raise RailwayQueryError(f"Railway's API answered HTTP {status}.")
        data = body.get("data")
        if not isinstance(data, dict):
            raise RailwayQueryError("Railway's API answered without data.")
        return data

    def latest_deployment(self, service_id: str, environment_id: str, *, now: datetime) -> str:
        data = self.query(
            LATEST_DEPLOYMENT, {"serviceId": service_id, "environmentId": environment_id}, now=now
        )
        deployment = ((data.get("serviceInstance") or {}).get("latestDeployment")) or {}
        return str(deployment.get("id") or "")

    def deployment_logs(
        self,
        deployment_id: str,
        start: datetime,
        end: datetime,
        limit: int,
        filter_: str,
        *,
        now: datetime,
    ) -> list[dict[str, Any]]:
        variables = {
            "deploymentId": deployment_id,
            "limit": limit,
            "filter": filter_ or None,
            "startDate": timestamp_text(start),
            "endDate": timestamp_text(end),
        }
        return _lines(self.query(DEPLOYMENT_LOGS, variables, now=now), "deploymentLogs")

    def environment_logs(
        self,
        environment_id: str,
        start: datetime,
        end: datetime,
        limit: int,
        filter_: str,
        *,
        now: datetime,
    ) -> list[dict[str, Any]]:
        # The CLI's anchored window for a start and an end: `beforeLimit` lines before
        # the anchor (the end), back to `beforeDate` (the start), none after.
        variables = {"environmentId": environment_id, **_anchored(start, end, limit, filter_)}
        return _lines(self.query(ENVIRONMENT_LOGS, variables, now=now), "environmentLogs")

    def http_logs(
        self,
        deployment_id: str,
        start: datetime,
        end: datetime,
        limit: int,
        filter_: str,
        *,
        now: datetime,
    ) -> list[dict[str, Any]]:
        variables = {"deploymentId": deployment_id, **_anchored(start, end, limit, filter_)}
        return _lines(self.query(HTTP_LOGS, variables, now=now), "httpLogs")


def _anchored(start: datetime, end: datetime, limit: int, filter_: str) -> dict[str, Any]:
    return {
        "filter": filter_ or None,
        "beforeLimit": limit,
        "beforeDate": timestamp_text(start),
        "anchorDate": timestamp_text(end),
        "afterDate": timestamp_text(end),
        "afterLimit": 0,
    }


def _lines(data: dict[str, Any], field: str) -> list[dict[str, Any]]:
    lines = data.get(field)
    if not isinstance(lines, list):
        raise RailwayQueryError(f"Railway's API answered without {field}.")
    return [line for line in lines if isinstance(line, dict)]


def _is_auth_error(errors: list[Any]) -> bool:
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = str(error.get("message", "")).lower()
        code = str((error.get("extensions") or {}).get("code", "")).upper()
        if "not authorized" in message or "unauthorized" in message:
            return True
        if code in {"UNAUTHENTICATED", "FORBIDDEN", "UNAUTHORIZED"}:
            return True
    return False


def _header_time(value: str | None, now: datetime) -> datetime | None:
    """A reset time as servers write it: seconds to wait, an epoch in seconds or
    milliseconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            try:
                return parse_timestamp(value)
            except ValueError:
                return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if number > 1e12:
        return datetime.fromtimestamp(number / 1000, UTC)
    if number > 1e9:
        return datetime.fromtimestamp(number, UTC)
    return now + timedelta(seconds=max(0.0, number))


def _retry_at(headers: httpx.Headers, now: datetime) -> datetime | None:
    moments = [
        moment
        for moment in (
            _header_time(headers.get("retry-after"), now),
            _header_time(headers.get("x-ratelimit-reset"), now),
        )
        if moment is not None
    ]
    return max(moments) if moments else None


def _rate_limit(headers: httpx.Headers, now: datetime) -> RateLimit:
    remaining = headers.get("x-ratelimit-remaining")
    try:
        count = int(float(remaining)) if remaining is not None else None
    except ValueError:
        count = None
    return RateLimit(count, _header_time(headers.get("x-ratelimit-reset"), now))


def attribute_value(value: str) -> Any:
    """Railway sends structured log attributes as JSON text ("\\"error\\"", "42")."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value
