"""MovieLens-100k through the training schema, on tiny files in RecBole's atomic format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catalogs.files import load_files
from catalogs.movielens import movielens_files, read_movielens_users, write_movielens

ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "7\tTwelve Monkeys\t1995\tDrama Sci-Fi\n"
)
RATINGS = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t2\t3\t881250950\n"
    "196\t1\t5\t881250949\n"
    "22\t7\t4\t878887116\n"
    "22\t99\t5\t878887117\n"
)


def test_loads_titles_and_ratings(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.item").write_text(ITEMS)
    (tmp_path / "ml-100k.inter").write_text(RATINGS)
    files = write_movielens(tmp_path, tmp_path / "schema")
    assert files == movielens_files(tmp_path / "schema")
    catalog, events = load_files(files, None)
    assert list(catalog.ids) == ["1", "2", "7"]
    assert catalog.texts(np.array([0])) == ["Toy Story (1995). Animation, Children's, Comedy"]
    assert [catalog.group_names[g] for g in catalog.groups] == ["Animation", "Action", "Drama"]
    content = catalog.content(np.array([2, 0]))
    assert str(content.texts[0]).startswith("Twelve Monkeys")
    assert not content.image_mask.any()
    assert not content.audio_mask.any()
    # Item 99 is not in the item file: dropped. Sorted by (user, ts); rating >= 4 positive.
    assert len(events) == 3
    assert events.user.tolist() == [0, 0, 1]
    assert events.item.tolist() == [0, 1, 2]  # user 196: Toy Story first (earlier timestamp)
    assert events.label.tolist() == [True, False, True]


def test_missing_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ml-100k\.item: missing; `make data`"):
        write_movielens(tmp_path, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"items\.parquet: missing; `make data`"):
        movielens_files(tmp_path)


USERS = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "22\t25\tM\twriter\t40206\n"
    "196\t49\tM\twriter\t55105\n"
    "7\t\tF\tother\t91344\n"
)


def test_reads_the_users_side_columns(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.user").write_text(USERS)
    users = read_movielens_users(tmp_path)
    assert users.ids == ["22", "196", "7"]
    assert users.age == [25, 49, None]
    assert users.gender == ["M", "M", "F"]
    assert users.occupation == ["writer", "writer", "other"]


def test_a_repeated_user_is_named(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.user").write_text(USERS + "196\t30\tF\tartist\t00000\n")
    with pytest.raises(ValueError, match="user_id 196 appears twice"):
        read_movielens_users(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ml-100k\.user: missing"):
        read_movielens_users(tmp_path / "elsewhere")
