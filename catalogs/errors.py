"""The one error a training file is refused with."""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 5  # offending rows named in a refusal


class DataError(ValueError):
    """A training file that cannot be used as it is: the message names the file, the column
    and a few offending rows, so the fix can start without opening the file."""


def refuse(path: object, column: str, problem: str, rows: Sequence[str] = ()) -> DataError:
    """`<path>: column `<column>`: <problem> (e.g. <up to SHOWN rows>)`."""
    shown = f" (e.g. {'; '.join(rows[:SHOWN])})" if rows else ""
    where = f"column `{column}`: " if column else ""
    return DataError(f"{path}: {where}{problem}{shown}")
