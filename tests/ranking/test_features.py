"""Side features: buckets, multi-hots, and MovieLens's fields lined up with the log's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catalogs.files import load_files
from catalogs.movielens import write_movielens
from ranking.features import (
    PAD,
    UNKNOWN,
    Field,
    SideFeatures,
    bucketed,
    categorical,
    movielens_features,
    multi_hot,
)
from tests.catalogs.test_movielens import ITEMS, RATINGS, USERS


def test_buckets_by_fixed_edges() -> None:
    f = bucketed("year", [1930, 1950, 1995, 1999, None], (1950, 1990, 1998))
    assert f.labels == ("<1950", "1950-1990", "1990-1998", ">=1998", UNKNOWN)
    # an edge belongs to the bucket it opens; None is its own bucket
    assert [f.labels[i] for i in f.values[:, 0]] == [
        "<1950",
        "1950-1990",
        "1990-1998",
        ">=1998",
        UNKNOWN,
    ]
    with pytest.raises(ValueError, match="'year': bucket edges must be sorted"):
        bucketed("year", [1990], (1990, 1950))


def test_multi_hot_pads_and_dedupes() -> None:
    f = multi_hot("genres", [["Drama", "Comedy"], [], ["Drama", "Drama"]])
    assert f.labels == ("Comedy", "Drama", UNKNOWN)
    assert f.values.tolist() == [[1, 0], [2, PAD], [1, PAD]]
    g = categorical("gender", ["M", None, "F"])
    assert [g.labels[i] for i in g.values[:, 0]] == ["M", UNKNOWN, "F"]


def test_check_names_the_field() -> None:
    bad = SideFeatures((Field("genres", np.zeros((3, 1), dtype=np.int64), ("a",)),), ())
    with pytest.raises(ValueError, match=r"side feature 'genres': values \(3, 1\), expected \(4"):
        bad.check(n_items=4, n_users=2)
    high = SideFeatures((Field("genres", np.full((4, 1), 3, dtype=np.int64), ("a",)),), ())
    with pytest.raises(ValueError, match="'genres': ids outside"):
        high.check(n_items=4, n_users=2)


def _movielens(tmp_path: Path, users: str = USERS) -> Path:
    (tmp_path / "ml-100k.item").write_text(ITEMS)
    (tmp_path / "ml-100k.inter").write_text(RATINGS)
    (tmp_path / "ml-100k.user").write_text(users)
    return tmp_path  # `make data` writes the Parquet files beside RecBole's


def test_movielens_fields_follow_the_catalog_and_the_log(tmp_path: Path) -> None:
    files = write_movielens(_movielens(tmp_path), tmp_path)
    catalog, events = load_files(files, None)
    side = movielens_features(files, catalog.ids)
    side.check(len(catalog), events.n_users)
    genres, year = side.item
    assert [[genres.labels[i] for i in row if i != PAD] for row in genres.values] == [
        ["Animation", "Children's", "Comedy"],
        ["Action", "Adventure", "Thriller"],
        ["Drama", "Sci-Fi"],
    ]
    assert [year.labels[i] for i in year.values[:, 0]] == ["1995-1996"] * 3
    age, gender, occupation = side.user
    # the log numbers users by first appearance: 196 is user 0, 22 user 1 (the user file's order
    # is 22, 196, 7); 196 is 49 and 22 is 25
    assert [age.labels[i] for i in age.values[:, 0]] == ["45-50", "25-35"]
    assert [gender.labels[i] for i in gender.values[:, 0]] == ["M", "M"]
    assert [occupation.labels[i] for i in occupation.values[:, 0]] == ["writer", "writer"]


def test_a_log_user_missing_from_the_user_file_is_named(tmp_path: Path) -> None:
    users = "\n".join(line for line in USERS.split("\n") if not line.startswith("196"))
    files = write_movielens(_movielens(tmp_path, users), tmp_path)
    catalog, _ = load_files(files, None)
    with pytest.raises(ValueError, match="user 196 of the log missing"):
        movielens_features(files, catalog.ids)
