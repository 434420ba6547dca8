"""The Railway integration's "Test connection", against the fake Railway API."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from controlplane.integrations import check_connection
from controlplane.models import Integration
from tests.healthmon.railway_server import Failure, RailwayServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def railway() -> Iterator[RailwayServer]:
    with RailwayServer() as server:
        yield server


def make_integration(url: str, token: str = "railway-token", **settings: str) -> Integration:  # noqa: S107
    integration = Integration(
        kind=Integration.Kind.RAILWAY, name="railway", settings={"api_url": url, **settings}
    )
    integration.set_secrets({"token": token})
    integration.save()
    return integration


def test_an_account_token_connects_and_says_whose_it_is(railway: RailwayServer) -> None:
    integration = make_integration(railway.url)

    result = check_connection(integration)

    assert result.ok
    assert result.message == "Connected as Ada Lovelace <ada@example.com>."
    assert railway.requests[-1].headers["authorization"] == "Bearer railway-token"
    assert "me {" in railway.requests[-1].query
    integration.refresh_from_db()
    assert integration.last_test_ok is True
    assert integration.last_tested_at is not None


def test_a_project_token_connects_and_names_its_project(railway: RailwayServer) -> None:
    integration = make_integration(railway.url, token_type="project")

    result = check_connection(integration)

    assert result.ok
    assert "project proj-1, environment env-1" in result.message
    assert railway.requests[-1].headers["project-access-token"] == "railway-token"


@pytest.mark.parametrize("auth_status", [200, 401])
def test_a_refused_token_fails_with_a_readable_reason(
    railway: RailwayServer, auth_status: int
) -> None:
    railway.auth_status = auth_status
    integration = make_integration(railway.url, token="expired-token")

    result = check_connection(integration)

    assert not result.ok
    assert "Railway refused the token" in result.message
    assert "expired-token" not in result.message
    integration.refresh_from_db()
    assert integration.last_test_ok is False
    assert integration.last_test_message == result.message


def test_a_graphql_error_is_reported(railway: RailwayServer) -> None:
    railway.fail(Failure(200, body={"errors": [{"message": "Problem processing request"}]}))
    result = check_connection(make_integration(railway.url))
    assert not result.ok
    assert result.message == "Railway's API refused the query: Problem processing request"


def test_an_unreachable_api_is_reported(db: object) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = check_connection(make_integration(f"http://127.0.0.1:{port}/graphql/v2"))
    assert not result.ok
    assert result.message == "Railway's API did not answer (ConnectError)."


def test_an_integration_without_a_token_is_reported(railway: RailwayServer) -> None:
    integration = make_integration(railway.url)
    integration.set_secrets({})
    integration.save()
    result = check_connection(integration)
    assert not result.ok
    assert result.message == "Integration railway has no token."
    assert railway.requests == []
