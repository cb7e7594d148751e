"""The Ray Data encoder actor: loads the bundle's engine once, then answers batches of work
rows (rows.py) with codes.

Rows of the bundle's catalog get the codes the bundle holds, without the encoder
(`Engine.catalog_rows`: build RQ codes and suffixes, VQ from the rows' own vectors). Rows of
a catalog export are decoded and encoded; a row that does not decode fails alone, named.

First the actor asks the store which items the version has already (`get_many`) and leaves
those alone: that makes a resumed run skip finished work and never change a suffix it gave,
and it keeps an upload the service wrote to the staged version meanwhile. The store is only
read here; the driver is the one writer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from backfill.rows import CATALOG_SOURCE, Answer, Columns
from backfill.source import raw_item
from codebooks.sid import ID_RE
from runtime import DecodeError, Engine, EngineOptions, InputLimits, Prepared
from store import StoreSettings, open_store

# docs/store.md: an item id is 1..128 characters of [A-Za-z0-9_.:-] (the service refuses others).
ID = ID_RE


class Encoder:
    """An engine for `version` and a reader of the store, both for the actor's lifetime."""

    def __init__(
        self,
        bundle: str,
        version: str,
        store: StoreSettings,
        options: EngineOptions,
        limits: InputLimits,
    ) -> None:
        self.engine = Engine.load(Path(bundle), options, limits)
        if self.engine.version != version:
            raise RuntimeError(f"bundle {bundle} is version {self.engine.version}, not {version}")
        self.version = version
        # One loop for the actor's life: the Redis pool's connections belong to it.
        self._loop = asyncio.new_event_loop()
        self._store = open_store(store)

    def __call__(self, batch: pa.Table) -> Columns:
        sources = batch.column("source").to_numpy()
        rows = batch.column("row").to_numpy()
        ids = batch.column("id").to_pylist()
        catalog = np.flatnonzero(sources == CATALOG_SOURCE)
        for i, item_id in zip(catalog, self.engine.bundle.item_ids[rows[catalog]], strict=True):
            ids[i] = str(item_id)
        answer = Answer(ids, sources, self.engine.quantizer.k, self.engine.levels)
        valid = self._check_ids(answer, ids)
        todo = valid[~self._stored([ids[i] for i in valid])]
        self._catalog(answer, todo[sources[todo] == CATALOG_SOURCE], rows)
        self._exported(answer, todo[sources[todo] != CATALOG_SOURCE], batch)
        return answer.columns()

    def _check_ids(self, answer: Answer, ids: list[str]) -> npt.NDArray[np.intp]:
        """Positions of well-formed ids; the others fail (field `id`)."""
        valid = []
        for i, item_id in enumerate(ids):
            if ID.fullmatch(item_id):
                valid.append(i)
            else:
                answer.failed(i, "id", "1..128 characters of [A-Za-z0-9_.:-] expected")
        return np.array(valid, dtype=np.intp)

    def _stored(self, ids: list[str]) -> npt.NDArray[np.bool_]:
        """For each id, whether the version has codes for it already."""
        if not ids:
            return np.zeros(0, dtype=bool)
        found = self._loop.run_until_complete(self._store.get_many(self.version, ids))
        return np.array([f is not None for f in found], dtype=bool)

    def _catalog(
        self, answer: Answer, todo: npt.NDArray[np.intp], rows: npt.NDArray[np.int64]
    ) -> None:
        """Catalog rows at positions `todo`: the bundle's codes, range by range."""
        order = todo[np.argsort(rows[todo], kind="stable")]
        for run in runs(rows[order]):
            at = order[run]
            start, stop = int(rows[at[0]]), int(rows[at[-1]]) + 1
            encoded, suffixes = self.engine.catalog_rows(start, stop)
            answer.codes(at, encoded.vq, encoded.rq)
            answer.catalog(at, encoded.rq, suffixes)

    def _exported(self, answer: Answer, todo: npt.NDArray[np.intp], batch: pa.Table) -> None:
        """Export rows at positions `todo`: decoded and encoded; an item of the bundle's
        catalog is left to its catalog row."""
        prepared: list[Prepared] = []
        positions: list[int] = []
        for i, row in zip(todo.tolist(), batch.take(todo).to_pylist(), strict=True):
            if self.engine.catalog_entry(row["id"]) is not None:
                continue  # `stored`: the bundle's codes are written from its catalog row
            try:
                prepared.append(self.engine.prepare(raw_item(row)))
            except DecodeError as err:
                answer.failed(i, err.field, err.message)
            else:
                positions.append(i)
        if prepared:
            encoded = self.engine.encode(prepared)
            answer.codes(positions, encoded.vq, encoded.rq)


def runs(values: npt.NDArray[np.int64]) -> list[npt.NDArray[np.intp]]:
    """Positions of ascending `values` split where it stops counting up by one:
    [3,4,5,9,10] -> [[0,1,2],[3,4]]. Each run is one contiguous range of catalog rows."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    return list(np.split(np.arange(len(values)), breaks))
