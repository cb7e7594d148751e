"""Side features: what a production ranker knows of an item and a user besides their IDs.

Every feature is categorical, stored as a `Field`: per row, a bag of category ids (a multi-hot
such as a film's genres, or a single value such as a bucketed release year), padded with PAD.
Numbers are bucketed by fixed edges, so a cold item's year lands in a bucket warm items trained.
The same `SideFeatures` feed every model that uses them (the DIN ranker's `+side` variants, the
logistic regression and the DCN references), so they differ only in how they use the features.

- MovieLens-100k: items: genres (multi-hot), release year (bucketed); users: age (bucketed),
  gender, occupation (RecBole's `ml-100k.user`, read by `catalogs.movielens`).
- Synthetic catalog: items: the content style (what an item looks like; its latent business,
  which the log follows, is not a feature). Synthetic users have no features.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalogs.files import Files
from catalogs.items import open_dataset
from catalogs.movielens import read_movielens_users
from catalogs.synthetic import SyntheticCatalog

IntArray = npt.NDArray[np.int64]

PAD = -1  # an empty slot of a field's bag
UNKNOWN = "unknown"  # the category of a missing value
YEAR_EDGES = (1950, 1960, 1970, 1980, 1990, 1993, 1995, 1996, 1997, 1998)  # ML-100k: most 1990s
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups


@dataclass(frozen=True)
class Field:
    """One categorical feature of R rows. values: (R, M) int64 category ids < len(labels),
    PAD in unused slots (M = 1 for a single-valued field)."""

    name: str
    values: IntArray
    labels: tuple[str, ...]  # category names, by id

    @property
    def vocab(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SideFeatures:
    """The item fields (rows = catalog rows) and user fields (rows = the log's user numbers)."""

    item: tuple[Field, ...]
    user: tuple[Field, ...]

    def check(self, n_items: int, n_users: int) -> None:
        """Raises ValueError naming the field whose rows do not match the catalog or the log."""
        for fields, rows, what in ((self.item, n_items, "items"), (self.user, n_users, "users")):
            for f in fields:
                if f.values.ndim != 2 or len(f.values) != rows:
                    raise ValueError(
                        f"side feature {f.name!r}: values {f.values.shape}, expected ({rows}, M) "
                        f"for {rows} {what}"
                    )
                if f.values.size and (f.values.max() >= f.vocab or f.values.min() < PAD):
                    raise ValueError(
                        f"side feature {f.name!r}: ids outside [0, {f.vocab}) besides PAD"
                    )


def categorical(name: str, values: Sequence[str | None]) -> Field:
    """A single-valued field; None is its own category, UNKNOWN. Categories sorted by name."""
    return multi_hot(name, [[v if v is not None else UNKNOWN] for v in values])


def multi_hot(name: str, bags: Sequence[Sequence[str]]) -> Field:
    """A multi-valued field (a film's genres); an empty bag counts as the category UNKNOWN."""
    bags = [list(dict.fromkeys(b)) or [UNKNOWN] for b in bags]  # dedupe, keep order
    labels = tuple(sorted({v for b in bags for v in b}))
    index = {label: i for i, label in enumerate(labels)}
    width = max((len(b) for b in bags), default=1)
    values = np.full((len(bags), width), PAD, dtype=np.int64)
    for row, bag in enumerate(bags):
        values[row, : len(bag)] = [index[v] for v in bag]
    return Field(name, values, labels)


def bucketed(name: str, numbers: Sequence[float | None], edges: Sequence[float]) -> Field:
    """A number as its bucket between sorted `edges` ("<e0", "e0-e1", ..., ">=en"); None is the
    bucket UNKNOWN. Every bucket is a category even if no row falls in it, so ids are stable."""
    if list(edges) != sorted(edges) or not edges:
        raise ValueError(f"side feature {name!r}: bucket edges must be sorted and non-empty")
    labels = [f"<{edges[0]:g}"]
    labels += [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)]
    labels += [f">={edges[-1]:g}", UNKNOWN]
    ids = [
        len(labels) - 1 if x is None else int(np.searchsorted(edges, x, side="right"))
        for x in numbers
    ]
    return Field(name, np.array(ids, dtype=np.int64)[:, None], tuple(labels))


def log_user_ids(events: Path) -> npt.NDArray[np.str_]:
    """(U,) user ids in the order `catalogs.events.read_events` numbers them (first appearance
    in the file), so row u of a user field is the log's user u."""
    users = open_dataset(events).to_table(columns=["user"]).column("user")
    return np.array(pc.unique(users).cast(pa.string()).to_pylist(), dtype=np.str_)


def movielens_features(files: Files, catalog_ids: npt.NDArray[np.str_]) -> SideFeatures:
    """Genres and bucketed year of every catalog row; bucketed age, gender and occupation of
    every user of the log, from `ml-100k.user` beside the items file.

    Raises ValueError naming a log user missing from the user file.
    """
    table = pq.read_table(files.items, columns=["id", "genres", "year"])
    row_of = {str(i): r for r, i in enumerate(table.column("id").to_pylist())}
    genres = table.column("genres").to_pylist()
    years = table.column("year").to_pylist()
    rows = [row_of[str(i)] for i in catalog_ids]
    item = (
        multi_hot("genres", [[g for g in (genres[r] or "").split("|") if g] for r in rows]),
        bucketed("year", [years[r] for r in rows], YEAR_EDGES),
    )
    users = read_movielens_users(files.items.parent)
    user_row = {u: r for r, u in enumerate(users.ids)}
    order = []
    for u in log_user_ids(files.events):
        if str(u) not in user_row:
            raise ValueError(f"{files.items.parent / 'ml-100k.user'}: user {u} of the log missing")
        order.append(user_row[str(u)])
    user = (
        bucketed("age", [users.age[r] for r in order], AGE_EDGES),
        categorical("gender", [users.gender[r] for r in order]),
        categorical("occupation", [users.occupation[r] for r in order]),
    )
    return SideFeatures(item, user)


def synthetic_features(catalog: SyntheticCatalog) -> SideFeatures:
    """The style of every item (its look, shared across businesses on purpose); no user fields."""
    return SideFeatures((categorical("style", [str(s) for s in catalog.style]),), ())
