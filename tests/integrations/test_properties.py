"""Property-based tests of create and update bodies against an independent oracle.

The oracle restates CONTRACT 1.5, 1.6, 1.8 and 1.9 from scratch: it decides, for any body, the
status, the codes and the fields of the answer. A refused body must change nothing; an accepted
one must read back through GET exactly as sent.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.integrations.helpers import auth, error_entries, nothing_changes, representation
from tests.support import snapshot

ORG_A1 = auth("key_org_a1")
ORG_A1_MERCHANTS = ("mrch_a1_1", "mrch_a1_2")
OTHER_MERCHANTS = ("mrch_a2_1", "mrch_b1_1", "mrch_d_1", "mrch_nonexistent")
CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"
ABSENT: Any = object()
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- the oracle --------------------------------------------------------------------------------


def name_ok(value: Any) -> bool:
    """1-255 code points, not only whitespace, no control characters."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 255
        and not value.isspace()
        and not any(ch in CONTROL for ch in value)
    )


def merchant_problems(value: Any) -> set[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= 1000:
        return {"merchant_ids"}
    return {
        f"merchant_ids.{i}"
        for i, entry in enumerate(value)
        if not (isinstance(entry, str) and 1 <= len(entry) <= 64)
    }


def expected_create(body: dict[str, Any]) -> tuple[int, str, set[str]]:
    """(status, code, fields) the contract prescribes for a create body from the org A1 key."""
    fields: set[str] = set()
    for key in ("organisation_id", "name", "type", "merchant_ids"):
        if key not in body:
            fields.add(key)
    valid: dict[str, Any] = {
        "organisation_id": lambda v: isinstance(v, str),
        "name": name_ok,
        "type": lambda v: v == "CUSTOM_ORDERS",
        "status": lambda v: v in ("ENABLED", "DISABLED"),
    }
    for key, value in body.items():
        if key == "merchant_ids":
            fields |= merchant_problems(value)
        elif key not in valid or not valid[key](value):
            fields.add(key)
    if fields:
        return 422, "VALIDATION_ERROR", fields
    merchants = body["merchant_ids"]
    if len(set(merchants)) != len(merchants):
        return 422, "DUPLICATE_MERCHANT_IDS", set()
    if body["organisation_id"] != "org_a1":
        return 404, "NOT_FOUND", set()
    if not set(merchants) <= set(ORG_A1_MERCHANTS):
        return 422, "INVALID_MERCHANT_IDS", set()
    return 201, "", set()


def expected_update(body: dict[str, Any], type_: str) -> tuple[int, str, set[str]]:
    """(status, code, fields) the contract prescribes for a PATCH body in scope."""
    fields: set[str] = set()
    for key, value in body.items():
        if key == "name":
            if not name_ok(value):
                fields.add(key)
        elif key == "status":
            if value != "DISABLED":
                fields.add(key)
        else:
            fields.add(key)
    if fields:
        return 422, "VALIDATION_ERROR", fields
    if not body:
        return 422, "MISSING_UPDATE_FIELDS", set()
    if type_ != "CUSTOM_ORDERS":
        return 422, "INVALID_INTEGRATION_TYPE", set()
    return 200, "", set()


# --- the generators ----------------------------------------------------------------------------

text_char = st.characters(exclude_categories=["Cs"])
good_names = st.text(text_char, min_size=1, max_size=255).filter(name_ok)
bad_names = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=3), max_size=2),
    st.just(""),
    st.text(st.sampled_from(" \t\u00a0\u2003\u3000"), min_size=1, max_size=5),
    st.tuples(st.text(max_size=10), st.sampled_from(CONTROL), st.text(max_size=10)).map("".join),
    st.text(text_char, min_size=256, max_size=300),
)
names = st.one_of(good_names, good_names, bad_names)
wrong_types = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2)
)
merchant_entry = st.one_of(
    st.sampled_from(ORG_A1_MERCHANTS),
    st.sampled_from(OTHER_MERCHANTS),
    st.just(""),
    st.just("m" * 65),
    st.text(text_char, min_size=1, max_size=64),
    wrong_types,
)
merchant_lists = st.one_of(
    st.lists(st.sampled_from(ORG_A1_MERCHANTS), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from(ORG_A1_MERCHANTS), min_size=1, max_size=4),
    st.lists(merchant_entry, min_size=1, max_size=4),
    st.just([]),
    st.just([f"mrch_{n}" for n in range(1001)]),
    st.sampled_from(ORG_A1_MERCHANTS),
    wrong_types,
)
unknown_fields = st.dictionaries(
    st.sampled_from(["stauts", "id", "links", "Name", "partner_id", "extra"]),
    st.one_of(st.text(max_size=5), st.none(), st.integers()),
    max_size=2,
)


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, values, values, st.just(ABSENT))


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        # Half the examples are well-formed, so that acceptance is exercised as much as refusal.
        clean: dict[str, Any] = {
            "organisation_id": "org_a1",
            "name": draw(good_names),
            "type": "CUSTOM_ORDERS",
            "merchant_ids": draw(
                st.lists(st.sampled_from(ORG_A1_MERCHANTS), min_size=1, max_size=2, unique=True)
            ),
        }
        status = draw(st.sampled_from([ABSENT, "ENABLED", "DISABLED"]))
        if status is not ABSENT:
            clean["status"] = status
        return clean
    body: dict[str, Any] = {
        "organisation_id": draw(
            _maybe(
                st.one_of(
                    st.just("org_a1"),
                    st.just("org_a1"),
                    st.sampled_from(["org_a2", "org_b1", "org_d", "org_nonexistent"]),
                    wrong_types,
                )
            )
        ),
        "name": draw(_maybe(names)),
        "type": draw(
            _maybe(st.sampled_from(["CUSTOM_ORDERS", "CUSTOM_ORDERS", "STRIPE", "custom_orders"]))
        ),
        "status": draw(
            st.one_of(
                st.just(ABSENT), st.sampled_from(["ENABLED", "DISABLED", "PAUSED"]), wrong_types
            )
        ),
        "merchant_ids": draw(_maybe(merchant_lists)),
    }
    body.update(draw(unknown_fields))
    return {k: v for k, v in body.items() if v is not ABSENT}


