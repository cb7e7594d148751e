from __future__ import annotations

import numpy as np
import pytest

from codebooks.metrics import collision_metrics, gini, hourglass_flags, level_metrics


def test_perplexity_is_nc_when_even_and_one_when_collapsed() -> None:
    even = np.repeat(np.arange(8, dtype=np.int32), 5)[:, None]
    collapsed = np.zeros((40, 1), dtype=np.int32)
    (lv_even,) = level_metrics(even, 8, np.array([0.5]))
    (lv_collapsed,) = level_metrics(collapsed, 8, np.array([0.5]))
    assert lv_even.perplexity == pytest.approx(8.0)
    assert lv_even.used == 8
    assert lv_even.utilisation == 1.0
    assert lv_even.gini == pytest.approx(0.0)
    assert lv_collapsed.perplexity == pytest.approx(1.0)
    assert lv_collapsed.utilisation == pytest.approx(1 / 8)
    assert lv_collapsed.gini == pytest.approx(7 / 8)


def test_gini_of_known_counts() -> None:
    assert gini(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(0.75)
    assert gini(np.array([1.0, 1.0])) == pytest.approx(0.0)


def test_collisions_count_duplicates_and_shared_items() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 2], [3, 4]], dtype=np.int32)
    c = collision_metrics(codes)
    assert c.distinct_tuples == 3
    assert c.duplicate_rate == pytest.approx(1 / 4)
    assert c.shared_rate == pytest.approx(2 / 4)
    assert c.shared_rate_by_prefix == pytest.approx([3 / 4, 2 / 4])


def test_hourglass_flags_a_valley_in_the_middle() -> None:
    # the profile reported for plain 6 x 256 residual k-means on real 64-d vectors
    assert hourglass_flags([242, 187, 152, 145, 188, 142]) == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    assert hourglass_flags([250, 240, 230, 220]) == [False] * 4  # a slope is not a valley
