"""The Redis store: redis-py asyncio (hiredis parser) over one connection pool.

A write takes three round trips: MGET of the items' current records, one pipeline of INCRs on
the tuple counters of the items that need a new suffix (INCR is atomic, so concurrent writers
never share a suffix), and one MULTI/EXEC pipeline with every record, semantic-ID key and
prefix-set change of the batch. Any Redis failure raises StoreError; the pool reconnects by
itself on the next call, so the service recovers without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, assert_never

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from codebooks.sid import codes_key
from store.base import (
    AddPrefix,
    CatalogSeed,
    DropSid,
    Lifecycle,
    NewCodes,
    Op,
    PodInfo,
    PutItem,
    PutSid,
    RemovePrefix,
    SeedCounter,
    SeedOp,
    SeedSid,
    Store,
    StoredCodes,
    StoreError,
    VersionInfo,
    VersionState,
    Watch,
    WritePlan,
    check_promotable,
    decode_value,
    distinct_ids,
    seed_counter_ops,
    seed_lookup_ops,
)

log = logging.getLogger(__name__)

# Catalogs kept in memory to re-seed a Redis that lost its data: the active version's and
# the previous one's (requests in flight during a reload finish on it).
KEPT_CATALOGS = 2

SEED_CHUNK = 10_000  # commands per pipeline while seeding a version


class Keys:
    """The key schema (docs/store.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def active(self) -> str:
        return f"{self.prefix}:active"

    def versions(self) -> str:
        return f"{self.prefix}:versions"

    def pods(self) -> str:
        return f"{self.prefix}:pods"

    def events(self) -> str:
        return f"{self.prefix}:events"

    def report(self, v: str) -> str:
        return f"{self.prefix}:{v}:report"

    def of_version(self, v: str) -> str:
        """A SCAN pattern matching every key of version `v` (and nothing else)."""
        return f"{_glob_escape(self.prefix)}:{_glob_escape(v)}:*"

    def seeded(self, v: str) -> str:
        return f"{self.prefix}:{v}:seeded"

    def item(self, v: str, item_id: str) -> str:
        return f"{self.prefix}:{v}:item:{item_id}"

    def sid(self, v: str, sid: str) -> str:
        return f"{self.prefix}:{v}:sid:{sid}"

    def counter(self, v: str, rq: Sequence[int] | str) -> str:
        return f"{self.prefix}:{v}:ctr:{rq if isinstance(rq, str) else codes_key(rq)}"

    def prefix_set(self, v: str, codes: Sequence[int] | str) -> str:
        return f"{self.prefix}:{v}:rqp:{codes if isinstance(codes, str) else codes_key(codes)}"


class RedisStore(Store):
    kind = "redis"

    def __init__(self, url: str, *, prefix: str, pool_size: int, timeout_s: float) -> None:
        # One try, no retry loop: a dead Redis must fail fast into a 503 with Retry-After.
        # Blocking: past pool_size commands in flight, a command waits for a connection
        # (up to timeout_s) instead of failing as if Redis were down.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis(connection_pool=self._pool)
        self.keys = Keys(prefix)
        # The catalog of each version this store activated, to seed it again if Redis loses it.
        self._catalogs: dict[str, tuple[CatalogSeed, bool]] = {}

    async def _call(self, what: str, op: Any) -> Any:
        try:
            return await op
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis {what}: {type(err).__name__}: {err}") from err

    async def ping(self) -> None:
        await self._call("PING", self._redis.ping())

    async def active_version(self) -> str | None:
        value = await self._call("GET active", self._redis.get(self.keys.active()))
        return value.decode() if value is not None else None

    async def _seed_once(self, version: str, catalog: CatalogSeed, seed_lookups: bool) -> None:
        self._catalogs.pop(version, None)
        self._catalogs[version] = (catalog, seed_lookups)
        for old in list(self._catalogs)[:-KEPT_CATALOGS]:  # the newest two
            del self._catalogs[old]
        if not await self._call("EXISTS seeded", self._redis.exists(self.keys.seeded(version))):
            await self._seed(version)

    async def promote(self, version: str, bundle: str) -> str | None:
        lifecycle = await self.lifecycle()
        check_promotable(lifecycle, version)
        previous = lifecycle.active
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self.keys.active(), version.encode())
        pipe.hset(
            self.keys.versions(), version, VersionInfo(version, "active", bundle, now).to_json()
        )
        old = lifecycle.versions.get(previous) if previous is not None else None
        if previous is not None and previous != version:
            was = old.bundle if old is not None else ""
            info = VersionInfo(previous, "inactive", was, now)
            pipe.hset(self.keys.versions(), previous, info.to_json())
        pipe.publish(self.keys.events(), _event("activated", version))
        await self._call("MULTI/EXEC promote", pipe.execute())
        log.info("store: version %s active (was %s)", version, previous)
        return previous

    async def _delete_version(self, version: str, *, batch: int, max_keys_per_s: float) -> int:
        self._catalogs.pop(version, None)
        deleted = 0
        keys: list[bytes] = []
        scan = self._redis.scan_iter(match=self.keys.of_version(version), count=batch)
        try:
            async for key in scan:
                keys.append(key)
                if len(keys) >= batch:
                    deleted += await self._unlink(keys, max_keys_per_s)
                    keys = []
            if keys:
                deleted += await self._unlink(keys, max_keys_per_s)
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis SCAN {version}: {type(err).__name__}: {err}") from err
        log.info("store: version %s retired, %d keys deleted", version, deleted)
        return deleted

    async def _unlink(self, keys: list[bytes], max_keys_per_s: float) -> int:
        start = time.perf_counter()
        n = int(await self._call("UNLINK", self._redis.unlink(*keys)))
        await asyncio.sleep(max(0.0, len(keys) / max_keys_per_s - (time.perf_counter() - start)))
        return n

    async def _set_state(self, version: str, state: VersionState, bundle: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        info = VersionInfo(version, state, bundle, time.time())
        pipe.hset(self.keys.versions(), version, info.to_json())
        pipe.publish(self.keys.events(), _event(state, version))
        await self._call(f"MULTI/EXEC {state}", pipe.execute())

    async def lifecycle(self) -> Lifecycle:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(self.keys.active())
        pipe.hgetall(self.keys.versions())
        active, versions = await self._call("GET/HGETALL lifecycle", pipe.execute())
        return Lifecycle(
            active=active.decode() if active is not None else None,
            versions={
                v.decode(): VersionInfo.from_json(v.decode(), t) for v, t in versions.items()
            },
        )

    async def watch(self) -> Watch:
        pubsub = self._redis.pubsub()
        await self._call("SUBSCRIBE", pubsub.subscribe(self.keys.events()))
        return _RedisWatch(pubsub)

    async def heartbeat(self, pod: PodInfo, ttl_s: float) -> None:
        text = json.dumps({"pod": pod.to_json(), "until": pod.at + ttl_s})
        await self._call("HSET pods", self._redis.hset(self.keys.pods(), pod.pod, text))

    async def pods(self) -> list[PodInfo]:
        raw = await self._call("HGETALL pods", self._redis.hgetall(self.keys.pods()))
        now, live, lapsed = time.time(), [], []
        for name, text in raw.items():
            record = json.loads(text)
            if record["until"] < now:
                lapsed.append(name)
            else:
                live.append(PodInfo.from_json(name.decode(), record["pod"]))
        if lapsed:
            await self._call("HDEL pods", self._redis.hdel(self.keys.pods(), *lapsed))
        return sorted(live, key=lambda p: p.pod)

    async def set_report(self, version: str, text: str) -> None:
        await self._call("SET report", self._redis.set(self.keys.report(version), text.encode()))

    async def report(self, version: str) -> str | None:
        value = await self._call("GET report", self._redis.get(self.keys.report(version)))
        return value.decode() if value is not None else None

    async def ids(self, version: str, chunk: int = 1000) -> AsyncIterator[list[str]]:
        start = len(self.keys.item(version, ""))
        pattern = f"{_glob_escape(self.keys.item(version, ''))}*"
        found: list[str] = []
        try:
            async for key in self._redis.scan_iter(match=pattern, count=chunk):
                found.append(key.decode()[start:])
                if len(found) >= chunk:
                    yield found
                    found = []
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis SCAN items of {version}: {type(err).__name__}: {err}") from err
        if found:
            yield found

    async def _seed(self, version: str) -> None:
        catalog, seed_lookups = self._catalogs[version]
        # Planning and queueing are CPU work (queueing only appends to a pipeline): a thread.
        pipes = await asyncio.to_thread(self._seed_pipelines, version, catalog, seed_lookups)
        for pipe in pipes:
            await self._call("seed pipeline", pipe.execute())
        await self._call("SET seeded", self._redis.set(self.keys.seeded(version), b"1"))
        log.info("store: seeded version %s (%d commands)", version, sum(map(len, pipes)))

    def _seed_pipelines(
        self, version: str, catalog: CatalogSeed, seed_lookups: bool
    ) -> list[Pipeline]:
        """The seed operations (`seed_counter_ops`, then with `seed_lookups` the catalog's
        `seed_lookup_ops`) queued `SEED_CHUNK` per pipeline, not executed."""
        ops: list[SeedOp] = [*seed_counter_ops(catalog)]
        if seed_lookups:
            ops.extend(seed_lookup_ops(catalog))
        pipes = []
        for start in range(0, len(ops), SEED_CHUNK):
            pipe = self._redis.pipeline(transaction=False)
            for op in ops[start : start + SEED_CHUNK]:
                _queue(pipe, self.keys, version, op)
            pipes.append(pipe)
        return pipes

    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        k = self.keys
        ids = distinct_ids(items)
        keys = [k.item(version, i) for i in ids] + [k.seeded(version)]
        *raw, seeded = await self._call("MGET", self._redis.mget(keys))
        if seeded is None and version in self._catalogs:
            # Redis lost its data (a restart without persistence, a flush): seed the counters
            # again before allocating, or new suffixes would repeat the catalog's.
            log.warning("store: version %s is not seeded in Redis any more; seeding again", version)
            await self._seed(version)
            await self._call("SET NX active", self._redis.set(k.active(), version, nx=True))
        plan = WritePlan.of(items, {i: _decoded(i, v) for i, v in zip(ids, raw, strict=True)})
        allocated: list[int] = []
        if plan.allocs:
            pipe = self._redis.pipeline(transaction=False)
            for rq in plan.allocs:
                pipe.incr(k.counter(version, rq))
            allocated = [int(n) - 1 for n in await self._call("INCR", pipe.execute())]
        records, ops = plan.finish(allocated)
        pipe = self._redis.pipeline(transaction=True)
        for op in ops:
            _queue(pipe, k, version, op)
        await self._call("MULTI/EXEC", pipe.execute())
        return records

    async def get_many(self, version: str, ids: Sequence[str]) -> list[StoredCodes | None]:
        raw = await self._call("MGET", self._redis.mget([self.keys.item(version, i) for i in ids]))
        return [_decoded(i, v) for i, v in zip(ids, raw, strict=True)]

    async def item_for_sid(self, version: str, sid: str) -> str | None:
        value = await self._call("GET sid", self._redis.get(self.keys.sid(version, sid)))
        return value.decode() if value is not None else None

    async def items_for_prefix(self, version: str, prefix: Sequence[int], limit: int) -> list[str]:
        key = self.keys.prefix_set(version, prefix)
        members = await self._call("ZRANGE", self._redis.zrange(key, 0, limit - 1))
        return [m.decode() for m in members]

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


class _RedisWatch(Watch):
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def wait(self, timeout_s: float) -> bool:
        try:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=timeout_s
            )
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis pub/sub: {type(err).__name__}: {err}") from err
        return message is not None

    async def close(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]


def _event(event: str, version: str) -> bytes:
    return json.dumps({"event": event, "version": version}).encode()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _decoded(item_id: str, value: bytes | None) -> StoredCodes | None:
    return decode_value(item_id, value) if value is not None else None


def _queue(pipe: Pipeline, k: Keys, v: str, op: Op) -> None:
    """Queue the one command that executes `op` under version `v` (docs/store.md)."""
    match op:
        case PutItem(item_id, value):
            pipe.set(k.item(v, item_id), value)
        case PutSid(sid, item_id):
            pipe.set(k.sid(v, sid), item_id.encode())
        case DropSid(sid):
            pipe.delete(k.sid(v, sid))
        case AddPrefix(prefix, item_id):
            pipe.zadd(k.prefix_set(v, prefix), {item_id: 0})
        case RemovePrefix(prefix, item_id):
            pipe.zrem(k.prefix_set(v, prefix), item_id)
        case SeedCounter(tuple_key, next_free):
            pipe.set(k.counter(v, tuple_key), next_free, nx=True)
        case SeedSid(sid, item_id):
            pipe.set(k.sid(v, sid), item_id.encode(), nx=True)
        case _:
            assert_never(op)
