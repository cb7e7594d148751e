"""What an Arrow column's type must be for each column of the training schema (docs/data.md),
shared by the catalog checks here and the backfill's export checks."""

from __future__ import annotations

import pyarrow as pa


def is_string(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def is_binary(kind: pa.DataType) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def is_media(kind: pa.DataType) -> bool:
    """An image or clip column: encoded bytes, or a path (string) relative to the file."""
    return is_binary(kind) or is_string(kind)
