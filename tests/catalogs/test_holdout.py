"""The holdout that alignment and the ranking evaluation share: time split, cold items, file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catalogs.holdout import ColdItems, Holdout, load_cold_items, save_cold_items, time_split_mask
from catalogs.interactions import Interactions


def test_time_split_mask_shares() -> None:
    user = np.repeat(np.arange(3), [1, 2, 10])
    mask = time_split_mask(user, 0.2)
    assert mask.tolist() == [False, False, True] + [False] * 8 + [True, True]
    with pytest.raises(ValueError, match="test_share"):
        time_split_mask(user, 1.0)
    with pytest.raises(ValueError, match="sorted"):
        time_split_mask(user[::-1].copy(), 0.2)


def test_cold_items_are_a_seeded_share() -> None:
    h = Holdout(cold_share=0.1, seed=3)
    assert h.cold_items(1000).sum() == 100
    assert np.array_equal(h.cold_items(1000), Holdout(cold_share=0.1, seed=3).cold_items(1000))
    assert not np.array_equal(h.cold_items(1000), Holdout(cold_share=0.1, seed=4).cold_items(1000))
    assert Holdout(cold_share=0.0).cold_items(50).sum() == 0
    with pytest.raises(ValueError, match="cold_share"):
        Holdout(cold_share=1.0)


def test_training_events_are_the_past_of_warm_items(events: Interactions) -> None:
    h = Holdout(test_share=0.2, cold_share=0.25, seed=0)
    n = int(events.item.max()) + 1
    train = h.training_events(events, n)
    cold = h.cold_items(n)
    assert not cold[events.item[train]].any()
    assert not (train & h.test_events(events)).any()
    for u in np.unique(events.user)[:50]:
        mine = events.user == u
        if (mine & train).any() and (mine & h.test_events(events)).any():
            assert events.ts[mine & train].max() <= events.ts[mine & h.test_events(events)].min()


def test_cold_items_file_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cold = ColdItems(
        Holdout(0.25, 0.05, 7),
        np.array(["a", "bb", "ccc"]),
        rng.standard_normal((3, 8)).astype(np.float32),
    )
    save_cold_items(tmp_path / "holdout.npz", cold)
    back = load_cold_items(tmp_path)
    assert back is not None
    assert back.holdout == cold.holdout
    assert back.ids.tolist() == ["a", "bb", "ccc"]
    assert np.array_equal(back.embeddings, cold.embeddings)
    assert load_cold_items(tmp_path / "elsewhere") is None
