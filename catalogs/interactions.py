"""An interaction log as the pipeline and the ranking evaluation read it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Interactions:
    """An interaction log sorted by (user, ts): one row per event.

    user, item: int64 row indices (item indexes the catalog). ts: int64 seconds. label: bool,
    True for a positive event (click, purchase, rating >= 4), False for a negative one.
    """

    user: IntArray
    item: IntArray
    ts: IntArray
    label: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return int(self.user.max()) + 1 if len(self.user) else 0

    def take(self, rows: npt.NDArray[np.bool_] | IntArray) -> Interactions:
        """The events at `rows` (a mask or sorted row indices), still sorted by (user, ts)."""
        return Interactions(self.user[rows], self.item[rows], self.ts[rows], self.label[rows])

    def positives(self) -> Interactions:
        return self.take(self.label)
