"""Schemathesis against the app's own /v1/openapi.json (CONTRACT 1.11).

Every operation is fuzzed with positive and negative data from a fixed seed, over a real server
on the matrix world with a valid admin key: no 5xx, and every answer (status, headers, content
type, body) matches the document. Positive data acceptance is not checked: the document cannot
express every business rule (an accessible organisation, existing merchants).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import DataGenerationMethod

from tests.integrations.helpers import auth, running_server, world

ADMIN_A = auth("key_admin_a")
# ... and at run time, when it resolves references.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:jsonschema\.[\w.]+ is deprecated:DeprecationWarning"
)


@pytest.fixture
def fuzz_server(database_url: str) -> Iterator[str]:
    """A real server over the matrix world."""
    with running_server(database_url, world("matrix")) as base_url:
        yield base_url


@pytest.fixture
def fuzz_schema(fuzz_server: str) -> Any:
    """The document the server itself serves."""
    # The document is OpenAPI 3.1 (CONTRACT 1.11), which Schemathesis 3 supports behind a flag.
    schemathesis.experimental.OPEN_API_3_1.enable()
    return schemathesis.from_uri(
        f"{fuzz_server}/v1/openapi.json",
        base_url=fuzz_server,
        data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    )


with warnings.catch_warnings():
    # Schemathesis 3.39 warns about its own default arguments here, and its modules name
    # jsonschema's deprecated RefResolver API when first imported: import them once, quietly.
    warnings.filterwarnings("ignore", r"Argument `.*` is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", r"jsonschema\.[\w.]+ is deprecated", DeprecationWarning)
    import schemathesis.specs.openapi.schemas

    schema = schemathesis.from_pytest_fixture("fuzz_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_matches_the_document(case: Any, fuzz_server: str) -> None:
    case.call_and_validate(
        base_url=fuzz_server, headers=ADMIN_A, checks=tuple(schemathesis.checks.ALL_CHECKS)
    )
