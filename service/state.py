"""What the lifespan owns and hands to routes: typed, one object per app."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from runtime.engine import Engine
from service.batcher import Batcher
from service.errors import ReloadFailedError, StoreUnavailableError
from service.metrics import Metrics
from service.settings import Settings
from store import Catalog, Store, StoreError

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    store: Store
    batcher: Batcher
    engine: Engine  # swapped by reload; a request reads it once and keeps that engine
    decode_pool: ThreadPoolExecutor
    encode_pool: ThreadPoolExecutor
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def catalog_of(engine: Engine) -> Catalog:
    b = engine.bundle
    return Catalog(item_ids=b.item_ids, rq_codes=b.rq_codes, sid_suffix=b.sid_suffix)


async def prepare_engine(settings: Settings, metrics: Metrics, store: Store, bundle: str) -> Engine:
    """Load, verify and warm up a bundle and activate its version in the store.

    Runs in threads of its own, not the encode pool, so that during a reload the batches of
    the serving engine keep flowing."""
    path = await asyncio.to_thread(settings.bundle_path, bundle)
    engine = await asyncio.to_thread(
        Engine.load, path, settings.engine_options(), settings.input_limits()
    )
    if settings.warmup:
        await asyncio.to_thread(engine.warm_up)
    try:
        await store.activate(engine.version, catalog_of(engine), seed_lookups=settings.seed_catalog)
    except StoreError:
        metrics.store_errors.labels(store.kind, "activate").inc()
        raise
    return engine


def publish(metrics: Metrics, engine: Engine) -> None:
    metrics.bundle.info({"version": engine.version, "path": str(engine.bundle.path)})
    metrics.encoder.info({"provider": engine.provider})


async def reload(state: AppState, bundle: str) -> tuple[str, str]:
    """Switch to another bundle atomically: requests that read the old engine finish on it,
    requests that start after the switch get the new one. Returns (previous, new) versions."""
    async with state.reload_lock:
        previous = state.engine.version
        try:
            engine = await prepare_engine(state.settings, state.metrics, state.store, bundle)
        except StoreError as err:
            state.metrics.reloads.labels("failed").inc()
            raise StoreUnavailableError(f"reload: the store failed: {err}") from err
        except Exception as err:
            state.metrics.reloads.labels("failed").inc()
            log.exception("reload of %s failed; %s keeps serving", bundle, previous)
            raise ReloadFailedError(f"reload of {bundle!r} failed: {err}") from err
        state.engine = engine
        publish(state.metrics, engine)
        state.metrics.reloads.labels("ok").inc()
        log.info("reloaded: %s -> %s", previous, engine.version)
        return previous, engine.version
