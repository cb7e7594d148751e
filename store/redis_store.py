"""The Redis store (a single Redis or a Redis Cluster): redis-py asyncio, hiredis parser.

Layout 2 (docs/store.md): an item's record is one field of a small hash (its bucket by the
CRC-32 of its id), a semantic ID's reverse entry one member `"{sid} {id}"` of a sorted set per
first two RQ codes, kept in text order so the same set answers prefix lookups, and suffix
counters fields of a hash per first two codes. A write takes three round trips: the items'
current records, one pipeline of `HINCRBY`s on the counters of the items that need a new
suffix (each atomic, so concurrent writers never share a suffix), and the changes. A single
Redis applies the changes in one `MULTI`/`EXEC`; a cluster, whose keys span slots, applies
them in `WRITE_PHASES` order, one pipeline per phase. Any Redis failure raises StoreError; the
clients reconnect by themselves on the next call, so the service recovers without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, assert_never

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from codebooks.sid import codes_key
from store.base import (
    CatalogFloors,
    CatalogSeed,
    DropSid,
    Lifecycle,
    NewCodes,
    PodInfo,
    PutItem,
    PutSid,
    SeedSid,
    Store,
    StoredCodes,
    StoreError,
    VersionInfo,
    VersionState,
    Watch,
    WriteOp,
    WritePlan,
    check_promotable,
    decode_value,
    distinct_ids,
    phases,
    prefix_range,
    seed_lookup_ops,
)

log = logging.getLogger(__name__)

LAYOUT = 2  # the key layout's number, in every version's parameters (docs/store.md)
ITEM_BUCKETS = 1 << 16  # hashes holding the item records of a version, by CRC-32 of the id
INDEX_LEVELS = 2  # RQ codes naming a reverse-entry set and a counter hash
ROWS_PER_KEY = 1000  # catalog ids per key of the row -> id map

# Catalogs kept in memory (start counters, seed a Redis that lost its data): a process writes
# the active version, the staged ones and the previous active one.
KEPT_CATALOGS = 4

SEED_CHUNK = 10_000  # commands per pipeline while seeding a version
BUCKETS_PER_ROUND = 32  # reverse-entry sets read per round trip by a short prefix lookup

# HGET of KEYS[i] field ARGV[i] for every i, in one command: a single Redis answers a batch
# read in one round trip without a command per item on the client (a cluster pipelines HGETs).
_HGET_EACH = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[i]) end
return out
"""

Client = Redis | RedisCluster


def item_bucket(item_id: str) -> int:
    """The bucket of an item's record: CRC-32 (zlib, IEEE) of the id's UTF-8 bytes, modulo
    `ITEM_BUCKETS`."""
    return zlib.crc32(item_id.encode()) % ITEM_BUCKETS


def code_bucket(codes: Sequence[str]) -> str:
    """The reverse-entry set and counter hash of RQ codes (text): their first `INDEX_LEVELS`."""
    return "-".join(codes[:INDEX_LEVELS])


def sid_bucket(sid: str) -> str:
    return code_bucket(sid.split("-")[:-1])


def member(sid: str, item_id: str) -> str:
    """A reverse entry: the semantic ID, a space, the item id (ids hold no spaces)."""
    return f"{sid} {item_id}"


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

    def params(self, v: str) -> str:
        """The version's parameters (a hash); present once the version is seeded."""
        return f"{self.prefix}:{v}:params"

    def items(self, v: str, item_id: str) -> str:
        return f"{self.prefix}:{v}:i:{item_bucket(item_id)}"

    def index(self, v: str, bucket: str) -> str:
        return f"{self.prefix}:{v}:x:{bucket}"

    def counters(self, v: str, tuple_key: str) -> str:
        return f"{self.prefix}:{v}:c:{code_bucket(tuple_key.split('-'))}"

    def rows(self, v: str, chunk: int) -> str:
        return f"{self.prefix}:{v}:r:{chunk}"


