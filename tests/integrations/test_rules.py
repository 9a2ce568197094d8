"""The one source of what an integration's values may be (cbstop/integrations/rules.py)."""

from __future__ import annotations

import re
import time

import pytest

from cbstop.integrations import rules
from cbstop.integrations.service import new_integration_id


def test_every_id_the_api_makes_is_an_integration_id() -> None:
    assert all(rules.is_integration_id(new_integration_id()) for _ in range(1000))


def test_ids_grow_with_time_and_keep_96_random_bits() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_integration_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for made in ids:
        assert re.fullmatch(r"int_[0-9a-f]{12}[A-Za-z0-9_-]{16}", made), made
        assert before <= int(made[4:16], 16) <= after
    # Made one after another, they sort in the order they were made, millisecond by
    # millisecond; within a millisecond the 96 random bits (16 base64 characters) differ.
    assert [i[4:16] for i in ids] == sorted(i[4:16] for i in ids)
    assert len({i[16:] for i in ids}) == len(ids)


@pytest.mark.parametrize(
    "value", ["int_a1", "int.v2~a-B_9", "...", "-", "x" * rules.INTEGRATION_ID_MAX_LENGTH]
)
def test_unreserved_characters_make_an_integration_id(value: str) -> None:
    assert rules.is_integration_id(value)
    assert rules.integration_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", "a/b", "a?b", "a#b", "a b", "a%20b", "caf\u00e9", "a\x00", "a\n", "a+b",
     "x" * (rules.INTEGRATION_ID_MAX_LENGTH + 1)],
)  # fmt: skip
def test_anything_else_is_not_an_integration_id(value: str) -> None:
    assert not rules.is_integration_id(value)
    with pytest.raises(ValueError, match="it is served at /v1/integrations/"):
        rules.integration_id(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be blank"),
        (" \u00a0\u3000", "must not be blank"),
        ("a\x00b", "must not contain control characters"),
        ("a\x7fb", "must not contain control characters"),
        ("a\ud800", "must be valid Unicode (no unpaired surrogates)"),
    ],
)
def test_a_display_name_is_not_blank_has_no_control_characters_and_is_unicode(
    value: str, problem: str
) -> None:
    with pytest.raises(ValueError) as caught:
        rules.display_name(value)
    assert str(caught.value) == problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00", "must not contain NUL"),
        ("\udc80", "must be valid Unicode (no unpaired surrogates)"),
    ],
)
def test_a_storable_value_has_no_nul_and_no_unpaired_surrogate(value: str, problem: str) -> None:
    assert not rules.is_storable(value)
    with pytest.raises(ValueError) as caught:
        rules.storable(value)
    assert str(caught.value) == problem
    assert rules.storable("a\x01 \u00e9") == "a\x01 \u00e9"
