"""A user's interaction log: a Parquet file (or a folder of them) of events, checked, as rows.

Columns (docs/data.md): `user` (string or integer), `item` (an `id` of the items file),
`ts` (epoch seconds as a number, or a timestamp), and either `label` (0/1 or boolean: 1 is a
positive event such as a click or a purchase) or `rating` (a number; `rating >=
positive_rating` is positive). With both, `label` wins. Other columns are ignored.

`read_events` refuses with a `DataError` naming the file, the column and a few rows: a
missing column or one of the wrong type, nulls, labels other than 0/1, items that are not in
the catalog, an empty log, a log without a positive event. Users are numbered in order of
first appearance, and events are sorted by (user, ts), stably, as `Interactions` are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from catalogs.columns import is_string
from catalogs.errors import DataError, refuse
from catalogs.interactions import Interactions
from catalogs.items import open_dataset

POSITIVE_RATING = 4.0  # with a `rating` column: the least rating that counts as positive
COLUMNS = ("user", "item", "ts")


def read_events(
    path: Path, item_ids: npt.NDArray[np.str_], *, positive_rating: float = POSITIVE_RATING
) -> Interactions:
    """The events of `path` as catalog rows of `item_ids` (see the module doc)."""
    dataset = open_dataset(path)
    names = dataset.schema.names
    for column in COLUMNS:
        if column not in names:
            raise refuse(path, column, f"missing (columns: {', '.join(names)})")
    outcome = "label" if "label" in names else "rating" if "rating" in names else None
    if outcome is None:
        raise refuse(
            path, "label", f"missing, and no `rating` either (columns: {', '.join(names)})"
        )
    table = dataset.to_table(columns=[*COLUMNS, outcome])
    if table.num_rows == 0:
        raise DataError(f"{path}: the log is empty (0 rows)")
    for column in table.column_names:
        _no_nulls(path, table, column)
    item = _rows(path, table.column("item"), item_ids)
    user = _first_appearance(path, table.column("user"))
    ts = _seconds(path, table.column("ts"))
    label = _label(path, table.column(outcome), outcome, positive_rating)
    if not label.any():
        threshold = f" (rating >= {positive_rating:g})" if outcome == "rating" else ""
        raise refuse(path, outcome, f"no positive event among {len(label)}{threshold}")
    order = np.lexsort((ts, user))
    return Interactions(user[order], item[order], ts[order], label[order])


def _no_nulls(path: Path, table: pa.Table, column: str) -> None:
    values = table.column(column)
    if values.null_count:
        rows = np.flatnonzero(values.is_null().to_numpy())
        raise refuse(path, column, f"{values.null_count} nulls", [f"row {r}" for r in rows[:5]])


def _rows(
    path: Path, items: pa.ChunkedArray, item_ids: npt.NDArray[np.str_]
) -> npt.NDArray[np.int64]:
    if not (is_string(items.type) or pa.types.is_integer(items.type)):
        raise refuse(path, "item", f"is {items.type}; item ids (string or integer) expected")
    keys = items.cast(pa.string())
    rows = pc.index_in(keys, value_set=pa.array(item_ids.tolist(), pa.string()))
    if rows.null_count:
        unknown = pc.unique(keys.filter(rows.is_null()))
        raise refuse(
            path,
            "item",
            f"{rows.null_count} events name {len(unknown)} items that are not in the catalog",
            [str(v) for v in unknown.slice(0, 5).to_pylist()],
        )
    out: npt.NDArray[np.int64] = rows.to_numpy().astype(np.int64)
    return out


def _first_appearance(path: Path, users: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    if not (is_string(users.type) or pa.types.is_integer(users.type)):
        raise refuse(path, "user", f"is {users.type}; user ids (string or integer) expected")
    codes = pc.index_in(users, value_set=pc.unique(users))  # unique keeps first-seen order
    out: npt.NDArray[np.int64] = codes.to_numpy().astype(np.int64)
    return out


def _seconds(path: Path, ts: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    kind = ts.type
    if pa.types.is_timestamp(kind):
        seconds = pc.divide(ts.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64()), 1_000_000)
        out: npt.NDArray[np.int64] = seconds.to_numpy().astype(np.int64)
        return out
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = ts.to_numpy().astype(np.float64)
        if not np.isfinite(values).all():
            rows = np.flatnonzero(~np.isfinite(values))
            raise refuse(path, "ts", "NaN or infinite times", [f"row {r}" for r in rows[:5]])
        seconds_: npt.NDArray[np.int64] = np.floor(values).astype(np.int64)
        return seconds_
    raise refuse(path, "ts", f"is {kind}; epoch seconds (a number) or a timestamp expected")


def _label(
    path: Path, values: pa.ChunkedArray, column: str, positive_rating: float
) -> npt.NDArray[np.bool_]:
    kind = values.type
    if column == "rating":
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise refuse(path, column, f"is {kind}; a number expected")
        return np.asarray(values.to_numpy().astype(np.float64) >= positive_rating, dtype=bool)
    if pa.types.is_boolean(kind):
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)
    if not pa.types.is_integer(kind):
        raise refuse(path, column, f"is {kind}; 0/1 or boolean expected")
    raw = values.to_numpy()
    bad = np.flatnonzero((raw != 0) & (raw != 1))
    if len(bad):
        shown = [f"row {r}: {raw[r]}" for r in bad[:5]]
        raise refuse(path, column, f"{len(bad)} labels are not 0 or 1", shown)
    return np.asarray(raw == 1, dtype=bool)