class RedisStore(Store):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        pool_size: int,
        timeout_s: float,
        cluster: bool = False,
        tls: dict[str, str] | None = None,
    ) -> None:
        """`url`: redis:// or rediss:// (TLS), with a user and password where Redis has ACLs;
        `tls`: redis-py's `ssl_*` arguments (CA file, client certificate and key)."""
        # One try, no retry loop: a dead Redis must fail fast into a 503 with Retry-After.
        self.cluster = cluster
        tls = tls or {}
        self._redis: Client
        if cluster:
            self._pool = None
            self._redis = RedisCluster.from_url(
                url,
                max_connections=pool_size,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                **tls,
            )
        else:
            # Blocking: past pool_size commands in flight, a command waits for a connection
            # (up to timeout_s) instead of failing as if Redis were down.
            self._pool = BlockingConnectionPool.from_url(
                url,
                max_connections=pool_size,
                timeout=timeout_s,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                **tls,
            )
            self._redis = Redis(connection_pool=self._pool)
            self._hget_each = self._redis.register_script(_HGET_EACH)
        self.keys = Keys(prefix)
        # The catalog of each version this store activated, to seed it again if Redis loses it.
        self._catalogs: dict[str, tuple[CatalogSeed, bool]] = {}
        self._floors: dict[str, CatalogFloors] = {}
        self._params: dict[str, dict[str, int]] = {}  # versions' parameters, once read
        # Versions known seeded (seeded or found seeded by this process): missing parameters
        # then mean Redis lost its data. The version this process last made active.
        self._seeded: set[str] = set()
        self._promoted: str | None = None

    async def _call(self, what: str, op: Any) -> Any:
        try:
            return await op
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis {what}: {type(err).__name__}: {err}") from err

    async def _in_order(
        self, what: str, steps: Sequence[Sequence[tuple[str, tuple[Any, ...]]]]
    ) -> None:
        """Run `steps` (each a list of (command, args)) in order: in one MULTI/EXEC on a single
        Redis; on a cluster, whose keys span slots, one pipeline per step, each after the last
        answered."""
        if not self.cluster:
            pipe = self._redis.pipeline(transaction=True)
            for step in steps:
                for name, args in step:
                    getattr(pipe, name)(*args)
            await self._call(what, pipe.execute())
            return
        for step in steps:
            if len(step) == 1:  # one command (PUBLISH cannot be pipelined on a cluster)
                name, args = step[0]
                await self._call(what, getattr(self._redis, name)(*args))
                continue
            pipe = self._redis.pipeline(transaction=False)
            for name, args in step:
                getattr(pipe, name)(*args)
            await self._call(what, pipe.execute())

    async def _hget(self, what: str, pairs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """HGET of each (key, field): one command on a single Redis, a pipeline on a cluster."""
        if not pairs:
            return []
        if not self.cluster:
            keys, fields = zip(*pairs, strict=True)
            return list(await self._call(what, self._hget_each(keys=keys, args=fields)))
        pipe = self._redis.pipeline(transaction=False)
        for key, field in pairs:
            pipe.hget(key, field)
        return list(await self._call(what, pipe.execute()))

    async def ping(self) -> None:
        await self._call("PING", self._redis.ping())

    async def active_version(self) -> str | None:
        value = await self._call("GET active", self._redis.get(self.keys.active()))
        return value.decode() if value is not None else None

    def attach(self, version: str, catalog: CatalogSeed, *, seed_lookups: bool = False) -> None:
        kept = self._catalogs.pop(version, None)
        if kept is None or kept[0] is not catalog:
            self._floors.pop(version, None)
        self._catalogs[version] = (catalog, seed_lookups)
        for old in list(self._catalogs)[:-KEPT_CATALOGS]:  # the newest ones
            del self._catalogs[old]
            self._floors.pop(old, None)

    async def _seed_once(self, version: str, catalog: CatalogSeed, seed_lookups: bool) -> None:
        self.attach(version, catalog, seed_lookups=seed_lookups)
        if not await self._call("EXISTS params", self._redis.exists(self.keys.params(version))):
            await self._seed(version)
        self._seeded.add(version)

    async def promote(self, version: str, bundle: str) -> str | None:
        lifecycle = await self.lifecycle()
        check_promotable(lifecycle, version)
        previous = lifecycle.active
        now = time.time()
        k = self.keys
        registry = [
            ("hset", (k.versions(), version, VersionInfo(version, "active", bundle, now).to_json()))
        ]
        old = lifecycle.versions.get(previous) if previous is not None else None
        if previous is not None and previous != version:
            info = VersionInfo(previous, "inactive", old.bundle if old is not None else "", now)
            registry.append(("hset", (k.versions(), previous, info.to_json())))
        # The registry before the pointer: a reader that sees the pointer finds its entry.
        await self._in_order(
            "promote",
            [
                registry,
                [("set", (k.active(), version.encode()))],
                [("publish", (k.events(), _event("activated", version)))],
            ],
        )
        self._promoted = version
        log.info("store: version %s active (was %s)", version, previous)
        return previous

    async def _delete_version(self, version: str, *, batch: int, max_keys_per_s: float) -> int:
        self._catalogs.pop(version, None)
        self._floors.pop(version, None)
        self._params.pop(version, None)
        self._seeded.discard(version)
        deleted = 0
        keys: list[bytes] = []
        try:
            async for key in self._redis.scan_iter(
                match=self.keys.of_version(version), count=batch
            ):
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
        if self.cluster:  # keys of several slots: one UNLINK each, pipelined per node
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("UNLINK", key)
            n = sum(int(x) for x in await self._call("UNLINK", pipe.execute()))
        else:
            n = int(await self._call("UNLINK", self._redis.unlink(*keys)))
        await asyncio.sleep(max(0.0, len(keys) / max_keys_per_s - (time.perf_counter() - start)))
        return n

    async def _set_state(self, version: str, state: VersionState, bundle: str) -> None:
        info = VersionInfo(version, state, bundle, time.time())
        await self._in_order(
            state,
            [
                [("hset", (self.keys.versions(), version, info.to_json()))],
                [("publish", (self.keys.events(), _event(state, version)))],
            ],
        )

    async def lifecycle(self) -> Lifecycle:
        pipe = self._redis.pipeline(transaction=not self.cluster)
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
        pattern = f"{_glob_escape(f'{self.keys.prefix}:{version}:i:')}*"
        found: list[str] = []
        try:
            async for key in self._redis.scan_iter(match=pattern, count=chunk):
                fields: list[Any] = await self._redis.hkeys(key)
                found.extend(f.decode() for f in fields)
                if len(found) >= chunk:
                    yield found
                    found = []
        except (TimeoutError, RedisError, OSError) as err:
            raise StoreError(f"redis SCAN items of {version}: {type(err).__name__}: {err}") from err
        if found:
            yield found

    async def params(self, version: str) -> dict[str, int]:
        """The version's parameters (docs/store.md, "Parameters"); empty while not seeded."""
        if version not in self._params:
            raw = await self._call("HGETALL params", self._redis.hgetall(self.keys.params(version)))
            if not raw:
                return {}
            self._params[version] = {k.decode(): int(v) for k, v in raw.items()}
        return self._params[version]

    async def _check_config(self, catalog: CatalogSeed) -> None:
        """Warn when Redis keeps item hashes in their larger encoding: an item value is
        8 + 2L + 4K bytes, and Redis keeps a hash compact only while each value is at most
        `hash-max-listpack-value` (docs/store.md, "Memory"). Managed Redis may refuse CONFIG:
        then nothing is said."""
        value = 8 + 2 * catalog.levels + 4 * catalog.k
        try:
            got: dict[Any, Any] = await self._redis.config_get("hash-max-listpack-value")
        except (TimeoutError, RedisError, OSError) as err:
            log.debug("store: CONFIG GET refused (%s); Redis settings not checked", err)
            return
        limit = int(next(iter(got.values()), 0))
        if limit < value:
            log.warning(
                "store: Redis hash-max-listpack-value is %d, below an item value's %d bytes: "
                "item records take about 40 more bytes each (docs/store.md, Memory)",
                limit,
                value,
            )

    async def _seed(self, version: str) -> None:
        catalog, seed_lookups = self._catalogs[version]
        await self._check_config(catalog)
        # Planning and queueing are CPU work (queueing only appends to a pipeline): a thread.
        pipes = await asyncio.to_thread(self._seed_pipelines, version, catalog, seed_lookups)
        for pipe in pipes:
            await self._call("seed pipeline", pipe.execute())
        # The parameters last: they mark the version seeded.
        await self._call(
            "HSET params",
            self._redis.hset(self.keys.params(version), mapping=_params(catalog)),
        )
        self._params.pop(version, None)
        log.info("store: seeded version %s (%d commands)", version, sum(map(len, pipes)))

    def _seed_pipelines(self, version: str, catalog: CatalogSeed, seed_lookups: bool) -> list[Any]:
        """The row -> id map and, with `seed_lookups`, the catalog's semantic IDs
        (`seed_lookup_ops`), queued `SEED_CHUNK` commands per pipeline, not executed. Counters
        are not seeded: each starts at its first use (`CatalogFloors`)."""
        ids = catalog.item_ids.tolist()
        pipe = self._redis.pipeline(transaction=False)
        for chunk, start in enumerate(range(0, len(ids), ROWS_PER_KEY)):
            pipe.set(self.keys.rows(version, chunk), "\n".join(ids[start : start + ROWS_PER_KEY]))
        pipes = [pipe]
        ops = seed_lookup_ops(catalog) if seed_lookups else []
        for start in range(0, len(ops), SEED_CHUNK):
            pipe = self._redis.pipeline(transaction=False)
            for op in ops[start : start + SEED_CHUNK]:
                name, args = _command(self.keys, version, op)
                getattr(pipe, name)(*args)
            pipes.append(pipe)
        return pipes

    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        k = self.keys
        ids = distinct_ids(items)
        *raw, seeded = await self._hget(
            "HGET items", [(k.items(version, i), i) for i in ids] + [(k.params(version), "layout")]
        )
        if seeded is None and version in self._seeded and version in self._catalogs:
            # Redis lost its data (a restart without persistence, a flush): seed the version's
            # parameters, row map and catalog lookups again, and point readers back at it if
            # this process made it active.
            log.warning("store: version %s is not seeded in Redis any more; seeding again", version)
            await self._seed(version)
            if version == self._promoted:
                await self._call("SET NX active", self._redis.set(k.active(), version, nx=True))
        plan = WritePlan.of(items, {i: _decoded(i, v) for i, v in zip(ids, raw, strict=True)})
        allocated: list[int] = []
        if plan.allocs:
            floors = self._floors_of(version)
            pipe = self._redis.pipeline(transaction=False)
            for rq in plan.allocs:
                tuple_key = codes_key(rq)
                # A counter starts at the catalog's next free suffix, at its first use: every
                # writer of the version sets the same start, and HSETNX never lowers it.
                pipe.hsetnx(k.counters(version, tuple_key), tuple_key, floors.of(rq))
                pipe.hincrby(k.counters(version, tuple_key), tuple_key, 1)
            answers = await self._call("HINCRBY", pipe.execute())
            allocated = [int(n) - 1 for n in answers[1::2]]
        records, ops = plan.finish(allocated)
        await self._in_order(
            "write", [[_command(k, version, op) for op in phase] for phase in phases(ops)]
        )
        return records

    def _floors_of(self, version: str) -> CatalogFloors:
        if version not in self._floors:
            if version not in self._catalogs:
                raise StoreError(
                    f"redis write of version {version}: its catalog is not attached in this "
                    "process (load the bundle first), so new suffixes could repeat the catalog's"
                )
            self._floors[version] = CatalogFloors(self._catalogs[version][0])
        return self._floors[version]

    async def get_values(self, version: str, ids: Sequence[str]) -> list[bytes | None]:
        return await self._hget("HGET items", [(self.keys.items(version, i), i) for i in ids])

    async def item_for_sid(self, version: str, sid: str) -> str | None:
        key = self.keys.index(version, sid_bucket(sid))
        entries = await self._call(
            "ZRANGEBYLEX", self._redis.zrangebylex(key, f"[{sid} ", f"({sid}!")
        )
        confirmed = await self._confirmed(version, entries)
        return confirmed[0] if confirmed else None

    async def items_for_prefix(self, version: str, prefix: Sequence[int], limit: int) -> list[str]:
        low, high = prefix_range(prefix)
        params = await self.params(version)
        found: list[str] = []
        for buckets in _bucket_rounds(prefix, params):
            pipe = self._redis.pipeline(transaction=False)
            for bucket in buckets:
                key = self.keys.index(version, bucket)
                pipe.zrangebylex(key, f"[{low}", f"({high}", start=0, num=limit - len(found))
            rounds = await self._call("ZRANGEBYLEX", pipe.execute())
            # One read of the records confirms every entry of the round (sets in text order).
            found.extend(await self._confirmed(version, [e for es in rounds for e in es]))
            if len(found) >= limit:
                return found[:limit]
        return found

    async def _confirmed(self, version: str, entries: Sequence[bytes]) -> list[str]:
        """The ids of the reverse entries that no record contradicts: the item's record holds
        the entry's semantic ID, or the item has no record (a catalog item seeded but not yet
        backfilled). An entry a write cut short on a cluster left for a record that moved on
        is skipped (docs/store.md, "What a crash can leave")."""
        pairs = [e.decode().split(" ", 1) for e in entries]
        if not pairs:
            return []
        raw = await self._hget("HGET items", [(self.keys.items(version, i), i) for _, i in pairs])
        return [
            i
            for (sid, i), v in zip(pairs, raw, strict=True)
            if v is None or decode_value(i, v).sid == sid
        ]

    async def close(self) -> None:
        await self._redis.aclose()
        if self._pool is not None:
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


def _params(catalog: CatalogSeed) -> dict[Any, Any]:
    """A version's parameters, in the bundle manifest's words (docs/store.md)."""
    return {
        "layout": LAYOUT,
        "levels": catalog.levels,
        "centroids": catalog.centroids,
        "k": catalog.k,
        "dim": catalog.dim,
        "rows": len(catalog.item_ids),
        "rows_per_key": ROWS_PER_KEY,
        "item_buckets": ITEM_BUCKETS,
        "index_levels": INDEX_LEVELS,
    }


def _bucket_rounds(prefix: Sequence[int], params: dict[str, int]) -> list[list[str]]:
    """The reverse-entry sets a prefix lookup reads, in the text order of their members,
    `BUCKETS_PER_ROUND` per round trip. A prefix as long as a set's name reads one set; a
    shorter one (level 1 of L >= 2) reads the sets of each next code, in text order."""
    text = [str(int(c)) for c in prefix]
    levels = params.get("levels", len(text))
    if len(text) >= min(INDEX_LEVELS, levels):
        return [[code_bucket(text)]]
    nexts = sorted(range(params.get("centroids", 0)), key=lambda c: f"{c}-")
    names = [code_bucket([*text, str(c)]) for c in nexts]
    return [names[i : i + BUCKETS_PER_ROUND] for i in range(0, len(names), BUCKETS_PER_ROUND)]


def _event(event: str, version: str) -> bytes:
    return json.dumps({"event": event, "version": version}).encode()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _decoded(item_id: str, value: bytes | None) -> StoredCodes | None:
    return decode_value(item_id, value) if value is not None else None


def _command(k: Keys, v: str, op: WriteOp | SeedSid) -> tuple[str, tuple[Any, ...]]:
    """The one command (redis-py method, arguments) that executes `op` under version `v`
    (docs/store.md). Counters are never seeded in Redis: they start at first use."""
    match op:
        case PutSid(sid, item_id) | SeedSid(sid, item_id):
            return "zadd", (k.index(v, sid_bucket(sid)), {member(sid, item_id): 0})
        case PutItem(item_id, value):
            return "hset", (k.items(v, item_id), item_id, value)
        case DropSid(sid, item_id):
            return "zrem", (k.index(v, sid_bucket(sid)), member(sid, item_id))
        case _:
            assert_never(op)
