"""Catalog exports: Parquet files (or folders of them, or URIs pyarrow reads) of new items.

Columns: `id` (string) and any of `text` (string), `image` (binary: JPEG or PNG bytes, or a
string: a path relative to the Parquet file's folder), `audio` (binary: PCM WAV bytes, or such
a path), `embedding` (list of d floats); others are ignored. A row is one item, as the
service's API takes it: content, or an embedding computed elsewhere. The items file the
offline pipeline trains on (docs/data.md) is such an export.

`open_source` checks a whole export before any work starts (types from every file's footer,
then the id column read once: no null ids, no id twice) and refuses with a message that names
the file and the column. Row-level problems (an image that does not decode, an embedding of
the wrong width, a malformed id) are not refused here: the actors report each row with its id
and field, and the rest is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from backfill.errors import SourceError
from catalogs.columns import is_media, is_string
from runtime import RawItem
from runtime.decode import DecodeError

CONTENT = ("text", "image", "audio", "embedding")
MEDIA = ("image", "audio")
SHOWN = 5  # ids named in a refusal


@dataclass(frozen=True)
class Source:
    """A checked catalog export."""

    path: str  # absolute for a local path; a URI as given
    columns: tuple[str, ...]  # `id`, then the content columns it has, in CONTENT order
    rows: int
    paths: tuple[str, ...] = ()  # media columns that hold paths (relative to each file's folder)


def location(path: str) -> str:
    """What the report and Ray Data are given: a URI as is, a local path made absolute."""
    return path if "://" in path else str(Path(path).resolve())


def open_source(path: str) -> Source:
    """Check a catalog export (see the module doc); refuse it with SourceError."""
    where = location(path)
    dataset = _dataset(where)
    columns: list[str] | None = None
    paths: tuple[str, ...] = ()
    for fragment in dataset.get_fragments():
        schema = fragment.physical_schema
        found = _checked_columns(fragment.path, schema)
        paths = tuple(c for c in MEDIA if c in found and is_string(schema.field(c).type))
        if columns is not None and found != columns:
            raise SourceError(
                f"catalog {fragment.path}: columns {found}, other files of {where} have {columns}"
            )
        columns = found
    if columns is None:
        raise SourceError(f"catalog {where}: no Parquet file in it")
    ids = _ids_table(dataset, where)
    _check_ids(where, ids)
    return Source(where, ("id", *columns), len(ids), paths)


def check_disjoint(sources: Sequence[Source]) -> None:
    """Refuse exports that share ids: which row an item's codes came from would depend on
    the order rows reach the store."""
    if len(sources) < 2:
        return
    seen = pa.chunked_array(
        [_ids_table(_dataset(s.path), s.path).cast(pa.string()) for s in sources]
    )
    counts = pc.value_counts(seen)
    shared = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(shared):
        shown = ", ".join(shared.slice(0, SHOWN).to_pylist())
        names = ", ".join(s.path for s in sources)
        raise SourceError(
            f"catalogs {names}: {len(shared)} ids appear in more than one (e.g. {shown}); "
            "one row per item"
        )


def _dataset(where: str) -> pads.Dataset:
    if "://" not in where and not Path(where).exists():
        raise SourceError(f"catalog {where}: no such file or folder")
    try:
        return pads.dataset(where, format="parquet")
    except (OSError, pa.ArrowInvalid) as err:
        raise SourceError(f"catalog {where}: not readable as Parquet ({err})") from err


def _checked_columns(file: str, schema: pa.Schema) -> list[str]:
    """The content columns of one file, after checking every known column's type."""
    if "id" not in schema.names:
        raise SourceError(f"catalog {file}: no `id` column (columns: {schema.names})")
    _expect(file, "id", schema.field("id").type, is_string, "string")
    wanted = {
        "text": (is_string, "string"),
        "image": (is_media, "binary (JPEG or PNG bytes) or string (a path)"),
        "audio": (is_media, "binary (WAV bytes) or string (a path)"),
        "embedding": (_is_float_list, "list<float>"),
    }
    present = [c for c in CONTENT if c in schema.names]
    for column in present:
        check, expected = wanted[column]
        _expect(file, column, schema.field(column).type, check, expected)
    if not present:
        raise SourceError(
            f"catalog {file}: none of the columns {', '.join(CONTENT)} (columns: {schema.names})"
        )
    return present


def _expect(file: str, column: str, kind: pa.DataType, check: Any, expected: str) -> None:
    if not (pa.types.is_null(kind) and column != "id") and not check(kind):
        raise SourceError(f"catalog {file}: column `{column}` is {kind}, {expected} expected")


def _is_float_list(kind: pa.DataType) -> bool:
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    lists = lists or pa.types.is_fixed_size_list(kind)
    return bool(lists and pa.types.is_floating(kind.value_type))


def _ids_table(dataset: pads.Dataset, where: str) -> pa.Array:
    try:
        column = dataset.to_table(columns=["id"]).column("id")
    except (OSError, pa.ArrowInvalid) as err:
        raise SourceError(f"catalog {where}: column `id` not readable ({err})") from err
    return column.combine_chunks()


def _check_ids(where: str, ids: pa.Array) -> None:
    nulls = ids.null_count
    if nulls:
        raise SourceError(f"catalog {where}: column `id` has {nulls} empty (null) values")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(repeated):
        shown = ", ".join(repeated.slice(0, SHOWN).to_pylist())
        raise SourceError(
            f"catalog {where}: column `id`: {len(repeated)} ids appear more than once "
            f"(e.g. {shown}); one row per item"
        )


def read_ids(where: str, chunk: int = 10_000) -> Iterator[list[str]]:
    """The ids of a catalog export, in chunks (activation checks them in the store)."""
    for batch in _dataset(where).to_batches(columns=["id"], batch_size=chunk):
        yield batch.column(0).to_pylist()


def count_rows(where: str) -> int:
    """Rows of a catalog export, from its files' footers."""
    return int(_dataset(where).count_rows())


def read_items(where: str, ids: Sequence[str]) -> list[RawItem]:
    """The rows of `ids` as items (activation encodes a sample of them again)."""
    dataset = _dataset(where)
    names = [c for c in ("id", *CONTENT) if c in dataset.schema.names]
    paths = tuple(c for c in MEDIA if c in names and is_string(dataset.schema.field(c).type))
    wanted = pc.field("id").isin(list(ids))
    return [
        raw_item(_with_paths({**row, "path": fragment.path}, paths))
        for fragment in dataset.get_fragments()
        for row in fragment.to_table(columns=names, filter=wanted).to_pylist()
    ]


def _with_paths(row: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """A row whose media columns `paths` hold paths: each moved to `<column>_path`, resolved
    against the folder of the row's file (column `path`)."""
    for column in paths:
        value = row.pop(column, None)
        row[f"{column}_path"] = None if value is None else str(Path(row["path"]).parent / value)
    return row


def raw_item(row: Mapping[str, Any]) -> RawItem:
    """One row (`id` and content columns, nulls as None) as the runtime's item; a medium given
    as `<column>_path` is read from that file (DecodeError naming the column if it cannot)."""
    return RawItem(
        id=row["id"],
        text=row.get("text"),
        image=_media(row, "image"),
        audio=_media(row, "audio"),
        embedding=row.get("embedding"),
    )


def _media(row: Mapping[str, Any], column: str) -> bytes | None:
    path = row.get(f"{column}_path")
    if path is None:
        value: bytes | None = row.get(column)
        return value
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DecodeError(column, f"{path}: cannot be read ({err.strerror or err})") from err
