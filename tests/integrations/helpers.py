"""Shared vocabulary of the API suites: worlds, keys, bodies, error and snapshot assertions."""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from tests.support import TEST_KEY_SECRET, bearer, make_settings, query, snapshot

WORLDS = Path(__file__).resolve().parent.parent / "worlds"
INTEGRATION_KEYS = ("id", "organisation_id", "name", "type", "status", "merchant_ids", "links")
ID_PATTERN = re.compile(r"^int_[A-Za-z0-9_-]+$")


@cache
def _world_text(name: str) -> str:
    return (WORLDS / f"{name}.json").read_text(encoding="utf-8")


def world(name: str) -> dict[str, Any]:
    """A fresh copy of the world file `tests/worlds/<name>.json`."""
    loaded: dict[str, Any] = json.loads(_world_text(name))
    return loaded


def secret(world_data: Mapping[str, Any], key_id: str) -> str:
    """The plaintext secret of a key of a world."""
    for key in world_data["api_keys"]:
        if key["id"] == key_id:
            value: str = key["secret"]
            return value
    raise KeyError(key_id)


def auth(key_id: str, world_name: str = "matrix") -> dict[str, str]:
    """The Authorization header of a key of a world file."""
    return bearer(secret(world(world_name), key_id))


def with_integrations(
    world_data: dict[str, Any], organisation_id: str, merchant_id: str, count: int
) -> dict[str, Any]:
    """A copy of a world with `count` more CUSTOM_ORDERS integrations in one organisation."""
    out = copy.deepcopy(world_data)
    for n in range(count):
        out["integrations"].append(
            {
                "id": f"int_bulk_{organisation_id}_{n:03d}",
                "organisation_id": organisation_id,
                "name": f"Bulk {n}",
                "type": "CUSTOM_ORDERS",
                "status": "ENABLED",
                "merchant_ids": [merchant_id],
            }
        )
    return out


def create_body(**over: Any) -> dict[str, Any]:
    """A valid create body for org_a1 of the matrix world, with fields replaced by `over`."""
    body: dict[str, Any] = {
        "organisation_id": "org_a1",
        "name": "New orders feed",
        "type": "CUSTOM_ORDERS",
        "merchant_ids": ["mrch_a1_1"],
    }
    body.update(over)
    return body


def without(body: Mapping[str, Any], *fields: str) -> dict[str, Any]:
    """A copy of a body without some fields."""
    return {k: v for k, v in body.items() if k not in fields}


def representation(
    integration_id: str,
    organisation_id: str,
    name: str,
    type_: str,
    status: str,
    merchant_ids: list[str],
) -> dict[str, Any]:
    """The exact body CONTRACT 1.10 prescribes for one integration."""
    return {
        "id": integration_id,
        "organisation_id": organisation_id,
        "name": name,
        "type": type_,
        "status": status,
        "merchant_ids": merchant_ids,
        "links": [{"rel": "self", "uri": f"/v1/integrations/{integration_id}"}],
    }


def world_integration(world_data: Mapping[str, Any], integration_id: str) -> dict[str, Any]:
    """The representation of an integration as declared in a world."""
    for item in world_data["integrations"]:
        if item["id"] == integration_id:
            return representation(
                item["id"],
                item["organisation_id"],
                item["name"],
                item["type"],
                item["status"],
                list(item["merchant_ids"]),
            )
    raise KeyError(integration_id)


def error_entries(response: Any) -> list[dict[str, str]]:
    """The entries of an error envelope, after checking that the envelope is all there is."""
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    entries = body["errors"]
    assert isinstance(entries, list) and entries, body
    for entry in entries:
        assert set(entry) in ({"code", "message"}, {"code", "message", "field"}), entry
        assert isinstance(entry["code"], str) and entry["code"], entry
        assert isinstance(entry["message"], str) and entry["message"], entry
        assert "field" not in entry or isinstance(entry["field"], str), entry
    return list(entries)


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> None:
    """The response is exactly one error entry of that status, code and field."""
    assert response.status_code == status, (response.status_code, response.text)
    entries = error_entries(response)
    assert [(e["code"], e.get("field")) for e in entries] == [(code, field)], entries


def assert_validation_error(response: Any, *fields: str) -> None:
    """The response is a 422 VALIDATION_ERROR naming exactly these fields (one entry each)."""
    assert response.status_code == 422, (response.status_code, response.text)
    entries = error_entries(response)
    assert {e["code"] for e in entries} == {"VALIDATION_ERROR"}, entries
    assert all("field" in e for e in entries), entries
    assert sorted({e["field"] for e in entries}) == sorted(set(fields)), entries


@contextmanager
def nothing_changes(database_url: str) -> Iterator[None]:
    """Every row of every table is the same after the block as before it."""
    before = snapshot(database_url)
    yield
    assert snapshot(database_url) == before


def integration_ids(database_url: str) -> set[str]:
    """The ids of every integration stored."""
    return {row[0] for row in query(database_url, "SELECT id FROM integrations")}


@contextmanager
def running_server(database_url: str, world_data: dict[str, Any] | None) -> Iterator[str]:
    """A real uvicorn server on a free local port over the app; yields its base URL."""
    import uvicorn

    from cbstop.app import create_app
    from cbstop.web.protocol import EnvelopeH11Protocol
    from cbstop.world.loader import load_world

    if world_data is not None:
        load_world(database_url, world_data, key_secret=TEST_KEY_SECRET)
    app = create_app(make_settings(database_url))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http=EnvelopeH11Protocol, ws="none", loop="asyncio", lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


# --- reading the OpenAPI document ---------------------------------------------------------


def openapi_resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI object with its `$ref`s followed."""
    while "$ref" in item:
        node: Any = document
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def openapi_operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The document's operation of `method` (lower case) on `path`."""
    for declared, item in document["paths"].items():
        if declared.rstrip("/") == path:
            operation: dict[str, Any] = item[method]
            return operation
    raise KeyError(path)


def openapi_header_params(document: dict[str, Any], operation: dict[str, Any]) -> set[str]:
    """The request headers an operation declares, lower case."""
    params = [openapi_resolve(document, p) for p in operation.get("parameters", [])]
    return {p["name"].lower() for p in params if p["in"] == "header"}


def openapi_response(
    document: dict[str, Any], operation: dict[str, Any], status: str
) -> dict[str, Any]:
    return openapi_resolve(document, operation["responses"][status])


def openapi_response_headers(response: dict[str, Any]) -> set[str]:
    return {name.lower() for name in response.get("headers", {})}
