"""Ranking samples from a labelled interaction log: a per-user time split, history features
that never see the future, and item popularity groups.

Every event (user, item, ts, label) becomes one sample. Each user's latest `test_share` of events
(by time, at least one for a user with two or more events) is the test set, the rest is training:
the model learns from the past of every user and is scored on what came next. A sample's history
is the user's last `history` positive items whose timestamp is strictly before the event's, so
neither the event itself nor anything at or after its time leaks into its features. Test samples
do see the user's earlier test-time positives, as a ranking server would at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

PAD = -1  # history slot without an item
N_POPULARITY_GROUPS = 6  # L1 (least popular) .. L6 (most), as in the paper's Table 5


@dataclass(frozen=True)
class Samples:
    """S ranking samples. user, item, ts: (S,) int64. label: (S,) bool. history: (S, H) int64
    item rows, most recent last, left-padded with PAD."""

    user: IntArray
    item: IntArray
    ts: IntArray
    label: BoolArray
    history: IntArray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: IntArray | BoolArray) -> Samples:
        return Samples(
            self.user[rows], self.item[rows], self.ts[rows], self.label[rows], self.history[rows]
        )


@dataclass(frozen=True)
class Split:
    train: Samples
    test: Samples
    popularity: IntArray  # (N_items,) group 0..5 (L1..L6) by training frequency


def history_features(
    user: IntArray, item: IntArray, ts: IntArray, label: BoolArray, length: int
) -> IntArray:
    """(S, length) last `length` positive items of the same user strictly before each event.

    Inputs are (S,) arrays sorted by (user, ts). Positives at the same timestamp as the event
    are excluded: their order within a second is unknown, so they may be its future.
    """
    if len(user) and not (np.all(np.diff(user) >= 0)):
        raise ValueError("events must be sorted by user")
    out = np.full((len(user), length), PAD, dtype=np.int64)
    cuts = np.flatnonzero(np.diff(user)) + 1
    for idx in np.split(np.arange(len(user)), cuts):
        if len(idx) == 0:
            continue
        t = ts[idx]
        if np.any(np.diff(t) < 0):
            raise ValueError(f"user {int(user[idx[0]])}: events must be sorted by ts")
        pos = idx[label[idx]]
        pos_ts, pos_item = ts[pos], item[pos]
        n_before = np.searchsorted(pos_ts, t, side="left")  # positives with ts < event ts
        for row, c in zip(idx, n_before, strict=True):
            h = pos_item[max(0, c - length) : c]
            if len(h):
                out[row, length - len(h) :] = h
    return out


def time_split_mask(user: IntArray, test_share: float) -> BoolArray:
    """(S,) True for each user's latest `test_share` of events (rows sorted by (user, ts)).

    Users with a single event stay in training; everyone else gets at least one test event.
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    _, start, count = np.unique(user, return_index=True, return_counts=True)
    n_test = np.where(count >= 2, np.maximum(1, np.floor(count * test_share)), 0).astype(np.int64)
    position = np.arange(len(user)) - np.repeat(start, count)  # 0.. within the user
    return position >= np.repeat(count - n_test, count)


def popularity_groups(train_items: IntArray, n_items: int) -> IntArray:
    """(n_items,) group 0..5 by training frequency: items ranked by count (ties by row) and cut
    into six equal-sized groups, so L1 holds the rarest sixth (unseen items included)."""
    counts = np.bincount(train_items, minlength=n_items)
    order = np.lexsort((np.arange(n_items), counts))  # least frequent first
    groups = np.empty(n_items, dtype=np.int64)
    groups[order] = np.arange(n_items) * N_POPULARITY_GROUPS // max(n_items, 1)
    return groups


def make_split(
    user: IntArray,
    item: IntArray,
    ts: IntArray,
    label: BoolArray,
    n_items: int,
    *,
    history: int = 50,
    test_share: float = 0.2,
) -> Split:
    """The whole protocol: sort by (user, ts), history features, per-user time split, groups."""
    order = np.lexsort((ts, user))
    user, item, ts, label = user[order], item[order], ts[order], label[order]
    samples = Samples(user, item, ts, label, history_features(user, item, ts, label, history))
    test = time_split_mask(user, test_share)
    train = samples.take(~test)
    return Split(train, samples.take(test), popularity_groups(train.item, n_items))
