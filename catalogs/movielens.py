"""MovieLens-100k written to qarm's training schema, then read as any user's files are.

`make data` unpacks RecBole's atomic files (`ml-100k.item`, `ml-100k.inter`: tab-separated, a
typed header such as `item_id:token`) into `data/ml-100k/` and `write_movielens` turns them
into `items.parquet` (`id`, `text` = title, year and genres; side columns `genre`, the first
listed genre, `genres` and `year`) and `events.parquet` (`user`, `item`, `ts`, `rating`).
Films have text only: no cover, no clip. A rating >= 4 is a positive event. Ratings of films
missing from the item file are dropped; rows keep the files' order.

The users' side columns (age, gender, occupation) are not part of the training schema, which
knows users only by id; `read_movielens_users` reads them from RecBole's `ml-100k.user`, which
`make data` keeps beside the Parquet files, for the ranking evaluation's side features.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.files import Files

POSITIVE_RATING = 4.0
ITEMS_FILE = "items.parquet"
EVENTS_FILE = "events.parquet"


def movielens_files(folder: Path) -> Files:
    """The two files `write_movielens` wrote into `folder`, as the pipeline opens them."""
    for name in (ITEMS_FILE, EVENTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; `make data` writes it")
    return Files(
        folder / ITEMS_FILE,
        folder / EVENTS_FILE,
        group_column="genre",
        positive_rating=POSITIVE_RATING,
    )


def write_movielens(src: Path, out: Path) -> Files:
    """RecBole's `ml-100k.item` and `ml-100k.inter` in `src` -> the two files in `out`."""
    ids: list[str] = []
    texts: list[str] = []
    first_genre: list[str] = []
    genres_all: list[str] = []
    years: list[int | None] = []
    for row in _read_atomic(src / "ml-100k.item"):
        title = row.get("movie_title", "").strip()
        year = row.get("release_year", "").strip()
        genres = row.get("class", "").split()
        ids.append(row["item_id"])
        text = title + (f" ({year})" if year else "")
        texts.append(text + (". " + ", ".join(genres) if genres else ""))
        first_genre.append(genres[0] if genres else "unknown")
        genres_all.append("|".join(genres))
        years.append(int(year) if year.isdigit() else None)
    known = set(ids)
    events = [r for r in _read_atomic(src / "ml-100k.inter") if r["item_id"] in known]
    out.mkdir(parents=True, exist_ok=True)
    items = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "genre": pa.array(first_genre, pa.string()),
            "genres": pa.array(genres_all, pa.string()),
            "year": pa.array(years, pa.int32()),
        }
    )
    log = pa.table(
        {
            "user": pa.array([r["user_id"] for r in events], pa.string()),
            "item": pa.array([r["item_id"] for r in events], pa.string()),
            "ts": pa.array([int(float(r["timestamp"])) for r in events], pa.int64()),
            "rating": pa.array([float(r["rating"]) for r in events], pa.float32()),
        }
    )
    pq.write_table(items, out / ITEMS_FILE)
    pq.write_table(log, out / EVENTS_FILE)
    return movielens_files(out)


@dataclass(frozen=True)
class MovieLensUsers:
    """U users of `ml-100k.user`, in the file's order; every list has U entries."""

    ids: list[str]  # `user_id`, as the events file spells it
    age: list[int | None]  # years; None where the file has no number
    gender: list[str]  # "M" or "F" in MovieLens-100k
    occupation: list[str]  # one of 21 names ("technician", "other", ...)


def read_movielens_users(folder: Path) -> MovieLensUsers:
    """The user file `make data` keeps in `folder` (RecBole's `ml-100k.user`).

    Raises FileNotFoundError naming the file, and ValueError naming the first repeated user id.
    """
    rows = _read_atomic(folder / "ml-100k.user")
    ids = [r["user_id"] for r in rows]
    repeated = [user for user, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"{folder / 'ml-100k.user'}: user_id {repeated[0]} appears twice")
    return MovieLensUsers(
        ids=ids,
        age=[int(a) if (a := r.get("age", "").strip()).isdigit() else None for r in rows],
        gender=[r.get("gender", "").strip() or "unknown" for r in rows],
        occupation=[r.get("occupation", "").strip() or "unknown" for r in rows],
    )


def _read_atomic(path: Path) -> list[dict[str, str]]:
    """A RecBole atomic file as dicts keyed by bare field names (`item_id`, not `item_id:token`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; `make data` puts MovieLens-100k there")
    with path.open(encoding="latin-1", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row, strict=False)) for row in reader if row]
