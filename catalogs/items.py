"""A user's catalog: a Parquet file (or a folder of them) of items, checked, then read lazily.

Columns (docs/data.md): `id` (string, the API's id rule), and any of `text`
(string), `image` (binary JPEG or PNG bytes, or a string path relative to the file's folder)
and `audio` (binary PCM WAV bytes, or such a path). Every other column is a side column: it
rides along, and one of them may colour the alignment maps (`group_column`).

`open_items` checks the whole catalog before any training starts and refuses it with a
`DataError` that names the file, the column and a few offending rows: no `id` column, a
column of the wrong type, no content column, an empty catalog, null, malformed or repeated
ids, images or clips whose header does not read (or exceeds the service's limits). It reads
the catalog's media one row group at a time (so keep row groups to tens of MB; with covers
inside, e.g. pyarrow's `row_group_size=10_000`): texts are kept as one Arrow array (about their own
size in memory); images and clips are copied, still encoded, into one flat file per column
(`Blob`) in a cache folder, and decoded only when a batch asks for their rows. A second run
over the same files reuses the cache.
"""

from __future__ import annotations

import io
import json
import os
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from catalogs.columns import is_media, is_string
from catalogs.content import AUDIO_SAMPLES, IMAGE_SIZE, SAMPLE_RATE, IntArray, ItemContent
from catalogs.errors import DataError, refuse
from codebooks.sid import ID_PATTERN
from runtime.decode import IMAGE_FORMATS, DecodeError, decode_image, decode_wav
from runtime.engine import InputLimits

CONTENT = ("text", "image", "audio")
MEDIA = ("image", "audio")
BATCH_ROWS = 4096  # rows read at a time when checking and copying media
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Blob:
    """One media column's encoded values end to end: row i is `data[offsets[i]:offsets[i+1]]`,
    empty for an item without that medium. `data` is memory-mapped, so workers share it."""

    data: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]  # (N + 1,)

    def get(self, row: int) -> bytes | None:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self.data[start:end]) if end > start else None

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        mask: npt.NDArray[np.bool_] = np.diff(self.offsets) > 0
        return mask


@dataclass(frozen=True)
class ParquetCatalog:
    """A checked items file as the pipeline's `Catalog`: row i is item `ids[i]`, in file order."""

    path: Path
    ids: npt.NDArray[np.str_]
    groups: IntArray  # (N,) codes of `group_column`, sorted by name; zeros without one
    group_names: list[str]
    text: pa.Array | None  # (N,) strings, nulls for items without text
    columns: tuple[str, ...]  # the content columns the file has
    media: dict[str, Blob] = field(default_factory=dict)  # "image", "audio"; read and cached
    limits: InputLimits = field(default_factory=InputLimits)

    def __len__(self) -> int:
        return len(self.ids)

    def texts(self, rows: IntArray) -> list[str | None]:
        if self.text is None:
            return [None] * len(rows)
        values: list[str | None] = self.text.take(pa.array(rows, pa.int64())).to_pylist()
        return values

    def content(self, rows: IntArray) -> ItemContent:
        """Decode the rows' media; a value that passed the header check but does not decode
        is refused here, naming the item."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        image = np.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        audio = np.zeros((n, AUDIO_SAMPLES), dtype=np.float32)
        image_mask = np.zeros(n, dtype=np.float32)
        audio_mask = np.zeros(n, dtype=np.float32)
        for j, row in enumerate(rows.tolist()):
            try:
                if "image" in self.media and (raw := self.media["image"].get(row)) is not None:
                    image[j] = decode_image(raw, IMAGE_SIZE, self.limits.max_image_pixels)
                    image_mask[j] = 1.0
                if "audio" in self.media and (raw := self.media["audio"].get(row)) is not None:
                    audio[j] = decode_wav(raw, SAMPLE_RATE, AUDIO_SAMPLES, self.limits.max_audio_s)[
                        0
                    ]
                    audio_mask[j] = 1.0
            except DecodeError as err:
                raise refuse(self.path, err.field, f"item {self.ids[row]}: {err.message}") from err
        return ItemContent(self.texts(rows), image, image_mask, audio, audio_mask)


def open_items(
    path: Path,
    media_dir: Path | None,
    *,
    group_column: str | None = None,
    limits: InputLimits | None = None,
    progress: bool = True,
) -> ParquetCatalog:
    """Check a catalog (see the module doc) and open it; images and clips are cached in
    `media_dir` (None: they are neither checked nor read, and items have text only)."""
    limits = limits or InputLimits()
    dataset = open_dataset(path)
    columns = _checked_schema(path, dataset.schema, group_column)
    ids = _checked_ids(path, dataset)
    text = _column(dataset, "text") if "text" in columns else None
    if text is not None and text.null_count == len(text):
        text = None
    groups, names = _groups(dataset, group_column)
    media = {
        column: _blob(path, dataset, column, ids, media_dir, limits, progress)
        for column in MEDIA
        if column in columns and media_dir is not None
    }
    return ParquetCatalog(path, ids, groups, names, text, tuple(columns), media, limits)


def open_dataset(path: Path) -> pads.Dataset:
    """A Parquet file or folder of them, refused (DataError) when missing, unreadable or empty."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    try:
        dataset = pads.dataset(str(path), format="parquet")
        fragments = list(dataset.get_fragments())
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: not readable as Parquet ({err})") from err
    if not fragments:
        raise DataError(f"{path}: no Parquet file in it")
    return dataset


