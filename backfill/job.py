"""The backfill run: every catalog item's codes written under a bundle version, on Ray Data.

    plan: check every export, load the bundle     nothing started yet: bad input costs nothing
    stage the version in the store                 seeds its suffix counters; announced
    wait for the service's pods                    from then on uploads are written to it too
    one Ray Data pipeline: the bundle's catalog    work rows (rows.py) through one pool of
      and every export, as work rows               encoder actors (actor.py): stored items
                                                   skipped, bad rows named
    the driver writes the answers                  one writer, batches of `write_batch`, while
                                                   the actors encode the next ones
    report                                         saved at the start, every 30 s, at the end

The version is left staged: `activate` switches readers after checking coverage. A run that
stops (killed, store down) is run again with the same arguments: what it wrote is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import ray
import ray.data
from tqdm import tqdm

from backfill.actor import Encoder
from backfill.cluster import Pool, actor_pool
from backfill.errors import VersionError
from backfill.pods import wait_for_pods, writes_to
from backfill.report import MAX_FAILURES, Report, RowFailure, now
from backfill.rows import Columns, Outcome, catalog_work, export_work, read_answer
from backfill.settings import BackfillSettings
from backfill.source import Source, check_disjoint, open_source
from codebooks import Bundle, load_bundle
from store import CatalogSeed, Lifecycle, Store

log = logging.getLogger(__name__)

# Blocks (what an actor takes at a time) of at most this many bytes: a big export file is
# spread over every actor, and the driver writes, and a killed run loses, a block at a time.
BLOCK_BYTES = 2 << 20
SAVE_EVERY_S = 30.0  # a running backfill's report is saved this often (`status` shows it)
CATALOG = "bundle catalog"  # the source name of the bundle's own rows in failures and logs


@dataclass(frozen=True)
class Plan:
    """What a run will go through, checked before anything starts."""

    bundle: Bundle
    sources: list[Source]

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def items(self) -> int:
        return self.bundle.manifest.n_items + sum(s.rows for s in self.sources)


def plan(bundle: Path, catalogs: list[str]) -> Plan:
    """Check every catalog export (SourceError names the file and column), then load and
    verify the bundle (BundleError names the file)."""
    sources = [open_source(c) for c in catalogs]
    check_disjoint(sources)
    return Plan(load_bundle(bundle.resolve()), sources)


@dataclass
class Tally:
    """A run's counts so far; only the driver's loop adds to it."""

    items: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[RowFailure] = field(default_factory=list)

    def add(self, outcome: Outcome, sources: list[str]) -> None:
        """Count a batch; `sources` names the work rows' `source` numbers."""
        self.items += outcome.rows
        self.written += len(outcome.codes)
        self.skipped += outcome.stored
        self.failed += len(outcome.failed)
        for f in outcome.failed:
            source = sources[f.source]
            log.warning("row %s of %s not encoded: %s: %s", f.id, source, f.field, f.message)
            if len(self.failures) < MAX_FAILURES:
                failure = RowFailure(id=f.id, source=source, field=f.field, message=f.message)
                self.failures.append(failure)

    def report(self, base: Report, *, finished: bool, error: str | None = None) -> Report:
        end = now()
        seconds = (end - base.started_at).total_seconds()
        return base.model_copy(
            update={
                "items": self.items,
                "written": self.written,
                "skipped": self.skipped,
                "failed": self.failed,
                "failures": list(self.failures),
                "finished_at": end,
                "finished": finished,
                "error": error,
                "seconds": seconds,
                "items_per_s": self.items / seconds if seconds > 0 else 0.0,
            }
        )


class Throttle:
    """At most `per_s` items written per second on average (0: no limit)."""

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.start = time.monotonic()
        self.done = 0

    async def wait(self, n: int) -> None:
        if self.per_s <= 0:
            return
        self.done += n
        ahead = self.done / self.per_s - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


def check_stageable(lifecycle: Lifecycle, version: str) -> None:
    """Refuse to backfill the active version (its readers would see it change) or a retired
    one (retired is final: its keys were deleted while pods may still have written to it)."""
    if lifecycle.active == version:
        raise VersionError(
            f"version {version} is active: readers use it; a backfill writes a version that is "
            "not active yet (build a new bundle)"
        )
    info = lifecycle.versions.get(version)
    if info is not None and info.state == "retired":
        raise VersionError(f"version {version} is retired; build a new bundle to backfill")


