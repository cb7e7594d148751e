"""One error type per way a backfill command refuses, and the exit status of each outcome.

`python -m backfill` maps them in one place (`__main__.py`); nothing else calls `sys.exit`.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """The exit status of `python -m backfill` (its --help lists them)."""

    OK = 0
    ROWS_FAILED = 1  # `run` finished, but some rows could not be encoded (see the report)
    REFUSED = 2  # bad arguments or input, a lifecycle step the version's state forbids,
    # coverage not held: nothing was changed by the refused step
    INCOMPLETE = 3  # the store or the Ray cluster failed mid-way; `run` again resumes


class RefusedError(Exception):
    """A command refused before changing anything it was asked to change (exit 2)."""


class SourceError(RefusedError):
    """A catalog export that cannot be backfilled: missing, unreadable, wrong columns, ids
    that repeat. The message names the file and the column."""


class VersionError(RefusedError):
    """The version's state forbids the step (backfill an active or retired version, activate
    one that was never backfilled, ...), or the bundle is not the version's."""


class CoverageError(RefusedError):
    """Activation refused: the new version lacks codes readers would ask for. One line per
    problem, each with counts and up to 10 ids."""

    def __init__(self, version: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"version {version} is not activated; coverage does not hold:\n{lines}")
        self.problems = problems
