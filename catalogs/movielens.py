"""MovieLens-100k as a qarm catalog: real titles and a real rating log.

`make data` unpacks RecBole's atomic files (`ml-100k.item`, `ml-100k.inter`: tab-separated, a
typed header such as `item_id:token`) into `data/ml-100k/`. Items have text only (title, year,
genres); they have no cover or clip, so their image and audio masks are 0. A rating >= 4 is a
positive event, anything lower a negative one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from codebooks.catalog import (
    AUDIO_SAMPLES,
    IMAGE_SIZE,
    IntArray,
    Interactions,
    ItemContent,
)

POSITIVE_RATING = 4.0


@dataclass(frozen=True)
class MovieCatalog:
    """Movies in file order: row i is item `ids[i]`; `groups` is the first listed genre."""

    ids: npt.NDArray[np.str_]
    titles: list[str]  # row -> title, year and genres as one text
    groups: IntArray
    genres: list[str]  # group index -> genre name

    def __len__(self) -> int:
        return len(self.ids)

    def texts(self, rows: IntArray) -> list[str]:
        return [self.titles[int(r)] for r in rows]

    def content(self, rows: IntArray) -> ItemContent:
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        return ItemContent(
            texts=self.texts(rows),
            image=np.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32),
            image_mask=np.zeros(n, dtype=np.float32),
            audio=np.zeros((n, AUDIO_SAMPLES), dtype=np.float32),
            audio_mask=np.zeros(n, dtype=np.float32),
        )


def load_movielens(folder: Path) -> tuple[MovieCatalog, Interactions]:
    """Read `ml-100k.item` and `ml-100k.inter` from `folder`.

    Ratings of movies missing from the item file are dropped; users are renumbered 0..U-1 in
    order of first appearance. Raises FileNotFoundError naming the file (run `make data`).
    """
    item_rows = _read_atomic(folder / "ml-100k.item")
    ids: list[str] = []
    texts: list[str] = []
    first_genre: list[str] = []
    for row in item_rows:
        title = row.get("movie_title", "").strip()
        year = row.get("release_year", "").strip()
        genres = row.get("class", "").split()
        ids.append(row["item_id"])
        text = title + (f" ({year})" if year else "")
        texts.append(text + (". " + ", ".join(genres) if genres else ""))
        first_genre.append(genres[0] if genres else "unknown")
    genre_names = sorted(set(first_genre))
    groups = np.array([genre_names.index(g) for g in first_genre], dtype=np.int64)
    catalog = MovieCatalog(np.array(ids), texts, groups, genre_names)

    row_of = {item_id: i for i, item_id in enumerate(ids)}
    users: dict[str, int] = {}
    user, item, ts, rating = [], [], [], []
    for row in _read_atomic(folder / "ml-100k.inter"):
        if row["item_id"] not in row_of:
            continue
        user.append(users.setdefault(row["user_id"], len(users)))
        item.append(row_of[row["item_id"]])
        ts.append(int(float(row["timestamp"])))
        rating.append(float(row["rating"]))
    u, i, t = (np.array(a, dtype=np.int64) for a in (user, item, ts))
    order = np.lexsort((t, u))
    label = np.array(rating)[order] >= POSITIVE_RATING
    return catalog, Interactions(u[order], i[order], t[order], label)


def _read_atomic(path: Path) -> list[dict[str, str]]:
    """A RecBole atomic file as dicts keyed by bare field names (`item_id`, not `item_id:token`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; `make data` puts MovieLens-100k there")
    with path.open(encoding="latin-1", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row, strict=False)) for row in reader if row]
