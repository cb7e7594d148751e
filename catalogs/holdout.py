"""What an evaluated model may learn from: the per-user time split and the cold items.

Alignment (`models`) and the ranking evaluation (`ranking`) must hold out exactly the same
things, or the encoder would have mined its pairs on the events the ranker is scored on. Both
call `Holdout.training_events` on the same log, so it lives down here.

- **Test events**: each user's latest `test_share` of events by time (at least one for a user
  with two or more events, none for a user with one). The rest is the past.
- **Cold items**: a seeded `cold_share` of catalog rows, as if uploaded after training: none of
  their events is trained on, none of them is in the VQ codebook or the RQ training set, and at
  test time they are encoded the way the service encodes a new upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from catalogs.interactions import Interactions

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def time_split_mask(user: IntArray, test_share: float) -> BoolArray:
    """(S,) True for each user's latest `test_share` of events; rows sorted by (user, ts)."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    if len(user) and np.any(np.diff(user) < 0):
        raise ValueError("events must be sorted by (user, ts)")
    _, start, count = np.unique(user, return_index=True, return_counts=True)
    n_test = np.where(count >= 2, np.maximum(1, np.floor(count * test_share)), 0).astype(np.int64)
    position = np.arange(len(user)) - np.repeat(start, count)  # 0.. within the user
    return position >= np.repeat(count - n_test, count)


@dataclass(frozen=True)
class Holdout:
    test_share: float = 0.2  # each user's latest share of events is scored, never trained on
    cold_share: float = 0.1  # share of catalog rows held out of training entirely
    seed: int = 0  # which rows are cold

    def __post_init__(self) -> None:
        if not 0 <= self.cold_share < 1:
            raise ValueError(f"cold_share must be in [0, 1), got {self.cold_share}")
        time_split_mask(np.zeros(0, dtype=np.int64), self.test_share)  # validates test_share

    def cold_items(self, n_items: int) -> BoolArray:
        """(n_items,) True for the cold rows: a seeded draw, the same for every caller."""
        cold = np.zeros(n_items, dtype=bool)
        n_cold = round(self.cold_share * n_items)
        cold[np.random.default_rng((self.seed, 17)).permutation(n_items)[:n_cold]] = True
        return cold

    def test_events(self, log: Interactions) -> BoolArray:
        """(S,) True for the events a model is scored on (each user's latest share)."""
        return time_split_mask(log.user, self.test_share)

    def training_events(self, log: Interactions, n_items: int) -> BoolArray:
        """(S,) True for the events a model may learn from: the past, of warm items only."""
        return ~self.test_events(log) & ~self.cold_items(n_items)[log.item]


HOLDOUT_FILE = "holdout.npz"  # in an evaluation bundle: the settings and the cold items


@dataclass(frozen=True)
class ColdItems:
    """The cold items of an evaluation bundle, embedded by its exported encoder."""

    holdout: Holdout
    ids: npt.NDArray[np.str_]  # (C,)
    embeddings: npt.NDArray[np.float32]  # (C, d), the fp32 ONNX graph's output


def save_cold_items(path: Path, cold: ColdItems) -> Path:
    np.savez(
        path,
        ids=np.asarray(cold.ids, dtype=np.str_),
        embeddings=np.asarray(cold.embeddings, dtype=np.float32),
        test_share=cold.holdout.test_share,
        cold_share=cold.holdout.cold_share,
        seed=cold.holdout.seed,
    )
    return path


def load_cold_items(bundle_dir: Path) -> ColdItems | None:
    """The bundle's `holdout.npz`, or None for a bundle built without a holdout."""
    path = bundle_dir / HOLDOUT_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        holdout = Holdout(float(f["test_share"]), float(f["cold_share"]), int(f["seed"]))
        return ColdItems(holdout, f["ids"].astype(np.str_), f["embeddings"].astype(np.float32))
