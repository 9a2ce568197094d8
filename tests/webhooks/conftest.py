"""Fixtures of the webhook suites: a receiver on 127.0.0.1 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.webhooks.receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 recording every request; answers 200 unless told."""
    with receiving() as started:
        yield started
