"""A user's two files: what is accepted, how it is read, and one refusal per documented rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalogs.errors import DataError
from catalogs.events import read_events
from catalogs.files import Files, load_files
from catalogs.items import open_items
from runtime.engine import InputLimits
from runtime.media import png_bytes, wav_bytes

IDS = ["sku-1", "sku-2", "sku-3"]


def _png(colour: float = 0.5, size: int = 8) -> bytes:
    return png_bytes(np.full((3, size, size), colour, dtype=np.float32))


def _items(folder: Path, **columns: list[Any]) -> Path:
    table = {"id": IDS, "text": ["red shoe", "blue jacket", None], **columns}
    path = folder / "items.parquet"
    pq.write_table(pa.table(table), path)
    return path


def _events(folder: Path, **columns: Any) -> Path:
    table = {
        "user": ["u9", "u9", "u1", "u1"],
        "item": ["sku-2", "sku-1", "sku-3", "sku-1"],
        "ts": [20, 10, 5, 7],
        "label": [1, 0, 1, 1],
        **columns,
    }
    path = folder / "events.parquet"
    pq.write_table(pa.table({k: v for k, v in table.items() if v is not None}), path)
    return path


def test_a_catalog_with_paths_bytes_and_missing_media_is_read_on_demand(tmp_path: Path) -> None:
    (tmp_path / "covers").mkdir()
    (tmp_path / "covers" / "1.png").write_bytes(_png(1.0))
    (tmp_path / "covers" / "3.png").write_bytes(_png(0.0))
    clip = wav_bytes(np.full(800, 0.25, dtype=np.float32), 16_000)
    items = _items(tmp_path, image=["covers/1.png", None, "covers/3.png"], audio=[None, clip, None])
    catalog = open_items(items, tmp_path / "media", group_column=None)
    assert catalog.ids.tolist() == IDS
    assert catalog.columns == ("text", "image", "audio")
    content = catalog.content(np.array([2, 0, 1]))
    assert content.texts == [None, "red shoe", "blue jacket"]
    assert content.image_mask.tolist() == [1.0, 1.0, 0.0]
    assert content.image[1].min() == pytest.approx(1.0)  # each path's own file
    assert content.image[0].max() == pytest.approx(0.0)
    assert content.audio_mask.tolist() == [0.0, 0.0, 1.0]
    assert content.audio[2, :800] == pytest.approx(0.25, abs=1e-4)
    assert not content.audio[2, 800:].any()  # padded to the encoder's clip length


def test_a_second_open_reuses_the_media_cache(tmp_path: Path) -> None:
    items = _items(tmp_path, image=[_png(), None, _png()])
    open_items(items, tmp_path / "media")
    written = (tmp_path / "media" / "image.bin").stat().st_mtime_ns
    again = open_items(items, tmp_path / "media")
    assert (tmp_path / "media" / "image.bin").stat().st_mtime_ns == written
    assert again.content(np.array([0])).image_mask.tolist() == [1.0]


def test_events_are_rows_of_the_catalog_sorted_by_user_and_time(tmp_path: Path) -> None:
    events = read_events(_events(tmp_path), np.array(IDS))
    assert events.user.tolist() == [0, 0, 1, 1]  # users numbered by first appearance: u9, u1
    assert events.ts.tolist() == [10, 20, 5, 7]
    assert events.item.tolist() == [0, 1, 2, 0]
    assert events.label.tolist() == [False, True, True, True]


def test_ratings_timestamps_and_integer_users_and_items_are_understood(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["7", "8"], "text": ["a", "b"]}), tmp_path / "items.parquet")
    stamps = pa.array([1_700_000_000_000_000, 1_700_000_001_000_000], pa.timestamp("us"))
    log = {"user": [1, 1], "item": [8, 7], "ts": stamps, "rating": [5.0, 3.0]}
    pq.write_table(pa.table(log), tmp_path / "events.parquet")
    files = Files(tmp_path / "items.parquet", tmp_path / "events.parquet", positive_rating=4.0)
    catalog, events = load_files(files, None)
    assert catalog.ids.tolist() == ["7", "8"]
    assert events.ts.tolist() == [1_700_000_000, 1_700_000_001]
    assert events.item.tolist() == [1, 0]
    assert events.label.tolist() == [True, False]


def test_a_group_column_colours_the_maps(tmp_path: Path) -> None:
    catalog = open_items(_items(tmp_path, kind=["shoe", "coat", "shoe"]), None, group_column="kind")
    assert catalog.group_names == ["coat", "shoe"]
    assert catalog.groups.tolist() == [1, 0, 1]


ITEM_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("no id column", {"drop": "id"}, r"column `id`: missing"),
    (
        "ids of the wrong type",
        {"id": [1.5, 2.5, 3.5]},
        r"column `id`: is double; string ids expected",
    ),
    ("no content column", {"drop": "text"}, r"none of the content columns"),
    ("text of the wrong type", {"text": [1, 2, 3]}, r"column `text`: is int64; string"),
    ("a null id", {"id": ["a", None, "c"]}, r"column `id`: 1 null ids \(e\.g\. row 1\)"),
    (
        "a malformed id",
        {"id": ["a", "b c", "d"]},
        r"column `id`: 1 ids break the rule.*row 1: 'b c'",
    ),
    (
        "a repeated id",
        {"id": ["a", "b", "a"]},
        r"column `id`: 1 ids appear more than once \(e\.g\. a x2\)",
    ),
    (
        "an undecodable image",
        {"image": [b"GIF89a....", None, None]},
        r"column `image`: 1 values.*row 0 \(id sku-1\): not a JPEG or PNG",
    ),
    (
        "a missing image path",
        {"image": ["nope.png", None, None]},
        r"column `image`: 1 values.*nope\.png",
    ),
    (
        "a clip that is not WAV",
        {"audio": [None, b"ID3 mp3 bytes", None]},
        r"column `audio`: 1 values.*row 1 \(id sku-2\): not a PCM WAV",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [r[1:] for r in ITEM_REFUSALS], ids=[r[0] for r in ITEM_REFUSALS]
)
def test_items_refusals_name_the_file_column_and_rows(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    table = {"id": IDS, "text": ["red shoe", "blue jacket", None]}
    change = dict(change)
    drop = change.pop("drop", None)
    table.update(change)
    table.pop(drop, None)
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(DataError, match=rf"items\.parquet: {message}"):
        open_items(path, tmp_path / "media")


def test_an_empty_catalog_and_a_file_that_is_not_parquet_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "items.parquet"
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), empty
    )
    with pytest.raises(DataError, match=r"items\.parquet: the catalog is empty"):
        open_items(empty, None)
    csv = tmp_path / "items.csv"
    csv.write_text("id,text\na,b\n")
    with pytest.raises(DataError, match=r"items\.csv: not readable as Parquet"):
        open_items(csv, None)
    with pytest.raises(DataError, match=r"nothing\.parquet: no such file"):
        open_items(tmp_path / "nothing.parquet", None)


def test_an_image_over_the_pixel_limit_is_refused_before_training(tmp_path: Path) -> None:
    items = _items(tmp_path, image=[_png(size=64), None, None])
    with pytest.raises(DataError, match=r"64x64 pixels, more than the limit of 1000"):
        open_items(items, tmp_path / "media", limits=InputLimits(max_image_pixels=1000))


EVENT_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("a missing column", {"ts": None}, r"column `ts`: missing"),
    ("no label or rating", {"label": None}, r"column `label`: missing, and no `rating`"),
    ("a null", {"user": ["u9", None, "u1", "u1"]}, r"column `user`: 1 nulls \(e\.g\. row 1\)"),
    (
        "unknown items",
        {"item": ["sku-2", "sku-7", "x", "sku-7"]},
        r"column `item`: 3 events name 2 items that are not in the catalog \(e\.g\. sku-7; x\)",
    ),
    (
        "labels other than 0/1",
        {"label": [1, 2, 0, 1]},
        r"column `label`: 1 labels are not 0 or 1 \(e\.g\. row 1: 2\)",
    ),
    ("no positive event", {"label": [0, 0, 0, 0]}, r"column `label`: no positive event among 4"),
    ("times as text", {"ts": ["a", "b", "c", "d"]}, r"column `ts`: is string; epoch seconds"),
]


@pytest.mark.parametrize(
    ("change", "message"), [r[1:] for r in EVENT_REFUSALS], ids=[r[0] for r in EVENT_REFUSALS]
)
def test_events_refusals_name_the_file_column_and_rows(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataError, match=rf"events\.parquet: {message}"):
        read_events(_events(tmp_path, **change), np.array(IDS))


def test_an_empty_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    empty = {c: pa.array([], pa.string()) for c in ("user", "item")}
    pq.write_table(
        pa.table({**empty, "ts": pa.array([], pa.int64()), "label": pa.array([], pa.int8())}), path
    )
    with pytest.raises(DataError, match=r"events\.parquet: the log is empty"):
        read_events(path, np.array(IDS))


def test_ratings_below_the_threshold_are_not_positive(tmp_path: Path) -> None:
    path = _events(tmp_path, label=None, rating=[3.0, 2.0, 3.5, 1.0])
    with pytest.raises(
        DataError, match=r"column `rating`: no positive event among 4 \(rating >= 4\)"
    ):
        read_events(path, np.array(IDS))
    assert read_events(path, np.array(IDS), positive_rating=3.5).label.sum() == 1
