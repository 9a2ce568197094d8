"""The per-process cache of stored answers: what a retry reaching the same process gets."""

from __future__ import annotations

import pytest

from cbstop.errors import IdempotencyKeyReused
from cbstop.idempotency.keys import Answer, Keyed
from cbstop.idempotency.store import AnswerCache

NOW = 1_800_000_000_000_000  # microseconds
TTL = 10.0  # seconds


def keyed(key: str = "k", fingerprint: bytes = b"f" * 32, *, at: int = NOW) -> Keyed:
    return Keyed("organisation:org_a1", key, fingerprint, at, at - int(TTL * 1_000_000))


def answer(body: bytes = b"{}", *, stored_at: int | None = NOW) -> Answer:
    return Answer(201, body, "/v1/integrations/int_x", '"1"', stored_at)


def test_a_kept_answer_is_recalled_for_the_same_request() -> None:
    cache = AnswerCache(10)
    cache.keep(keyed(), answer(b"first"))
    assert cache.recall(keyed()) == answer(b"first")


def test_another_request_under_a_kept_key_is_reused() -> None:
    cache = AnswerCache(10)
    cache.keep(keyed(), answer())
    with pytest.raises(IdempotencyKeyReused):
        cache.recall(keyed(fingerprint=b"g" * 32))


def test_another_owner_with_the_same_key_is_not_answered() -> None:
    cache = AnswerCache(10)
    cache.keep(keyed(), answer())
    other = Keyed("partner_group:pg_a", "k", b"f" * 32, NOW, NOW - int(TTL * 1_000_000))
    assert cache.recall(other) is None


def test_an_expired_answer_is_forgotten() -> None:
    cache = AnswerCache(10)
    cache.keep(keyed(), answer(stored_at=NOW))
    later = NOW + int(TTL * 1_000_000) + 1
    assert cache.recall(keyed(fingerprint=b"g" * 32, at=later)) is None
    assert cache.recall(keyed(at=NOW)) is None  # gone, not merely hidden


def test_an_answer_that_was_not_stored_is_not_kept() -> None:
    cache = AnswerCache(10)
    cache.keep(keyed(), answer(stored_at=None))
    assert cache.recall(keyed()) is None


def test_the_oldest_answer_goes_first_and_size_zero_keeps_nothing() -> None:
    cache = AnswerCache(2)
    for name in ("a", "b", "c"):
        cache.keep(keyed(name), answer(name.encode()))
    assert cache.recall(keyed("a")) is None
    assert cache.recall(keyed("b")) == answer(b"b")
    assert cache.recall(keyed("c")) == answer(b"c")
    off = AnswerCache(0)
    off.keep(keyed(), answer())
    assert off.recall(keyed()) is None
