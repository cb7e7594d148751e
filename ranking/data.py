"""Ranking samples from a labelled interaction log: a per-user time split, cold items, history
features that never see the future, and item popularity groups.

Every event (user, item, ts, label) becomes one sample. `catalogs.holdout.Holdout` says which
are scored: each user's latest `test_share` of events, and every test event of a cold item (a
seeded share of items that training never sees). A sample's history is the user's last
`history` positive items whose timestamp is strictly before the event's, so neither the event
itself nor anything at or after its time leaks into its features. Test samples do see the
user's earlier test-time positives, as a ranking server would at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from catalogs.holdout import Holdout
from catalogs.interactions import Interactions

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
    train: Samples  # the past of warm items
    test: Samples  # the latest events of warm items
    cold_test: Samples  # the latest events of cold items (empty without cold items)
    popularity: IntArray  # (N_items,) group 0..5 (L1..L6) by training frequency; cold: -1


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


def popularity_groups(train_items: IntArray, warm: BoolArray) -> IntArray:
    """(n_items,) group 0..5 by training frequency among the warm items: ranked by count (ties
    by row) and cut into six equal-sized groups, so L1 holds the rarest sixth. Cold items, which
    training never sees, are in no group (-1)."""
    counts = np.bincount(train_items, minlength=len(warm))
    rows = np.flatnonzero(warm)
    order = rows[np.lexsort((rows, counts[rows]))]  # least frequent first
    groups = np.full(len(warm), -1, dtype=np.int64)
    groups[order] = np.arange(len(rows)) * N_POPULARITY_GROUPS // max(len(rows), 1)
    return groups


def make_split(log: Interactions, n_items: int, holdout: Holdout, *, history: int = 50) -> Split:
    """The whole protocol on a log sorted by (user, ts).

    Events of cold items from before the test period are dropped, as if those items did not
    exist yet; then history features are built; the training samples are the past of warm
    items (exactly `holdout.training_events`), the test samples are the rest, warm and cold.
    """
    cold = holdout.cold_items(n_items)
    test = holdout.test_events(log)
    keep = test | ~cold[log.item]
    log, test = log.take(keep), test[keep]
    samples = Samples(
        log.user,
        log.item,
        log.ts,
        log.label,
        history_features(log.user, log.item, log.ts, log.label, history),
    )
    train = samples.take(~test)
    return Split(
        train=train,
        test=samples.take(test & ~cold[log.item]),
        cold_test=samples.take(test & cold[log.item]),
        popularity=popularity_groups(train.item, ~cold),
    )
