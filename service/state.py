"""What the lifespan owns and hands to routes: typed, one object per app."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runtime import Engine
from service.batcher import Batcher
from service.bodies import BodyParser
from service.errors import ReloadFailedError, StoreUnavailableError
from service.metrics import Metrics
from service.prepare import DecodePools
from service.settings import Settings
from store import CatalogSeed, Store, StoreError

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    store: Store
    batcher: Batcher
    engine: Engine  # swapped on a switch; a request reads it once and keeps that engine
    decoders: DecodePools  # requests with an image or audio, and the rest
    encode_pool: ThreadPoolExecutor
    parser: BodyParser  # request bodies (service.deps.JsonBody): large ones in a worker process
    # Versions every upload is also written to (staged ones, the previous active one), with
    # their engines; replaced whole by the follower, so a request reads one snapshot.
    written: dict[str, Engine] = field(default_factory=dict)
    switch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def load_engine(settings: Settings, path: Path) -> Engine:
    """Load, verify and warm up a bundle, in a thread of its own (not the encode pool, so the
    serving engine's batches keep flowing meanwhile)."""
    engine = await asyncio.to_thread(
        Engine.load, path, settings.engine_options(), settings.input_limits()
    )
    if settings.warmup:
        await asyncio.to_thread(engine.warm_up)
    return engine


async def prepare_engine(settings: Settings, metrics: Metrics, store: Store, bundle: str) -> Engine:
    """Load a bundle and activate its version in the store (seeding it once)."""
    engine = await load_engine(settings, settings.bundle_path(bundle))
    try:
        await store.activate(
            engine.version,
            CatalogSeed.of(engine.bundle),
            seed_lookups=settings.seed_catalog,
            bundle=str(engine.bundle.path),
        )
    except StoreError:
        metrics.store_errors.labels(store.kind, "activate").inc()
        raise
    return engine


async def first_engine(settings: Settings, metrics: Metrics, store: Store) -> Engine:
    """The engine a process starts with: the store's active version when it has one and the
    process follows the store, else the `bundle` setting, activated in the store."""
    if settings.follow:
        try:
            lifecycle = await store.lifecycle()
        except StoreError:
            metrics.store_errors.labels(store.kind, "activate").inc()
            raise
        if lifecycle.active is not None:
            info = lifecycle.versions.get(lifecycle.active)
            path = settings.version_path(lifecycle.active, info.bundle if info else "")
            log.info("the store's active version is %s: serving %s", lifecycle.active, path)
            engine = await load_engine(settings, path)
            store.attach(engine.version, CatalogSeed.of(engine.bundle))
            return engine
    return await prepare_engine(settings, metrics, store, settings.bundle)


def publish(metrics: Metrics, engine: Engine, written: dict[str, Engine]) -> None:
    metrics.bundle.info({"version": engine.version, "path": str(engine.bundle.path)})
    metrics.encoder.info({"provider": engine.provider})
    metrics.written.clear()
    for version in written:
        metrics.written.labels(version).set(1)


async def reload(state: AppState, bundle: str) -> tuple[str, str]:
    """Switch to another bundle atomically: requests that read the old engine finish on it,
    requests that start after the switch get the new one. Returns (previous, new) versions."""
    async with state.switch_lock:
        previous = state.engine.version
        try:
            engine = await prepare_engine(state.settings, state.metrics, state.store, bundle)
        except StoreError as err:
            state.metrics.reloads.labels("failed").inc()
            raise StoreUnavailableError(f"reload: the store failed: {err}") from err
        except Exception as err:
            # the detail (server paths, which files exist) goes to the log, not to the client
            state.metrics.reloads.labels("failed").inc()
            log.warning("reload of %r failed (%r); %s keeps serving", bundle, err, previous)
            raise ReloadFailedError(
                f"reload of {bundle!r} failed: the bundle could not be loaded; "
                f"{previous} keeps serving"
            ) from err
        state.engine = engine
        publish(state.metrics, engine, state.written)
        state.metrics.reloads.labels("ok").inc()
        log.info("reloaded: %s -> %s", previous, engine.version)
        return previous, engine.version