def _checked_schema(path: Path, schema: pa.Schema, group_column: str | None) -> list[str]:
    """The content columns present, after checking each known column's type."""
    if "id" not in schema.names:
        raise refuse(path, "id", f"missing (columns: {', '.join(schema.names)})")
    kind = schema.field("id").type
    if not is_string(kind):
        raise refuse(path, "id", f"is {kind}; string ids expected (cast numbers to strings)")
    present = [c for c in CONTENT if c in schema.names]
    if not present:
        raise refuse(
            path,
            "",
            f"none of the content columns {', '.join(CONTENT)} "
            f"(columns: {', '.join(schema.names)})",
        )
    for column in present:
        kind = schema.field(column).type
        if column == "text" and not is_string(kind):
            raise refuse(path, column, f"is {kind}; string expected")
        if column in MEDIA and not is_media(kind):
            raise refuse(path, column, f"is {kind}; binary (encoded bytes) or string (a path)")
    if group_column is not None and group_column not in schema.names:
        raise refuse(path, group_column, f"missing (columns: {', '.join(schema.names)})")
    return present


def _column(dataset: pads.Dataset, name: str) -> pa.Array:
    return dataset.to_table(columns=[name]).column(name).combine_chunks()


def _checked_ids(path: Path, dataset: pads.Dataset) -> npt.NDArray[np.str_]:
    ids = _column(dataset, "id")
    if len(ids) == 0:
        raise DataError(f"{path}: the catalog is empty (0 rows)")
    if ids.null_count:
        rows = np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))
        raise refuse(path, "id", f"{ids.null_count} null ids", [f"row {r}" for r in rows])
    bad = np.flatnonzero(~pc.match_substring_regex(ids, ID_PATTERN).to_numpy(zero_copy_only=False))
    if len(bad):
        raise refuse(
            path,
            "id",
            f"{len(bad)} ids break the rule {ID_PATTERN} (letters, digits, _ . : -; 1-128)",
            [f"row {r}: {ids[int(r)].as_py()!r}" for r in bad[:5]],
        )
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        shown = [
            f"{v} x{c}"
            for v, c in zip(
                repeated.field("values").to_pylist(),
                repeated.field("counts").to_pylist(),
                strict=True,
            )
        ]
        raise refuse(path, "id", f"{len(repeated)} ids appear more than once", shown)
    out: npt.NDArray[np.str_] = np.asarray(ids.to_pylist(), dtype=np.str_)
    return out


def _groups(dataset: pads.Dataset, group_column: str | None) -> tuple[IntArray, list[str]]:
    if group_column is None:
        return np.zeros(dataset.count_rows(), dtype=np.int64), []
    values = _column(dataset, group_column).cast(pa.string()).fill_null("")
    names = sorted(set(values.to_pylist()))
    codes = pc.index_in(values, value_set=pa.array(names, pa.string()))
    return codes.to_numpy(zero_copy_only=False).astype(np.int64), names


