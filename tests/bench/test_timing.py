"""The timing check's statistic (`bench.timing`): Mann-Whitney U with the normal approximation
and tie correction, against values worked by hand; nothing here is timed."""

from __future__ import annotations

import math

import pytest

from bench.timing import mann_whitney, ranks


def test_ties_share_their_average_rank() -> None:
    assert ranks([3.0, 1.0, 1.0, 2.0, 1.0]) == ([5.0, 2.0, 2.0, 4.0, 2.0], [3, 1, 1])


def test_a_sample_wholly_below_the_other_has_u_zero_and_negative_z() -> None:
    # U = 0; mean 4.5; variance 3 * 3 / 12 * 7 = 5.25.
    result = mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert result.u == 0
    assert result.z == pytest.approx(-4.5 / math.sqrt(5.25))
    assert result.p == pytest.approx(math.erfc(4.5 / math.sqrt(5.25) / math.sqrt(2)))
    assert mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]).z == pytest.approx(-result.z)


def test_ties_shrink_the_variance() -> None:
    # Ranks 2, 2, 4 | 2, 5.5, 5.5: U = 8 - 6 = 2; ties (3, 1, 2) take 30 / 30 = 1 off the
    # (n + 1) = 7 of the variance: 9 / 12 * 6 = 4.5.
    result = mann_whitney([1.0, 1.0, 2.0], [1.0, 3.0, 3.0])
    assert result.u == 2
    assert result.z == pytest.approx((2 - 4.5) / math.sqrt(4.5))


def test_identical_samples_give_z_zero() -> None:
    assert mann_whitney([1.0, 1.0], [1.0, 1.0]).z == 0.0
    assert mann_whitney([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).z == 0.0
