"""Parquet exports of a bundle's codes, for batch users and offline joins.

- `items.parquet`: item_id, vq (K int32, nearest first; the item itself comes first), rq
  (L int32), suffix (int32), sid (the semantic ID as text, `c1-...-cL-s`).
- `sids.parquet`: sid -> item_id, sorted by the RQ codes then the suffix, so the items that
  share an RQ prefix are contiguous.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from codebooks.bundle import Bundle
from codebooks.quantizer import Quantizer
from codebooks.sid import format_sid
from codebooks.vq import own_row_first

EXPORT_CHUNK = 4096


def catalog_vq_codes(bundle: Bundle, *, progress: bool = False) -> np.ndarray:
    """(N, K) int32 VQ codes of every catalog item, re-encoded from the bundle's own index."""
    embeddings = bundle.catalog_vectors(0, bundle.manifest.n_items)
    quantizer = Quantizer(bundle)
    out = np.empty((bundle.manifest.n_items, bundle.manifest.k), dtype=np.int32)
    starts = range(0, len(out), EXPORT_CHUNK)
    for start in tqdm(starts, desc="vq codes", unit="chunk") if progress else starts:
        stop = min(start + EXPORT_CHUNK, len(out))
        vq, _ = quantizer.encode(embeddings[start:stop])
        out[start:stop] = own_row_first(vq, np.arange(start, stop))
    return out


def write_exports(
    bundle: Bundle, out: Path, *, vq: bool = True, progress: bool = False
) -> list[Path]:
    """Write items.parquet (with VQ codes unless `vq` is False) and sids.parquet under `out`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise RuntimeError("exporting Parquet needs pyarrow (pip install pyarrow)") from err
    out.mkdir(parents=True, exist_ok=True)
    codes, suffix, ids = bundle.rq_codes, bundle.sid_suffix, bundle.item_ids
    levels = codes.shape[1]
    sids = np.array([format_sid(row, int(s)) for row, s in zip(codes, suffix, strict=True)])
    columns = {
        "item_id": pa.array(ids.tolist(), pa.string()),
        "rq": pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel(), pa.int32()), levels),
        "suffix": pa.array(suffix, pa.int32()),
        "sid": pa.array(sids.tolist(), pa.string()),
    }
    if vq:
        vq_codes = catalog_vq_codes(bundle, progress=progress)
        columns["vq"] = pa.FixedSizeListArray.from_arrays(
            pa.array(vq_codes.ravel(), pa.int32()), vq_codes.shape[1]
        )
    items_path, sids_path = out / "items.parquet", out / "sids.parquet"
    pq.write_table(pa.table(columns), items_path)
    order = np.lexsort((suffix, *codes.T[::-1]))
    pq.write_table(
        pa.table({"sid": pa.array(sids[order].tolist()), "item_id": pa.array(ids[order].tolist())}),
        sids_path,
    )
    return [items_path, sids_path]