def _blob(
    path: Path,
    dataset: pads.Dataset,
    column: str,
    ids: npt.NDArray[np.str_],
    cache_dir: Path,
    limits: InputLimits,
    progress: bool,
) -> Blob:
    """The column's encoded values in `cache_dir/<column>.bin`, each header checked; reused
    when the cache was written from the same files."""
    stamp = _stamp(dataset, column, limits)
    data_path, offsets_path, stamp_path = (
        cache_dir / f"{column}.bin",
        cache_dir / f"{column}.offsets.npy",
        cache_dir / f"{column}.json",
    )
    if not (stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp):
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp_path.unlink(missing_ok=True)
        offsets = _copy_media(path, dataset, column, ids, data_path, limits, progress)
        np.save(offsets_path, offsets)
        stamp_path.write_text(json.dumps(stamp))
    offsets = np.load(offsets_path)
    size = int(offsets[-1])
    data: npt.NDArray[np.uint8] = (
        np.memmap(data_path, dtype=np.uint8, mode="r", shape=(size,))
        if size
        else np.zeros(0, dtype=np.uint8)
    )
    return Blob(data, offsets)


def _stamp(dataset: pads.Dataset, column: str, limits: InputLimits) -> dict[str, object]:
    files = []
    for fragment in dataset.get_fragments():
        info = os.stat(fragment.path)
        files.append([fragment.path, info.st_size, info.st_mtime_ns])
    return {"format": CACHE_FORMAT, "column": column, "files": files, "limits": repr(limits)}


def _copy_media(
    path: Path,
    dataset: pads.Dataset,
    column: str,
    ids: npt.NDArray[np.str_],
    out: Path,
    limits: InputLimits,
    progress: bool,
) -> npt.NDArray[np.int64]:
    check = _check_image if column == "image" else _check_wav
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    bad: list[str] = []
    n_bad = row = 0
    bar = tqdm(total=len(ids), desc=f"check {column}", unit="item", disable=not progress)
    with out.open("wb") as f:
        for base, values in _media_values(dataset, column):
            for value in values:
                raw = _read_value(value, base)
                problem = (
                    raw if isinstance(raw, str) else None if raw is None else check(raw, limits)
                )
                if problem is not None:
                    n_bad += 1
                    if len(bad) < 5:
                        bad.append(f"row {row} (id {ids[row]}): {problem}")
                elif isinstance(raw, bytes):
                    f.write(raw)
                offsets[row + 1] = f.tell()
                row += 1
            bar.update(len(values))
    bar.close()
    if n_bad:
        out.unlink(missing_ok=True)
        raise refuse(path, column, f"{n_bad} values cannot be used", bad)
    return offsets


def _media_values(dataset: pads.Dataset, column: str) -> Iterator[tuple[Path, list[object]]]:
    """(the file's folder, values) one batch at a time, in catalog row order.

    Read one row group at a time: a scan over the whole file keeps what it has read alive
    (measured: 2.8 GB of RSS for 2.5 GB of covers), one row group at a time stays flat."""
    for fragment in dataset.get_fragments():
        base = Path(fragment.path).parent
        file = pq.ParquetFile(fragment.path)
        for group in range(file.num_row_groups):
            batches = file.iter_batches(BATCH_ROWS, row_groups=[group], columns=[column])
            for batch in batches:
                yield base, batch.column(0).to_pylist()


def _read_value(value: object, base: Path) -> bytes | str | None:
    """Bytes as they are, or read from a path relative to the file's folder; None for no
    value; a string says why a path could not be read."""
    if value is None or isinstance(value, bytes):
        return value or None
    target = base / str(value)
    try:
        return target.read_bytes() or None
    except OSError as err:
        return f"{target}: {err.strerror or err}"


def _check_image(raw: bytes, limits: InputLimits) -> str | None:
    if len(raw) > limits.max_image_bytes:
        return f"{len(raw)} bytes, more than the limit of {limits.max_image_bytes}"
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            width, height = img.size
    except UnidentifiedImageError:
        return "not a JPEG or PNG image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"cannot be read ({err})"
    if width * height > limits.max_image_pixels:
        return f"{width}x{height} pixels, more than the limit of {limits.max_image_pixels}"
    return None


def _check_wav(raw: bytes, limits: InputLimits) -> str | None:
    if len(raw) > limits.max_audio_bytes:
        return f"{len(raw)} bytes, more than the limit of {limits.max_audio_bytes}"
    try:
        with wave.open(io.BytesIO(raw), "rb") as wav:
            rate, frames, width = wav.getframerate(), wav.getnframes(), wav.getsampwidth()
    except (wave.Error, EOFError) as err:
        return f"not a PCM WAV file ({err})"
    if rate <= 0 or width not in (1, 2, 4):
        return f"WAV header says {rate} Hz, {8 * width}-bit samples"
    if frames / rate > limits.max_audio_s:
        return f"{frames / rate:.2f} s, more than the limit of {limits.max_audio_s:g} s"
    return None
