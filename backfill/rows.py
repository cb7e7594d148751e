"""The rows that flow through a run: work rows into the encoder actors, answered rows out of
them to the driver. The one contract between the readers, the actors and the writer.

Work rows (`WORK`, pyarrow): `source` 0 is the bundle's own catalog, its `row` the catalog
row and no content; `source` i > 0 is the i-th catalog export, `id` and its content columns
(missing ones null). One schema for all, so one Ray Data pipeline with one actor pool goes
through the catalog and every export without a stop between them.

Answered rows (numpy columns): every work row comes back as exactly one row, in one of
three kinds:
- `codes`: encoded; `vq` (K), `rq` (L), and, for a row of the bundle's catalog, its build
  entry `catalog_rq` (L) and `catalog_suffix` (else -1), so the store keeps that suffix;
- `stored`: left alone: the item had codes under the version already (a resumed run, or an
  upload the service wrote meanwhile: a given suffix never changes), or an export row of an
  item of the bundle's catalog (the bundle's codes are its codes);
- `failed`: not encoded; `field` and `message` say why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from store import NewCodes

CATALOG_SOURCE = 0
WORK = pa.schema(
    [
        ("source", pa.int32()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("text", pa.string()),
        ("image", pa.binary()),
        ("audio", pa.binary()),
        ("embedding", pa.list_(pa.float32())),
        ("image_path", pa.string()),  # an export's image given as a path, resolved
        ("audio_path", pa.string()),
    ]
)

CODES, STORED, FAILED = "codes", "stored", "failed"

Columns = dict[str, npt.NDArray[np.generic]]
Positions = Sequence[int] | npt.NDArray[np.intp]


def catalog_work(batch: Mapping[str, npt.NDArray[np.int64]]) -> pa.Table:
    """Catalog row numbers (column `id` of `ray.data.range(N)`) -> work rows of source 0."""
    rows = np.asarray(batch["id"], dtype=np.int64)
    n = len(rows)
    columns = {"source": pa.array(np.full(n, CATALOG_SOURCE, dtype=np.int32)), "row": rows}
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in WORK}, WORK)


def export_work(batch: pa.Table, source: int, paths: Sequence[str] = ()) -> pa.Table:
    """Rows of the `source`-th catalog export -> work rows (types widened or narrowed to
    WORK's: large strings, float64 or fixed-size embeddings). Media columns named in `paths`
    hold paths relative to the row's file (column `path`): they go to `<column>_path`."""
    n = batch.num_rows
    columns = {
        "source": pa.array(np.full(n, source, dtype=np.int32)),
        "row": pa.array(np.full(n, -1, dtype=np.int64)),
    }
    for column in paths:
        files, values = batch.column("path").to_pylist(), batch.column(column).to_pylist()
        resolved = [
            None if v is None else str(PurePath(f).parent / v)
            for f, v in zip(files, values, strict=True)
        ]
        columns[f"{column}_path"] = pa.array(resolved, pa.string())
        batch = batch.drop_columns([column])
    for f in WORK:
        if f.name in batch.column_names:
            columns[f.name] = batch.column(f.name).cast(f.type)
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in WORK}, WORK)


class Answer:
    """The answer to one batch of work rows, filled by position; every row starts `stored`."""

    def __init__(
        self, ids: Sequence[str], sources: npt.NDArray[np.int32], k: int, levels: int
    ) -> None:
        n = len(ids)
        self.ids = np.array(ids, dtype=np.str_).reshape(n)
        self.sources = np.asarray(sources, dtype=np.int32)
        self.kind = np.full(n, STORED, dtype="<U6")
        self.vq = np.zeros((n, k), dtype=np.int32)
        self.rq = np.zeros((n, levels), dtype=np.int32)
        self.catalog_rq = np.zeros((n, levels), dtype=np.int32)
        self.catalog_suffix = np.full(n, -1, dtype=np.int64)
        self.field = np.full(n, "", dtype=object)
        self.message = np.full(n, "", dtype=object)

    def codes(self, rows: Positions, vq: npt.NDArray[np.int32], rq: npt.NDArray[np.int32]) -> None:
        """Rows `rows` were encoded: (len(rows), K) VQ and (len(rows), L) RQ codes."""
        self.kind[rows] = CODES
        self.vq[rows] = vq
        self.rq[rows] = rq

    def catalog(self, rows: Positions, rq: npt.ArrayLike, suffix: npt.ArrayLike) -> None:
        """Rows that are bundle catalog items: their build RQ codes and suffixes."""
        self.catalog_rq[rows] = rq
        self.catalog_suffix[rows] = suffix

    def failed(self, row: int, field: str, message: str) -> None:
        self.kind[row] = FAILED
        self.field[row] = field
        self.message[row] = message

    def columns(self) -> Columns:
        return {
            "id": self.ids,
            "source": self.sources,
            "kind": self.kind,
            "vq": self.vq,
            "rq": self.rq,
            "catalog_rq": self.catalog_rq,
            "catalog_suffix": self.catalog_suffix,
            "field": self.field.astype(np.str_),
            "message": self.message.astype(np.str_),
        }


@dataclass(frozen=True)
class Failed:
    id: str
    source: int
    field: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """What the driver takes from one batch of answered rows."""

    codes: list[NewCodes]
    stored: int
    failed: list[Failed]

    @property
    def rows(self) -> int:
        return len(self.codes) + self.stored + len(self.failed)


def read_answer(batch: Mapping[str, npt.NDArray[np.generic]]) -> Outcome:
    """Answered rows (numpy columns, as `iter_batches` gives them) -> items to write, the
    count left alone, and the failures."""
    ids = [str(i) for i in batch["id"]]
    kinds = [str(k) for k in batch["kind"]]
    vq = np.asarray(batch["vq"]).tolist()
    rq = np.asarray(batch["rq"]).tolist()
    catalog_rq = np.asarray(batch["catalog_rq"]).tolist()
    catalog_suffix = np.asarray(batch["catalog_suffix"]).tolist()
    codes: list[NewCodes] = []
    failed: list[Failed] = []
    for i, (item_id, kind) in enumerate(zip(ids, kinds, strict=True)):
        if kind == CODES:
            suffix = int(catalog_suffix[i])
            entry = (tuple(catalog_rq[i]), suffix) if suffix >= 0 else None
            codes.append(NewCodes(item_id, tuple(vq[i]), tuple(rq[i]), catalog=entry))
        elif kind == FAILED:
            source = int(batch["source"][i])
            failed.append(Failed(item_id, source, str(batch["field"][i]), str(batch["message"][i])))
        elif kind != STORED:
            raise ValueError(f"row {item_id!r}: unknown kind {kind!r}")
    return Outcome(codes, kinds.count(STORED), failed)
