"""The backfill report: what one `run` of a version did, kept in the store beside its codes.

`run` saves it when it starts (finished false), every half minute while it writes, and when
it ends; `activate` reads it (a staged version needs a finished run without failures) and
`status` shows it. Its JSON is this model's; it is the schema `store.set_report` keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

MAX_FAILURES = 100  # failed rows listed in a report; `failed` counts them all


class RowFailure(BaseModel):
    """One row that could not be encoded; nothing of it was written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    source: str = Field(description="the catalog export it came from")
    field: str = Field(description="the column (or `item`, `id`) that was refused")
    message: str


class Report(BaseModel):
    """One run of the backfill of `version`. items = written + skipped + failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    bundle: str = Field(description="the bundle folder, absolute")
    sources: list[str] = Field(description="catalog exports, absolute paths or URIs")
    items: int = Field(0, description="rows seen: the bundle's catalog and every export")
    written: int = Field(0, description="items written by this run")
    skipped: int = Field(
        0,
        description="items left alone: codes under the version already (an earlier run, an "
        "upload), or an export row of a bundle catalog item (the bundle gives its codes)",
    )
    failed: int = Field(0, description="rows refused (bad content); see `failures`")
    failures: list[RowFailure] = Field(
        default_factory=list, description=f"the first {MAX_FAILURES} failed rows"
    )
    started_at: datetime
    finished_at: datetime | None = Field(None, description="when the run ended, or last saved")
    finished: bool = Field(False, description="true only when every source was gone through")
    error: str | None = Field(None, description="why the run stopped, when it did not finish")
    seconds: float = 0.0
    items_per_s: float = 0.0

    def summary(self) -> str:
        """One line for people: counts, time and throughput."""
        state = "finished" if self.finished else "NOT finished"
        line = (
            f"backfill {self.version} {state}: {self.items} items, {self.written} written, "
            f"{self.skipped} skipped (already there), {self.failed} failed, "
            f"{self.seconds:.1f} s, {self.items_per_s:.0f} items/s"
        )
        return line if self.error is None else f"{line}; stopped by: {self.error}"


def now() -> datetime:
    return datetime.now(UTC)


def parse_report(text: str | None) -> Report | None:
    return Report.model_validate_json(text) if text is not None else None
