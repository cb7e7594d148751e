"""Whether a version may become active: nothing a reader asks for may be missing from it.

Each check answers its problems as lines for people (counts and up to 10 ids); `activate`
refuses when there is any. The checks:
- the report: a staged version's backfill ran to the end, without failed rows (unless
  allowed); a version that was active before (a rollback) needs no report;
- the backfill's items: every item of the bundle's catalog and of the exports its report
  names has a value under the version (failed rows excused when failures are allowed);
- the active version's items: whatever has codes under the active version has codes under
  this one too, so nothing posted while the backfill ran is lost by the switch;
- a random sample of stored values equals the codes computed again (catalog rows from the
  bundle, with their suffixes; export rows encoded again).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from backfill.errors import SourceError
from backfill.report import Report
from backfill.source import count_rows, read_ids, read_items
from runtime import DecodeError, Engine, Prepared
from store import Store, StoredCodes
from store.base import VersionState

SHOWN = 10  # ids named per problem
CHUNK = 1000  # ids per store read

T = TypeVar("T")


@dataclass(frozen=True)
class Missing:
    """Ids without a value under a version, out of `checked`."""

    checked: int
    count: int
    first: list[str]  # up to SHOWN

    def named(self) -> str:
        more = ", ..." if self.count > len(self.first) else ""
        return ", ".join(self.first) + more


def report_problems(state: VersionState, report: Report | None, allow_failures: bool) -> list[str]:
    """A staged version needs its finished backfill report, without failures unless allowed.
    A version that was active before is trusted as it was then."""
    if state != "staged":
        return []
    if report is None:
        return ["it has no backfill report: `python -m backfill run --bundle ...` it first"]
    problems = []
    if not report.finished:
        problems.append(
            f"its backfill did not finish ({report.items} items gone through, started "
            f"{report.started_at:%Y-%m-%d %H:%M:%S} UTC); run it again: it resumes"
        )
    if report.failed and not allow_failures:
        shown = ", ".join(f"{f.id} ({f.field})" for f in report.failures[:SHOWN])
        problems.append(
            f"{report.failed} rows failed in its backfill: {shown}; fix them and run again, "
            "or pass --allow-failures"
        )
    return problems


async def missing_under(store: Store, version: str, ids: AsyncIterator[list[str]]) -> Missing:
    """Which of `ids` (streamed in chunks) have no value under `version`."""
    checked = count = 0
    first: list[str] = []
    async for chunk in ids:
        for start in range(0, len(chunk), CHUNK):
            part = chunk[start : start + CHUNK]
            values = await store.get_many(version, part)
            absent = [i for i, v in zip(part, values, strict=True) if v is None]
            checked += len(part)
            count += len(absent)
            first += absent[: SHOWN - len(first)]
    return Missing(checked, count, first)


async def items_problems(
    store: Store,
    engine: Engine,
    version: str,
    active: str | None,
    report: Report | None,
    allow_failures: bool,
) -> list[str]:
    """The backfill's items and the active version's items, each with a value under `version`."""
    problems = []
    ids = engine.bundle.item_ids
    chunks = (ids[i : i + CHUNK].tolist() for i in range(0, len(ids), CHUNK))
    catalog = await missing_under(store, version, _chunks(chunks))
    if catalog.count:
        problems.append(
            f"{catalog.count} of {catalog.checked} items of the bundle's catalog have no codes "
            f"under {version}: {catalog.named()}"
        )
    if report is not None:
        problems += await _sources_problems(store, version, report, allow_failures)
    if active is not None and active != version:
        lost = await missing_under(store, version, store.ids(active, CHUNK))
        if lost.count:
            problems.append(
                f"{lost.count} of {lost.checked} items with codes under the active version "
                f"{active} have none under {version} (written to the active version only, "
                f"e.g. by a pod that did not follow); post them again: {lost.named()}"
            )
    return problems


async def _sources_problems(
    store: Store, version: str, report: Report, allow_failures: bool
) -> list[str]:
    """Every row of the report's exports has a value; with failures allowed, as many rows
    as failed may lack one."""
    unreadable, absent = [], []
    count = 0
    for source in report.sources:
        try:
            missing = await missing_under(store, version, _chunks(read_ids(source)))
        except SourceError as err:
            unreadable.append(f"the backfill's export cannot be read back: {err}")
            continue
        count += missing.count
        if missing.count:
            absent.append(
                f"{missing.count} of {missing.checked} items of {source} have no codes under "
                f"{version}: {missing.named()}"
            )
    excused = allow_failures and count <= report.failed
    return unreadable + ([] if excused else absent)


async def sample_problems(
    store: Store,
    engine: Engine,
    version: str,
    sources: Sequence[str],
    n: int,
    rng: np.random.Generator,
) -> list[str]:
    """Compute `n` randomly chosen items' codes again and compare them with the stored ones:
    catalog rows from the bundle (VQ, RQ and the build suffix), export rows encoded again
    (VQ and RQ; the suffix is the store's to give)."""
    catalog_n = len(engine.bundle.item_ids)
    sizes = {s: _rows_or_none(s) for s in sources}
    sources = [s for s, size in sizes.items() if size is not None]  # others: items_problems
    total = catalog_n + sum(size or 0 for size in sizes.values())
    if n == 0 or total == 0:
        return []
    rows = rng.choice(catalog_n, size=min(catalog_n, round(n * catalog_n / total)), replace=False)
    differ, checked = await _catalog_differences(store, engine, version, sorted(rows.tolist()))
    picks = _reservoir(
        (
            (s, i)
            for s in sources
            for c in read_ids(s)
            for i in c
            if engine.catalog_entry(i) is None
        ),
        n - len(rows),
        rng,
    )
    for source in sources:
        ids = [i for s, i in picks if s == source]
        if ids:
            more, seen = await _source_differences(store, engine, version, source, ids)
            differ += more
            checked += seen
    if not differ:
        return []
    return [
        f"{len(differ)} of {checked} sampled items have stored codes that differ from the "
        f"codes computed again: {', '.join(differ[:SHOWN])}"
    ]


async def _catalog_differences(
    store: Store, engine: Engine, version: str, rows: list[int]
) -> tuple[list[str], int]:
    """The catalog rows whose stored value is not the bundle's, and how many had one."""
    ids = [str(engine.bundle.item_ids[r]) for r in rows]
    stored = await store.get_many(version, ids)
    differ = []
    for row, value in zip(rows, stored, strict=True):
        if value is None:
            continue  # counted by items_problems
        encoded, suffixes = engine.catalog_rows(row, row + 1)
        expected = StoredCodes(
            value.item_id,
            tuple(encoded.vq[0].tolist()),
            tuple(encoded.rq[0].tolist()),
            int(suffixes[0]),
        )
        if (found := _difference(value, expected)) is not None:
            differ.append(found)
    return differ, sum(value is not None for value in stored)


async def _source_differences(
    store: Store, engine: Engine, version: str, source: str, ids: list[str]
) -> tuple[list[str], int]:
    """The export rows whose stored value is not what they encode to, and how many had one."""
    items = read_items(source, ids)
    stored = await store.get_many(version, [item.id for item in items])
    differ = []
    prepared: list[Prepared] = []
    kept: list[StoredCodes] = []
    for item, value in zip(items, stored, strict=True):
        if value is None:
            continue  # a failed row, or counted by items_problems
        try:
            prepared.append(engine.prepare(item))
        except DecodeError as err:
            differ.append(f"{item.id} (stored, but its {err.field} does not decode now)")
            continue
        kept.append(value)
    if prepared:
        encoded = engine.encode(prepared)
        for i, value in enumerate(kept):
            vq, rq = tuple(encoded.vq[i].tolist()), tuple(encoded.rq[i].tolist())
            expected = StoredCodes(value.item_id, vq, rq, value.suffix)
            if (found := _difference(value, expected)) is not None:
                differ.append(found)
    return differ, sum(value is not None for value in stored)


def _difference(stored: StoredCodes, expected: StoredCodes) -> str | None:
    """How `stored` differs from `expected` (None: it does not). Codes do not depend on the
    batch they were computed in (the quantizer ranks VQ neighbours in float64), so every
    field must be equal."""
    fields = [f for f in ("vq", "rq", "suffix") if getattr(stored, f) != getattr(expected, f)]
    if not fields:
        return None
    shown = ", ".join(
        f"{f} {getattr(stored, f)} stored, {getattr(expected, f)} expected" for f in fields
    )
    return f"{stored.item_id} ({shown})"


def _rows_or_none(source: str) -> int | None:
    try:
        return count_rows(source)
    except SourceError:
        return None


def _reservoir(items: Iterable[T], k: int, rng: np.random.Generator) -> list[T]:
    """`k` of `items` chosen uniformly at random in one pass (all of them if fewer)."""
    chosen: list[T] = []
    for seen, item in enumerate(items):
        if seen < k:
            chosen.append(item)
        elif (j := int(rng.integers(0, seen + 1))) < k:
            chosen[j] = item
    return chosen


async def _chunks(chunks: Iterator[list[str]]) -> AsyncIterator[list[str]]:
    for chunk in chunks:
        yield chunk
