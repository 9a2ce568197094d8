"""Service endpoints: CONTRACT 1.11."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_healthz_is_200_without_a_key(shared_client: TestClient) -> None:
    response = shared_client.get("/healthz")

    assert response.status_code == 200


def test_readyz_is_200_when_the_database_answers(shared_client: TestClient) -> None:
    response = shared_client.get("/readyz")

    assert response.status_code == 200


def test_openapi_document_is_openapi_3_1_with_both_paths(shared_client: TestClient) -> None:
    response = shared_client.get("/v1/openapi.json")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    paths = {path.rstrip("/") for path in document["paths"]}
    assert {"/v1/integrations", "/v1/integrations/{integration_id}"} <= paths


def test_openapi_document_declares_the_error_answers(shared_client: TestClient) -> None:
    document = shared_client.get("/v1/openapi.json").json()
    operations = {
        (method.upper(), path.rstrip("/")): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "patch"}
    }

    expected = {
        ("GET", "/v1/integrations"): {"200", "401", "403", "422"},
        ("POST", "/v1/integrations"): {"201", "400", "401", "403", "404", "413", "415", "422"},
        ("GET", "/v1/integrations/{integration_id}"): {"200", "401", "403", "404"},
        ("PATCH", "/v1/integrations/{integration_id}"): {
            "200",
            "400",
            "401",
            "403",
            "404",
            "413",
            "415",
            "422",
        },
    }
    for key, codes in expected.items():
        assert codes <= set(operations[key]["responses"]), (key, operations[key]["responses"])


def test_docs_page_is_html(shared_client: TestClient) -> None:
    response = shared_client.get("/v1/docs")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "openapi.json" in response.text