async def run_backfill(store: Store, settings: BackfillSettings, work: Plan) -> Report:
    """Stage the version, wait for the pods, write every item's codes; answer the report
    (saved in the store too). Needs Ray initialised (cluster.ray_session)."""
    version = work.version
    check_stageable(await store.lifecycle(), version)
    bundle = str(work.bundle.path)
    await store.stage(version, bundle, CatalogSeed.of(work.bundle))
    base = Report(
        version=version, bundle=bundle, sources=[s.path for s in work.sources], started_at=now()
    )
    await store.set_report(version, base.model_dump_json())
    log.info("version %s staged; %d items to go through", version, work.items)
    waited = await wait_for_pods(store, writes_to(version), settings.wait_pods_s)
    if waited.lagging:
        log.warning(
            "after %.0f s, %d of %d service pods do not write uploads to %s yet (%s): items "
            "they take meanwhile may be missing from it; `activate` checks",
            waited.seconds,
            len(waited.lagging),
            waited.pods,
            version,
            ", ".join(waited.lagging[:10]),
        )
    tally = Tally()
    try:
        await _write_all(store, settings, work, tally, base)
    except BaseException as err:
        stopped = tally.report(base, finished=False, error=f"{type(err).__name__}: {err}")
        await _save_stopped(store, stopped)
        raise
    report = tally.report(base, finished=True)
    await store.set_report(version, report.model_dump_json())
    return report


async def _write_all(
    store: Store, settings: BackfillSettings, work: Plan, tally: Tally, base: Report
) -> None:
    pool = actor_pool(settings)
    log.info("actors: %d x (%s CPU, %s GPU)", pool.actors, pool.cpus, pool.gpus)
    names = [CATALOG, *(s.path for s in work.sources)]  # by work row `source`
    batches = iter(
        _pipeline(settings, work, pool).iter_batches(
            batch_size=settings.write_batch, batch_format="numpy", prefetch_batches=2
        )
    )
    throttle = Throttle(settings.max_writes_per_s)
    saved = time.monotonic()
    with tqdm(total=work.items, unit="item", desc=f"backfill {work.version}") as bar:
        # Fetch the next batch while this one is written: the actors never wait on the store.
        pending = asyncio.ensure_future(asyncio.to_thread(_next, batches))
        while (batch := await pending) is not None:
            pending = asyncio.ensure_future(asyncio.to_thread(_next, batches))
            outcome = await _unwritten(store, work.version, read_answer(batch))
            if outcome.codes:
                await throttle.wait(len(outcome.codes))
                await store.write(work.version, outcome.codes)
            tally.add(outcome, names)
            bar.update(outcome.rows)
            bar.set_postfix(written=tally.written, skipped=tally.skipped, failed=tally.failed)
            if time.monotonic() - saved > SAVE_EVERY_S:
                report = tally.report(base, finished=False)
                await store.set_report(work.version, report.model_dump_json())
                saved = time.monotonic()


async def _unwritten(store: Store, version: str, outcome: Outcome) -> Outcome:
    """Leave out items the service wrote since an actor found them missing: an upload is
    newer than any export, and its suffix is given. (Only a write that happens between this
    read and our write can still be overwritten.)"""
    if not outcome.codes:
        return outcome
    present = await store.get_many(version, [c.item_id for c in outcome.codes])
    fresh = [c for c, value in zip(outcome.codes, present, strict=True) if value is None]
    late = len(outcome.codes) - len(fresh)
    return replace(outcome, codes=fresh, stored=outcome.stored + late)


async def _save_stopped(store: Store, report: Report) -> None:
    """Keep what a stopped run did; the store may be what stopped it, so only log then."""
    try:
        await store.set_report(report.version, report.model_dump_json())
    except Exception:
        log.exception("the report of the stopped run could not be saved")


def _next(batches: Iterator[Columns]) -> Columns | None:
    return next(batches, None)


def _pipeline(settings: BackfillSettings, work: Plan, pool: Pool) -> ray.data.Dataset:
    """Work rows of the bundle's catalog, then of every export, through one actor pool.

    The catalog's rows 0..N-1 come a few batches per block, so the rows of a batch stay
    contiguous and an actor reads their vectors back in one range. Exports are cut into
    blocks of BLOCK_BYTES (Ray Data would read a file as one block)."""
    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES
    n = work.bundle.manifest.n_items
    blocks = max(1, math.ceil(n / (4 * settings.batch_size)))
    rows = ray.data.range(n, override_num_blocks=blocks).map_batches(
        catalog_work, batch_format="numpy"
    )
    exports = [
        ray.data.read_parquet(s.path, include_paths=bool(s.paths))
        .select_columns([*s.columns, "path"] if s.paths else list(s.columns))
        .map_batches(partial(export_work, source=i, paths=s.paths), batch_format="pyarrow")
        for i, s in enumerate(work.sources, start=1)
    ]
    if exports:
        rows = rows.union(*exports)
    return rows.map_batches(
        Encoder,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool.actors),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus if pool.gpus > 0 else None,
        batch_size=settings.batch_size,
        fn_constructor_kwargs={
            "bundle": str(work.bundle.path),
            "version": work.version,
            "store": settings,
            "options": settings.engine_options(pool.gpus),
            "limits": settings.input_limits(),
        },
    )