@st.composite
def update_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": draw(st.one_of(st.just(ABSENT), names)),
        "status": draw(
            st.one_of(
                st.just(ABSENT), st.just("DISABLED"), st.sampled_from(["ENABLED", "x"]), wrong_types
            )
        ),
    }
    extra = draw(
        st.dictionaries(
            st.sampled_from(["type", "organisation_id", "merchant_ids", "id", "stauts"]),
            st.one_of(st.text(max_size=5), st.none()),
            max_size=1,
        )
    )
    body.update(extra)
    return {k: v for k, v in body.items() if v is not ABSENT}


# --- the properties ----------------------------------------------------------------------------


def _assert_refusal(response: Any, status: int, code: str, fields: set[str]) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    entries = error_entries(response)
    assert {e["code"] for e in entries} == {code}, entries
    if code == "VALIDATION_ERROR":
        assert {e.get("field") for e in entries} == fields, entries


@SETTINGS
@given(body=create_bodies())
def test_create_answers_what_the_oracle_decides(
    client: TestClient, database_url: str, body: dict[str, Any]
) -> None:
    status, code, fields = expected_create(body)

    if status != 201:
        with nothing_changes(database_url):
            response = client.post("/v1/integrations", json=body, headers=ORG_A1)
        _assert_refusal(response, status, code, fields)
        return

    response = client.post("/v1/integrations", json=body, headers=ORG_A1)
    assert response.status_code == 201, response.text
    new_id = response.json()["id"]
    expected = representation(
        new_id,
        "org_a1",
        body["name"],
        "CUSTOM_ORDERS",
        body.get("status", "ENABLED"),
        body["merchant_ids"],
    )
    assert response.json() == expected
    assert client.get(f"/v1/integrations/{new_id}", headers=ORG_A1).json() == expected


@SETTINGS
@given(
    body=update_bodies(),
    target=st.sampled_from([("int_a1_orders", "CUSTOM_ORDERS"), ("int_a1_stripe", "STRIPE")]),
)
def test_update_answers_what_the_oracle_decides(
    client: TestClient, database_url: str, body: dict[str, Any], target: tuple[str, str]
) -> None:
    integration_id, type_ = target
    url = f"/v1/integrations/{integration_id}"
    before = client.get(url, headers=ORG_A1).json()
    status, code, fields = expected_update(body, type_)

    if status != 200:
        with nothing_changes(database_url):
            response = client.patch(url, json=body, headers=ORG_A1)
        _assert_refusal(response, status, code, fields)
        return

    rows_before = snapshot(database_url)
    response = client.patch(url, json=body, headers=ORG_A1)
    expected = {**before, **body}
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert client.get(url, headers=ORG_A1).json() == expected
    # Only this integration's row may change, and the events record it if it did.
    after = snapshot(database_url)
    changed = ("integrations", "events")
    assert {t: r for t, r in after.items() if t not in changed} == {
        t: r for t, r in rows_before.items() if t not in changed
    }
    new_events = [r for r in after["events"] if r not in rows_before["events"]]
    assert len(after["events"]) == len(rows_before["events"]) + len(new_events)
    assert [(e[2], e[5]) for e in new_events] == (
        [("integration.updated", integration_id)] if expected != before else []
    )
    assert [r for r in after["integrations"] if r[0] != integration_id] == [
        r for r in rows_before["integrations"] if r[0] != integration_id
    ]
