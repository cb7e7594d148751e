"""The steps that change what readers get: activation (a backfilled version, or a rollback
to a previous one) and retirement.

`activate` checks coverage (coverage.py), switches readers in one atomic step
(`store.promote`, announced) and waits for the service's pods to serve the version. Rolling
back is activating the previous version: it is still written with every upload while it is
the most recent inactive one, so it lacks nothing posted since.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backfill.coverage import items_problems, report_problems, sample_problems
from backfill.errors import CoverageError, VersionError
from backfill.pods import Followed, serves, wait_for_pods
from backfill.report import parse_report
from backfill.settings import BackfillSettings
from runtime import Engine, EngineOptions
from store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activated:
    version: str
    previous: str | None  # the version readers had before (None: none, or this one already)
    followed: Followed | None  # the pods' switch; None when nothing was switched


async def activate(
    store: Store,
    settings: BackfillSettings,
    version: str,
    *,
    bundle: Path | None = None,
    allow_failures: bool = False,
    rng: np.random.Generator | None = None,
) -> Activated:
    """Check coverage and switch readers to `version`; CoverageError (nothing switched) when
    it does not hold, VersionError when the version cannot be activated at all."""
    lifecycle = await store.lifecycle()
    if lifecycle.active == version:
        return Activated(version, None, None)
    info = lifecycle.versions.get(version)
    if info is None:
        raise VersionError(f"version {version} was never backfilled (not in the store's registry)")
    if info.state == "retired":
        raise VersionError(f"version {version} is retired: its codes are gone")
    path = bundle or (Path(info.bundle) if info.bundle else None)
    if path is None:
        raise VersionError(f"the store knows no bundle folder of {version}; pass --bundle")
    engine = await asyncio.to_thread(Engine.load, path, EngineOptions(execution_provider="cpu"))
    if engine.version != version:
        raise VersionError(f"bundle {path} is version {engine.version}, not {version}")
    report = parse_report(await store.report(version))
    problems = report_problems(info.state, report, allow_failures)
    problems += await items_problems(
        store, engine, version, lifecycle.active, report, allow_failures
    )
    sources = report.sources if report is not None else []
    problems += await sample_problems(
        store, engine, version, sources, settings.sample, rng or np.random.default_rng()
    )
    if problems:
        raise CoverageError(version, problems)
    previous = await store.promote(version, str(path))
    log.info("version %s active (was %s); waiting for the service's pods", version, previous)
    followed = await wait_for_pods(store, serves(version), settings.wait_pods_s)
    return Activated(version, previous, followed)


async def retire(store: Store, settings: BackfillSettings, version: str) -> int:
    """Retire a version and delete its keys at most `max_keys_per_s`; answers how many. The
    store refuses the active version and a staged one (LifecycleError).

    The store marks it retired before it deletes, but a pod may still have been writing an
    upload to it: once every pod has dropped it and `retire_grace_s` (a request's deadline)
    has passed, a second sweep deletes what such a write left."""
    deleted = await store.retire(
        version, batch=settings.retire_batch, max_keys_per_s=settings.max_keys_per_s
    )
    await wait_for_pods(store, lambda pod: version not in pod.written, settings.wait_pods_s)
    await asyncio.sleep(settings.retire_grace_s)
    return deleted + await store.retire(
        version, batch=settings.retire_batch, max_keys_per_s=settings.max_keys_per_s
    )
