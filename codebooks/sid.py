"""Semantic IDs: the L RQ codes plus a disambiguation suffix that makes each one unique.

The RQ codes are what the ranking model learns from and stay as they are; the suffix only
tells apart items whose L-tuples collide. In a build it is assigned deterministically in
catalog row order: 0 for the first item of a tuple, 1 for the next, and so on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from codebooks.metrics import tuple_keys
from codebooks.rq import Int32Array

# An item id: what the API accepts, training files and the backfill hold, and store keys embed
# as it is. `ID_PATTERN` is for the Rust regex engine (pydantic's `pattern=`, FastAPI's
# `Path(pattern=)`) and RE2 (pyarrow's `match_substring_regex`), where `\z` is the end of the
# text; `ID_RE` is the same rule for Python's `re`, which has no `\z` before 3.14 and whose `$`
# also matches before a final newline ("abc\n"): `\Z` there.
ID_CHARS = r"[A-Za-z0-9_.:-]{1,128}"
ID_PATTERN = rf"^{ID_CHARS}\z"
ID_RE = re.compile(rf"{ID_CHARS}\Z")


def assign_suffixes(codes: Int32Array) -> Int32Array:
    """(N, L) codes -> (N,) int32 suffixes; (codes[i], suffix[i]) is unique over i."""
    keys = tuple_keys(codes)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    suffix = np.empty(len(keys), dtype=np.int32)
    suffix[order] = np.arange(len(keys)) - group_start
    return suffix


def codes_key(codes: Iterable[int] | Int32Array) -> str:
    """RQ codes (a full tuple or a prefix) as text, in decimal without leading zeros joined
    by '-' (`12-0-255`): how the API, the exports and the store's keys write them."""
    return "-".join(str(int(c)) for c in codes)


def format_sid(codes: Iterable[int] | Int32Array, suffix: int) -> str:
    """The text form used in APIs, exports and the store: the L codes and the suffix joined
    by '-'."""
    return f"{codes_key(codes)}-{int(suffix)}"
