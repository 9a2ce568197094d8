"""Fixtures of the integrations API suites: a client over the matrix world."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integrations.helpers import world
from tests.support import api_client


@pytest.fixture
def matrix() -> dict[str, Any]:
    """The matrix world (tests/worlds/matrix.json) as a dict."""
    return world("matrix")


@pytest.fixture
def client(database_url: str, matrix: dict[str, Any]) -> Iterator[TestClient]:
    """A test client on the real app over a fresh database holding the matrix world."""
    with api_client(database_url, matrix) as test_client:
        yield test_client
