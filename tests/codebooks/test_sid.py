from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from codebooks.sid import assign_suffixes, format_sid


@given(
    codes=arrays(
        np.int32, st.tuples(st.integers(1, 60), st.integers(1, 3)), elements=st.integers(0, 2)
    )
)
def test_suffixes_make_every_semantic_id_unique_in_row_order(codes: np.ndarray) -> None:
    suffix = assign_suffixes(codes)
    ids = {(tuple(row), int(s)) for row, s in zip(codes.tolist(), suffix, strict=True)}
    assert len(ids) == len(codes)
    seen: dict[tuple[int, ...], int] = {}
    for row, s in zip(codes.tolist(), suffix, strict=True):
        expected = seen.get(tuple(row), 0)
        assert s == expected  # 0 for the first item of a tuple, 1 for the next, ...
        seen[tuple(row)] = expected + 1


def test_format_sid() -> None:
    assert format_sid(np.array([3, 0, 255], dtype=np.int32), 2) == "3-0-255-2"
