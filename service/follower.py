"""The follower: keeps this process on the store's version lifecycle, with no request lost.

One task per process loops: read the lifecycle; load (and warm up) the bundle of every version
it needs that it lacks: the active one, and those every upload is also written to (staged
ones, the previous active one); swap them in; say so in a heartbeat; then wait for the next
announcement (Redis pub/sub) or `follow_poll_s`. A staged version is loaded while it is
backfilled, so activating it switches the engine reference at once: requests that started
on the old engine finish on it, later ones get the new one, and /readyz stays green.

A store that fails is retried every `follow_poll_s`. Anything else kills the loop loudly:
/healthz turns red so that the process is restarted (and starts on the active version).
A bundle that fails to load is logged and counted (`qarm_reloads_total{result="failed"}`),
the process keeps serving what it has and tries again after `RETRY_S`; the pod's
`qarm_bundle_info` then disagrees with its peers', which alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runtime import Engine
from service.state import AppState, load_engine, publish
from store import CatalogSeed, Lifecycle, PodInfo, StoreError, Watch

log = logging.getLogger(__name__)

RETRY_S = 30.0  # a version whose bundle failed to load is tried again after this long


class Follower:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._failed: dict[str, float] = {}  # version -> monotonic time of the next try
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="qarm-follower")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a death is logged already

    async def _run(self) -> None:
        poll = self.state.settings.follow_poll_s
        watch: Watch | None = None
        try:
            while not self._closing.is_set():
                try:
                    if watch is None:
                        watch = await self.state.store.watch()
                    await self.follow()
                    await watch.wait(poll)
                except StoreError as err:
                    self.state.metrics.store_errors.labels(self.state.store.kind, "follow").inc()
                    log.warning("follower: the store failed (%s); again in %gs", err, poll)
                    await _close(watch)
                    watch = None
                    await asyncio.sleep(poll)
        except Exception as err:  # a bug: /healthz turns red, so the pod is restarted
            self.error = err
            log.exception("follower died; this process no longer follows the store")
            raise
        finally:
            await _close(watch)

    async def follow(self) -> None:
        """One round: match the store's lifecycle, then heartbeat."""
        state = self.state
        lifecycle = await state.store.lifecycle()
        if lifecycle.active is None:
            lifecycle = await self._restore()
        async with state.switch_lock:
            await self._match(lifecycle)
        pod = PodInfo(
            state.settings.pod_name, state.engine.version, tuple(state.written), time.time()
        )
        await state.store.heartbeat(pod, ttl_s=max(15.0, 3 * state.settings.follow_poll_s))

    async def _restore(self) -> Lifecycle:
        """The store has no active version while this process serves one: Redis lost its data
        (a restart without persistence, a flush). Seed the version again and point readers
        back at it, so direct readers need not wait for the next upload."""
        engine = self.state.engine
        log.warning("follower: the store has no active version; restoring %s", engine.version)
        await self.state.store.activate(
            engine.version,
            CatalogSeed.of(engine.bundle),
            seed_lookups=self.state.settings.seed_catalog,
            bundle=str(engine.bundle.path),
        )
        return await self.state.store.lifecycle()

    async def _match(self, lifecycle: Lifecycle) -> None:
        state = self.state
        have = {state.engine.version: state.engine, **state.written}
        wanted = [v for v in lifecycle.written() if v != lifecycle.active]
        for version in [lifecycle.active, *wanted]:
            if version is not None and version not in have:
                engine = await self._load(version, lifecycle)
                if engine is not None:
                    have[version] = engine
        active = lifecycle.active
        if active is not None and active in have and active != state.engine.version:
            log.info("follower: switching %s -> %s", state.engine.version, active)
            state.engine = have[active]
            state.metrics.reloads.labels("ok").inc()
        state.written = {v: have[v] for v in wanted if v in have}
        publish(state.metrics, state.engine, state.written)

    async def _load(self, version: str, lifecycle: Lifecycle) -> Engine | None:
        if time.monotonic() < self._failed.get(version, 0.0):
            return None
        info = lifecycle.versions.get(version)
        path = self.state.settings.version_path(version, info.bundle if info else "")
        try:
            engine = await load_engine(self.state.settings, path)
        except Exception:
            self._failed[version] = time.monotonic() + RETRY_S
            self.state.metrics.reloads.labels("failed").inc()
            log.exception("follower: loading version %s from %s failed", version, path)
            return None
        if engine.version != version:
            self._failed[version] = time.monotonic() + RETRY_S
            self.state.metrics.reloads.labels("failed").inc()
            log.error("follower: %s holds version %s, not %s", path, engine.version, version)
            return None
        self._failed.pop(version, None)
        self.state.store.attach(version, CatalogSeed.of(engine.bundle))
        log.info("follower: loaded version %s from %s", version, path)
        return engine


async def _close(watch: Watch | None) -> None:
    if watch is not None:
        try:
            await watch.close()
        except StoreError:
            log.warning("follower: closing the subscription failed", exc_info=True)
