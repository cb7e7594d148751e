"""The split and the history features on tiny logs: no leakage, the right shapes and groups."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.data import PAD, history_features, make_split, popularity_groups, time_split_mask


def _log(seed: int = 0, n: int = 400) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 12, size=n)
    item = rng.integers(0, 30, size=n)
    ts = rng.integers(0, 50, size=n)  # few distinct times: many same-second events
    label = rng.random(n) < 0.5
    return user, item, ts, label


def test_history_by_hand() -> None:
    user = np.array([0, 0, 0, 0, 1, 1])
    item = np.array([10, 11, 12, 13, 20, 21])
    ts = np.array([1, 2, 2, 5, 1, 3])
    label = np.array([True, True, True, False, True, True])
    h = history_features(user, item, ts, label, length=2)
    assert h.tolist() == [
        [PAD, PAD],  # nothing before
        [PAD, 10],
        [PAD, 10],  # item 11 has the same ts: excluded
        [11, 12],  # the last two positives
        [PAD, PAD],  # another user's positives never appear
        [PAD, 20],
    ]


def test_no_leakage_against_a_slow_reference() -> None:
    user, item, ts, label = _log()
    split = make_split(user, item, ts, label, n_items=30, history=5, test_share=0.25)
    for part in (split.train, split.test):
        for s in range(len(part)):
            u, t = part.user[s], part.ts[s]
            earlier = (user == u) & (ts < t) & label
            # the reference: the user's positives strictly before, in time order, last 5
            order = np.lexsort((np.arange(len(user))[earlier], ts[earlier]))
            expected_set = set(item[earlier][order][-5:].tolist()) if earlier.any() else set()
            got = part.history[s][part.history[s] != PAD]
            assert set(got.tolist()) <= set(item[earlier].tolist())
            assert len(got) == min(5, int(earlier.sum()))
            if len(set(ts[earlier])) == int(earlier.sum()):  # no ties: the exact items
                assert set(got.tolist()) == expected_set


def test_split_is_per_user_and_by_time() -> None:
    user, item, ts, label = _log(1)
    split = make_split(user, item, ts, label, n_items=30, test_share=0.2)
    assert len(split.train) + len(split.test) == len(user)
    for u in np.unique(user):
        tr, te = split.train.ts[split.train.user == u], split.test.ts[split.test.user == u]
        if (user == u).sum() >= 2:
            assert len(te) >= 1
        if len(tr) and len(te):
            assert tr.max() <= te.min()  # training is the user's past


def test_time_split_mask_shares() -> None:
    user = np.repeat(np.arange(3), [1, 2, 10])
    mask = time_split_mask(user, 0.2)
    assert mask.tolist() == [False, False, True] + [False] * 8 + [True, True]
    with pytest.raises(ValueError, match="test_share"):
        time_split_mask(user, 1.0)


def test_popularity_groups_are_ordered_by_training_frequency() -> None:
    train_items = np.repeat(np.arange(12), np.arange(12) + 1)  # item i seen i+1 times
    groups = popularity_groups(train_items, 12)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    unseen = popularity_groups(np.array([5, 5, 5], dtype=np.int64), 12)
    assert unseen[5] == 5
    assert unseen[0] == 0
