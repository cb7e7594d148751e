"""AUC, UAUC and GAUC against scikit-learn's roc_auc_score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from ranking.metrics import auc, gauc, per_user_auc, uauc


def test_auc_known_cases() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.2, 0.9]) == 1.0
    assert auc([0, 1], [0.9, 0.2]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count half


def test_auc_refuses_one_class() -> None:
    with pytest.raises(ValueError, match="both"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 6)),  # few distinct scores: many ties
        min_size=2,
        max_size=60,
    )
)
def test_auc_equals_sklearn(rows: list[tuple[bool, int]]) -> None:
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=np.float64) / 7
    if y.all() or not y.any():
        return
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_uauc_and_gauc_by_hand() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1, 1])  # user 2 has one class: left out
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.5, 0.6, 0.1])
    a0 = roc_auc_score(labels[:4], scores[:4])
    a1 = roc_auc_score(labels[4:6], scores[4:6])
    assert uauc(users, labels, scores) == pytest.approx((a0 + a1) / 2)
    assert gauc(users, labels, scores) == pytest.approx((4 * a0 + 2 * a1) / 6)
    aucs, counts = per_user_auc(users, labels, scores)
    assert counts.tolist() == [4.0, 2.0]
    assert aucs.tolist() == pytest.approx([a0, a1])


def test_uauc_gauc_on_shuffled_rows_match_sklearn_per_user() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, size=500)
    labels = rng.random(500) < 0.4
    scores = rng.random(500) + labels * 0.3
    expected, weights = [], []
    for u in np.unique(users):
        m = users == u
        if 0 < labels[m].sum() < m.sum():
            expected.append(roc_auc_score(labels[m], scores[m]))
            weights.append(m.sum())
    assert uauc(users, labels, scores) == pytest.approx(np.mean(expected))
    assert gauc(users, labels, scores) == pytest.approx(np.average(expected, weights=weights))


def test_no_user_with_both_classes_gives_nan() -> None:
    assert np.isnan(uauc([0, 1], [1, 0], [0.2, 0.3]))
    assert np.isnan(gauc([0, 1], [1, 0], [0.2, 0.3]))
