"""The split and the history features on tiny logs: no leakage, the right shapes and groups."""

from __future__ import annotations

import numpy as np

from catalogs.holdout import Holdout
from catalogs.interactions import Interactions
from ranking.data import PAD, Samples, history_features, make_split, popularity_groups


def _log(seed: int = 0, n: int = 400) -> Interactions:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 12, size=n)
    ts = rng.integers(0, 50, size=n)  # few distinct times: many same-second events
    order = np.lexsort((ts, user))
    item = rng.integers(0, 30, size=n)
    label = rng.random(n) < 0.5
    return Interactions(user[order], item[order], ts[order], label[order])


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
    log = _log()
    user, item, ts, label = log.user, log.item, log.ts, log.label
    split = make_split(log, 30, Holdout(test_share=0.25, cold_share=0.0), history=5)
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
    log = _log(1)
    split = make_split(log, 30, Holdout(test_share=0.2, cold_share=0.0))
    assert len(split.train) + len(split.test) == len(log)
    assert len(split.cold_test) == 0
    for u in np.unique(log.user):
        tr, te = split.train.ts[split.train.user == u], split.test.ts[split.test.user == u]
        if (log.user == u).sum() >= 2:
            assert len(te) >= 1
        if len(tr) and len(te):
            assert tr.max() <= te.min()  # training is the user's past


def _events(s: Samples | Interactions) -> list[tuple[int, int, int]]:
    return sorted(zip(s.user.tolist(), s.item.tolist(), s.ts.tolist(), strict=True))


def test_training_samples_are_what_the_encoder_learnt_from() -> None:
    """The ranker trains on exactly the events alignment was allowed to mine pairs on."""
    log, holdout = _log(2, n=2000), Holdout(test_share=0.2, cold_share=0.2, seed=4)
    split = make_split(log, 30, holdout)
    assert _events(split.train) == _events(log.take(holdout.training_events(log, 30)))


def test_cold_items_appear_only_at_test_time() -> None:
    log, holdout = _log(3, n=2000), Holdout(test_share=0.2, cold_share=0.2, seed=1)
    split = make_split(log, 30, holdout)
    cold = holdout.cold_items(30)
    assert cold.sum() == 6
    assert not cold[split.train.item].any()
    assert not cold[split.train.history[split.train.history != PAD]].any()
    assert cold[split.cold_test.item].all()
    assert not cold[split.test.item].any()
    test = holdout.test_events(log)
    assert _events(split.cold_test) == _events(log.take(test & cold[log.item]))
    assert (split.popularity[cold] == -1).all()
    assert set(split.popularity[~cold].tolist()) == set(range(6))


def test_popularity_groups_are_ordered_by_training_frequency() -> None:
    train_items = np.repeat(np.arange(12), np.arange(12) + 1)  # item i seen i+1 times
    warm = np.ones(12, dtype=bool)
    groups = popularity_groups(train_items, warm)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    unseen = popularity_groups(np.array([5, 5, 5], dtype=np.int64), warm)
    assert unseen[5] == 5
    assert unseen[0] == 0
