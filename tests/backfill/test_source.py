"""Catalog exports are checked whole before a run starts; a refusal names file and column."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfill.errors import SourceError
from backfill.source import open_source, read_items


def write(path: Path, **columns: pa.Array) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_a_good_export_is_described(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ok.parquet",
        id=pa.array(["a", "b"]),
        title=pa.array(["ignored", "ignored"]),
        embedding=pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float64(), 2)),
        image=pa.array([None, b"\x89PNG"], pa.binary()),
    )
    source = open_source(str(path))
    assert (source.path, source.columns, source.rows) == (
        str(path.resolve()),
        ("id", "image", "embedding"),
        2,
    )
    [item] = read_items(source.path, ["b"])
    assert (item.id, item.image, item.embedding) == ("b", b"\x89PNG", [0.0, 1.0])


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"name": pa.array(["a"]), "text": pa.array(["x"])}, "no `id` column"),
        ({"id": pa.array([1]), "text": pa.array(["x"])}, "column `id` is int64, string expected"),
        ({"id": pa.array(["a"]), "image": pa.array([1])}, "column `image` is int64, binary"),
        ({"id": pa.array(["a"]), "embedding": pa.array([["x"]])}, "column `embedding` is list"),
        ({"id": pa.array(["a"]), "title": pa.array(["x"])}, "none of the columns"),
        ({"id": pa.array(["a", None]), "text": pa.array(["x", "y"])}, "1 empty \\(null\\)"),
        (
            {"id": pa.array(["a", "b", "a", "c", "b"]), "text": pa.array(["x"] * 5)},
            "2 ids appear more than once \\(e.g. a, b\\)",
        ),
    ],
)
def test_a_bad_export_is_refused_naming_file_and_column(
    tmp_path: Path, columns: dict[str, pa.Array], message: str
) -> None:
    path = write(tmp_path / "bad.parquet", **columns)
    with pytest.raises(SourceError, match=message) as refused:
        open_source(str(path))
    assert str(path.resolve()) in str(refused.value)


def test_a_missing_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(str(tmp_path / "gone.parquet"))


def test_a_folder_is_one_export_whose_files_agree(tmp_path: Path) -> None:
    write(tmp_path / "part-0.parquet", id=pa.array(["a"]), text=pa.array(["x"]))
    write(tmp_path / "part-1.parquet", id=pa.array(["b"]), text=pa.array(["y"]))
    assert open_source(str(tmp_path)).rows == 2
    write(tmp_path / "part-2.parquet", id=pa.array(["a"]), text=pa.array(["z"]))
    with pytest.raises(SourceError, match="1 ids appear more than once"):
        open_source(str(tmp_path))
    write(tmp_path / "part-2.parquet", id=pa.array(["c"]), image=pa.array([b"x"]))
    with pytest.raises(SourceError, match=r"part-2\.parquet: columns"):
        open_source(str(tmp_path))
