"""Fixtures of the integrations API suites: clients over the matrix world.

`client`/`database_url` give a fresh database per test, for tests that change something.
`shared_client`/`shared_url` give one database per module and dialect, for tests whose requests
must change nothing (they prove it with a snapshot), so a refused request costs no set-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import DIALECTS, _require_postgres
from tests.integrations.helpers import with_integrations, world
from tests.support import DatabaseMaker, api_client

BULK = 30  # integrations added to org_a1 in the crowded world: more than a default page


@pytest.fixture
def matrix() -> dict[str, Any]:
    """The matrix world (tests/worlds/matrix.json) as a dict."""
    return world("matrix")


@pytest.fixture
def client(database_url: str, matrix: dict[str, Any]) -> Iterator[TestClient]:
    """A test client on the real app over a fresh database holding the matrix world."""
    with api_client(database_url, matrix) as test_client:
        yield test_client


def _module_database(request: pytest.FixtureRequest, maker: DatabaseMaker) -> Iterator[str]:
    if request.param == "postgresql":
        _require_postgres()
    with maker.database(request.param) as url:
        yield url


@pytest.fixture(scope="module", params=DIALECTS)
def shared_url(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[str]:
    """A database of this run's dialect shared by one module's tests that change nothing."""
    yield from _module_database(request, database_maker)


@pytest.fixture(scope="module")
def shared_client(shared_url: str) -> Iterator[TestClient]:
    """A test client over the shared database, loaded with the matrix world."""
    with api_client(shared_url, world("matrix")) as test_client:
        yield test_client


@pytest.fixture(scope="module", params=DIALECTS)
def crowded_url(request: pytest.FixtureRequest, database_maker: DatabaseMaker) -> Iterator[str]:
    """A database shared by one module's read-only tests, for the crowded world."""
    yield from _module_database(request, database_maker)


@pytest.fixture(scope="module")
def crowded(crowded_url: str) -> Iterator[TestClient]:
    """The matrix world with 30 more integrations in org_a1 (32 there, 34 for admin A)."""
    data = with_integrations(world("matrix"), "org_a1", "mrch_a1_1", BULK)
    with api_client(crowded_url, data) as test_client:
        yield test_client
