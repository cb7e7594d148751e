"""The store contract, run against every store: embedded SQLite, a real Redis and a real
3-master Redis Cluster (both started by `make test`)."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codebooks.sid import format_sid
from store import (
    CatalogSeed,
    LifecycleError,
    NewCodes,
    PodInfo,
    RedisStore,
    SqliteStore,
    Store,
    StoredCodes,
    StoreError,
)
from store.base import decode_value, decode_values, encode_value

pytestmark = pytest.mark.anyio

CATALOG = CatalogSeed(
    item_ids=np.array(["c0", "c1", "c2", "c3"]),
    rq_codes=np.array([[1, 2, 3], [1, 2, 3], [1, 5, 0], [7, 7, 7]], dtype=np.int32),
    sid_suffix=np.array([0, 1, 0, 0], dtype=np.int32),
    centroids=8,
    k=2,
    dim=4,
)


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_one(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "store.sqlite3")
    cluster = kind == "cluster"
    return RedisStore(
        request.getfixturevalue("redis_cluster_url" if cluster else "redis_url"),
        prefix=request.getfixturevalue("redis_cluster_prefix" if cluster else "redis_prefix"),
        pool_size=8,
        timeout_s=5.0,
        cluster=cluster,
    )


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    s = open_one(store_kind, tmp_path, request)
    await s.activate("v1", CATALOG, seed_lookups=True)
    yield s
    await s.close()


def new(
    item_id: str, rq: tuple[int, ...], vq: tuple[int, ...] = (3, 1), catalog: Any = None
) -> NewCodes:
    return NewCodes(item_id, vq, rq, catalog)


async def test_round_trip_and_order(store: Store) -> None:
    assert await store.active_version() == "v1"
    written = await store.write("v1", [new("a", (0, 0, 1)), new("b", (0, 0, 2), (9, 8))])
    assert written == [
        StoredCodes("a", (3, 1), (0, 0, 1), 0),
        StoredCodes("b", (9, 8), (0, 0, 2), 0),
    ]
    got = await store.get_many("v1", ["b", "zz", "a", "b"])
    assert got == [written[1], None, written[0], written[1]]
    await store.ping()


async def test_versions_do_not_mix(store: Store) -> None:
    await store.write("v1", [new("a", (0, 0, 1))])
    await store.activate("v2", CATALOG, seed_lookups=False)
    assert await store.active_version() == "v2"
    assert await store.get_many("v2", ["a"]) == [None]
    assert (await store.get_many("v1", ["a"]))[0] is not None
    # v2 was seeded without lookups: counters only
    assert await store.item_for_sid("v2", "1-2-3-0") is None
    assert (await store.write("v2", [new("n", (1, 2, 3))]))[0].suffix == 2


async def test_suffixes_continue_after_the_catalog(store: Store) -> None:
    out = await store.write("v1", [new("x", (1, 2, 3)), new("y", (1, 2, 3)), new("z", (7, 7, 7))])
    assert [r.suffix for r in out] == [2, 3, 1]
    out = await store.write("v1", [new("w", (1, 2, 3))])
    assert out[0].suffix == 4


async def test_same_item_keeps_its_suffix(store: Store) -> None:
    first = await store.write("v1", [new("x", (1, 2, 3)), new("y", (1, 2, 3))])
    again = await store.write("v1", [new("y", (1, 2, 3), (5, 5)), new("x", (1, 2, 3))])
    assert [r.suffix for r in again] == [first[1].suffix, first[0].suffix]
    assert (await store.get_many("v1", ["y"]))[0] == StoredCodes("y", (5, 5), (1, 2, 3), 3)
    # a catalog item keeps its bundle suffix while its tuple is the same
    out = await store.write("v1", [new("c1", (1, 2, 3), catalog=((1, 2, 3), 1))])
    assert out[0].suffix == 1
    # the same id twice in one write: one suffix
    dup = await store.write("v1", [new("d", (4, 4, 4)), new("d", (4, 4, 4))])
    assert dup[0].suffix == dup[1].suffix == 0


async def test_reverse_lookups(store: Store) -> None:
    assert await store.item_for_sid("v1", "1-2-3-1") == "c1"
    assert await store.items_for_prefix("v1", [1], 10) == ["c0", "c1", "c2"]
    assert await store.items_for_prefix("v1", [1, 2], 10) == ["c0", "c1"]
    assert await store.items_for_prefix("v1", [1], 2) == ["c0", "c1"]
    assert await store.items_for_prefix("v1", [2], 10) == []
    out = await store.write("v1", [new("n", (1, 5, 9))])
    assert await store.item_for_sid("v1", out[0].sid) == "n"
    assert await store.items_for_prefix("v1", [1, 5], 10) == ["c2", "n"]
    # n moves to another tuple: its old semantic ID and prefixes go, shared level-1 stays
    moved = await store.write("v1", [new("n", (1, 6, 0))])
    assert await store.item_for_sid("v1", out[0].sid) is None
    assert await store.item_for_sid("v1", moved[0].sid) == "n"
    assert await store.items_for_prefix("v1", [1, 5], 10) == ["c2"]
    assert await store.items_for_prefix("v1", [1, 6, 0], 10) == ["n"]
    assert "n" in await store.items_for_prefix("v1", [1], 10)
    # a catalog item that moves leaves its catalog semantic ID
    await store.write("v1", [new("c3", (0, 1, 2), catalog=((7, 7, 7), 0))])
    assert await store.item_for_sid("v1", "7-7-7-0") is None
    assert await store.items_for_prefix("v1", [7], 10) == []


# Item ids and RQ tuples drawn so that writes collide: new ids and catalog ids, tuples that are
# the catalog's ((1, 2, 3), (1, 5, 0)) and tuples sharing their prefixes.
CATALOG_ENTRY = {
    str(i): (tuple(int(c) for c in rq), int(s))
    for i, rq, s in zip(CATALOG.item_ids, CATALOG.rq_codes, CATALOG.sid_suffix, strict=True)
}
WRITES = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "c0", "c3"]),
            st.tuples(st.sampled_from([1, 7]), st.sampled_from([2, 5]), st.sampled_from([0, 3])),
        ),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=5,
)
EXAMPLES = iter(range(1_000_000))


# The store fixture is shared by the examples; each writes under a version of its own.
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=WRITES)
async def test_reverse_lookups_follow_any_sequence_of_writes(
    store: Store, batches: list[list[tuple[str, tuple[int, int, int]]]]
) -> None:
    """Whatever is written, in whatever batches: each semantic ID ever answered maps to the
    item that holds it now (or to nothing), and each prefix finds exactly the items whose
    tuple starts with it; catalog items never written keep their seeded entries."""
    version = f"p{next(EXAMPLES)}"
    await store.activate(version, CATALOG, seed_lookups=True)
    holds = {i: StoredCodes(i, (), rq, s) for i, (rq, s) in CATALOG_ENTRY.items()}
    answered = {r.sid for r in holds.values()}
    for n, batch in enumerate(batches):
        items = [new(i, rq, (n, k), CATALOG_ENTRY.get(i)) for k, (i, rq) in enumerate(batch)]
        records = await store.write(version, items)
        answered.update(r.sid for r in records)
        holds.update((r.item_id, r) for r in records)  # the last occurrence of an id wins
    by_sid = {r.sid: i for i, r in holds.items()}
    assert len(by_sid) == len(holds)  # semantic IDs are unique
    for sid in answered:
        assert await store.item_for_sid(version, sid) == by_sid.get(sid)
    written = [i for i in holds if i not in CATALOG_ENTRY or holds[i].vq]
    assert await store.get_many(version, written) == [holds[i] for i in written]
    for rq in {r.rq for r in holds.values()} | {rq for _, rq in (x for b in batches for x in b)}:
        for level in range(1, len(rq) + 1):
            found = sorted((r.sid, i) for i, r in holds.items() if r.rq[:level] == rq[:level])
            members = [i for _, i in found]  # in the text order of their semantic IDs
            assert await store.items_for_prefix(version, rq[:level], 100) == members


async def test_a_batch_of_a_thousand_ids_spread_over_every_slot(store: Store) -> None:
    """On a cluster the ids' records live on every master: one read still answers them all,
    in order, with the missing ones as None."""
    ids = [f"many-{n}" for n in range(1000)]
    await store.write("v1", [new(i, (n % 8, n % 5, n % 3)) for n, i in enumerate(ids)])
    asked = [*ids[::-1], "never-written"]
    got = await store.get_many("v1", asked)
    assert [g.item_id if g is not None else None for g in got] == [*ids[::-1], None]
    assert len(await store.items_for_prefix("v1", [3], 1000)) == 125


async def test_activation_seeds_once(store: Store) -> None:
    await store.write("v1", [new("x", (1, 2, 3))])  # suffix 2
    await store.activate("v1", CATALOG, seed_lookups=True)  # again: must not reset counters
    assert (await store.write("v1", [new("y", (1, 2, 3))]))[0].suffix == 3


@pytest.mark.usefixtures("store")  # v1 activated and seeded
async def test_concurrent_writers_never_share_a_suffix(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """32 writers over 4 store clients (4 connections / pools), all on one tuple."""
    clients = [open_one(store_kind, tmp_path, request) for _ in range(4)]
    for c in clients:  # each as a process that loaded the bundle
        c.attach("v1", CATALOG)
    try:
        out = await asyncio.gather(
            *(clients[i % 4].write("v1", [new(f"p{i}", (1, 2, 3))]) for i in range(32))
        )
    finally:
        for c in clients:
            await c.close()
    suffixes = sorted(r[0].suffix for r in out)
    assert suffixes == list(range(2, 34))  # the catalog holds 0 and 1


@pytest.mark.parametrize("store_kind", ["redis", "cluster"])
async def test_redis_layout_is_as_documented(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Read Redis the way docs/store.md tells a ranking server to, without this code: the
    active version, its parameters, an item's record (whose id holds a ':'), a semantic ID's
    item, a prefix's items, a counter, and the row -> id map that turns VQ codes into ids."""
    s = open_one(store_kind, tmp_path, request)
    assert isinstance(s, RedisStore)
    prefix = s.keys.prefix
    try:
        await s.activate("v9", CATALOG, seed_lookups=True)
        await s.write("v9", [new("item:1", (1, 2, 3), (3, 0))])
    finally:
        await s.close()
    url = request.getfixturevalue("redis_cluster_url" if s.cluster else "redis_url")
    r: Any = redis.RedisCluster.from_url(url) if s.cluster else redis.Redis.from_url(url)
    try:
        version = r.get(f"{prefix}:active").decode()
        assert version == "v9"
        params = {k.decode(): int(v) for k, v in r.hgetall(f"{prefix}:{version}:params").items()}
        assert params == {
            "layout": 2, "levels": 3, "centroids": 8, "k": 2, "dim": 4, "rows": 4,
            "rows_per_key": 1000, "item_buckets": 65536, "index_levels": 2,
        }  # fmt: skip
        bucket = zlib.crc32(b"item:1") % params["item_buckets"]
        value = r.hget(f"{prefix}:{version}:i:{bucket}", "item:1")
        fmt, n_rq, n_vq, suffix = struct.unpack_from("<BBHI", value, 0)
        assert (fmt, n_rq, n_vq, suffix) == (1, 3, 2, 2)
        assert struct.unpack_from("<3H", value, 8) == (1, 2, 3)
        vq = struct.unpack_from("<2I", value, 8 + 2 * 3)
        per_key = params["rows_per_key"]
        rows = {c: r.get(f"{prefix}:{version}:r:{c}").decode().split("\n") for c in {0}}
        assert [rows[v // per_key][v % per_key] for v in vq] == ["c3", "c0"]
        sid = "1-2-3-2"
        entries = r.zrangebylex(f"{prefix}:{version}:x:1-2", f"[{sid} ", f"({sid}!")
        assert entries == [b"1-2-3-2 item:1"]
        by_prefix = r.zrangebylex(f"{prefix}:{version}:x:1-2", "[1-2-", "(1-2.")
        assert [e.decode().split(" ", 1)[1] for e in by_prefix] == ["c0", "c1", "item:1"]
        assert r.hget(f"{prefix}:{version}:c:1-2", "1-2-3") == b"3"
    finally:
        r.close()


@pytest.mark.parametrize("store_kind", ["cluster"])
async def test_a_cluster_write_cut_between_slots_leaves_nothing_a_reader_would_believe(
    store: Store, monkeypatch: pytest.MonkeyPatch, store_kind: str
) -> None:
    """A cluster write spans slots, so it runs in phases (new reverse entries, records, old
    entries). Cut after each phase, the entries left behind are real keys in Redis, yet no
    lookup answers one that the item's record contradicts."""
    assert isinstance(store, RedisStore)
    assert store_kind == "cluster"
    (first,) = await store.write("v1", [new("m", (1, 5, 9))])
    in_order = store._in_order

    async def cut_after(done: int, what: str, steps: Any) -> None:
        await in_order(what, steps[:done])
        raise StoreError("redis write: ConnectionError: the node went away")

    async def entries(bucket: str) -> list[bytes]:
        found: Any = await store._redis.zrange(store.keys.index("v1", bucket), 0, -1)
        return list(found)

    # Cut after the new entry: the record still holds the old codes.
    monkeypatch.setattr(store, "_in_order", lambda w, s: cut_after(1, w, s))
    with pytest.raises(StoreError):
        await store.write("v1", [new("m", (7, 1, 1))])
    assert await entries("7-1") == [b"7-1-1-0 m"]
    assert await store.get_many("v1", ["m"]) == [first]
    assert await store.item_for_sid("v1", "7-1-1-0") is None
    assert await store.items_for_prefix("v1", [7, 1], 10) == []
    assert await store.item_for_sid("v1", first.sid) == "m"

    # Cut after the record: the old entry is still in Redis, the record has moved on.
    monkeypatch.setattr(store, "_in_order", lambda w, s: cut_after(2, w, s))
    with pytest.raises(StoreError):
        await store.write("v1", [new("m", (7, 1, 1))])
    (moved,) = await store.get_many("v1", ["m"])
    assert moved is not None
    assert moved.sid == "7-1-1-1"
    assert b"1-5-9-0 m" in await entries("1-5")
    assert await store.item_for_sid("v1", first.sid) is None
    assert await store.items_for_prefix("v1", [1, 5], 10) == ["c2"]
    assert await store.item_for_sid("v1", "7-1-1-1") == "m"
    assert await store.items_for_prefix("v1", [7], 10) == ["m", "c3"]

    # Whole again: writes that are not cut answer and keep the suffix.
    monkeypatch.setattr(store, "_in_order", in_order)
    assert await store.write("v1", [new("m", (7, 1, 1))]) == [moved]


@pytest.mark.parametrize("store_kind", ["redis"])
async def test_redis_that_lost_its_data_is_seeded_again(
    store: Store, redis_url: str, redis_prefix: str, store_kind: str
) -> None:
    assert store_kind == "redis"
    await store.write("v1", [new("x", (1, 2, 3))])  # suffix 2
    r = redis.Redis.from_url(redis_url)
    try:
        r.delete(*r.scan_iter(match=f"{redis_prefix}:*"))  # as if Redis restarted empty
    finally:
        r.close()
    out = await store.write("v1", [new("y", (1, 2, 3))])
    assert out[0].suffix == 2  # after the catalog's 0 and 1, not 0 again
    assert await store.item_for_sid("v1", "1-2-3-1") == "c1"
    assert await store.active_version() == "v1"


@settings(max_examples=50, deadline=None)
@given(
    codes=st.lists(
        st.tuples(
            st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3),
            st.lists(st.integers(0, 2**16 - 1), min_size=2, max_size=2),
            st.integers(0, 2**32 - 1),
        ),
        max_size=20,
    )
)
def test_decoding_many_values_at_once_is_decoding_each(
    codes: list[tuple[list[int], list[int], int]],
) -> None:
    ids = [f"i{n}" for n in range(len(codes))]
    values = [
        encode_value(StoredCodes(i, tuple(vq), tuple(rq), s))
        for i, (vq, rq, s) in zip(ids, codes, strict=True)
    ]
    many = decode_values(ids, values)
    one = [decode_value(i, v) for i, v in zip(ids, values, strict=True)]
    assert many.suffix == [c.suffix for c in one]
    assert many.rq == [list(c.rq) for c in one]
    assert many.vq == [list(c.vq) for c in one]


def test_decoding_many_values_names_the_item_of_a_bad_one() -> None:
    good = encode_value(StoredCodes("a", (1, 2), (3,), 0))
    with pytest.raises(StoreError, match="value of item 'b': format 2"):
        decode_values(["a", "b"], [good, b"\x02" + good[1:]])


def test_a_value_too_short_to_hold_a_header_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="shorter than a header"):
        decode_value("x", b"\x01")


async def test_more_concurrent_calls_than_pooled_connections_wait_their_turn(
    redis_url: str, redis_prefix: str
) -> None:
    """A busy pool is not a dead Redis: callers queue for a connection instead of failing."""
    store = RedisStore(redis_url, prefix=redis_prefix, pool_size=2, timeout_s=5.0)
    try:
        await asyncio.gather(*(store.ping() for _ in range(40)))
    finally:
        await store.close()


async def test_redis_keeps_only_the_active_and_the_previous_catalog(
    redis_url: str, redis_prefix: str
) -> None:
    """Catalogs are kept to re-seed a Redis that lost its data; reloads must not pile them up."""
    store = RedisStore(redis_url, prefix=redis_prefix, pool_size=4, timeout_s=5.0)
    try:
        for version in ("v1", "v2", "v3", "v4", "v5"):
            await store.activate(version, CATALOG, seed_lookups=False)
        assert list(store._catalogs) == ["v2", "v3", "v4", "v5"]
    finally:
        await store.close()


async def test_sqlite_seeds_in_chunks_and_answers_between_them(tmp_path: Path) -> None:
    """A reload of a big catalog must not hold reads back until the whole seed is in: with one
    item per chunk, a read queued during activation is answered before activation ends, and
    every catalog item is still found by semantic ID and by prefix afterwards."""
    n = 60
    rng = np.random.default_rng(0)
    catalog = CatalogSeed(
        item_ids=np.array([f"i{k}" for k in range(n)]),
        rq_codes=rng.integers(0, 3, size=(n, 3)).astype(np.int32),
        sid_suffix=np.arange(n, dtype=np.int32),
    )
    store = SqliteStore(tmp_path / "s.sqlite3", seed_chunk=1)
    await store.activate("v1", CATALOG, seed_lookups=True)
    await store.write("v1", [new("a", (0, 0, 1))])
    activation = asyncio.create_task(store.activate("v2", catalog, seed_lookups=True))
    await asyncio.sleep(0)  # let activation queue its first chunk
    assert await store.get_many("v1", ["a"]) != [None]
    assert await store.active_version() == "v1"
    assert not activation.done()
    await activation
    assert await store.active_version() == "v2"
    for k in range(n):
        rq = tuple(int(c) for c in catalog.rq_codes[k])
        assert await store.item_for_sid("v2", format_sid(rq, k)) == f"i{k}"
        assert f"i{k}" in await store.items_for_prefix("v2", rq[:1], limit=n)
    await store.close()


async def test_lifecycle_stage_promote_rollback_retire(store: Store) -> None:
    await store.write("v1", [new("a", (0, 0, 1))])
    await store.stage("v2", "/bundles/v2", CATALOG)
    life = await store.lifecycle()
    assert life.active == "v1"
    assert life.versions["v2"].state == "staged"
    assert life.versions["v2"].bundle == "/bundles/v2"
    assert life.written() == ["v2"]
    # staging seeds the counters only: a catalog tuple's new item continues after it
    assert (await store.write("v2", [new("n", (1, 2, 3))]))[0].suffix == 2

    assert await store.promote("v2", "/bundles/v2") == "v1"
    life = await store.lifecycle()
    assert (life.active, life.versions["v2"].state, life.versions["v1"].state) == (
        "v2",
        "active",
        "inactive",
    )
    assert life.written() == ["v1"]  # the previous version stays current for a rollback

    with pytest.raises(LifecycleError, match="active"):
        await store.retire("v2", batch=10, max_keys_per_s=1e6)
    with pytest.raises(LifecycleError, match="active"):
        await store.stage("v2", "/bundles/v2", CATALOG)
    assert await store.promote("v1", "") == "v2"  # rollback
    assert (await store.get_many("v1", ["a"]))[0] is not None

    deleted = await store.retire("v2", batch=2, max_keys_per_s=1e6)
    assert deleted > 0
    assert await store.get_many("v2", ["n"]) == [None]
    assert await store.item_for_sid("v2", "1-2-3-2") is None
    assert (await store.lifecycle()).versions["v2"].state == "retired"
    assert (await store.get_many("v1", ["a"]))[0] is not None  # other versions untouched
    with pytest.raises(LifecycleError, match="retired"):
        await store.promote("v2", "")


async def test_retire_refuses_a_staged_version(store: Store) -> None:
    await store.stage("v2", "", CATALOG)
    with pytest.raises(LifecycleError, match="staged"):
        await store.retire("v2", batch=10, max_keys_per_s=1e6)


async def test_ids_reports_and_heartbeats(store: Store) -> None:
    ids = [f"i{n:03d}" for n in range(25)]
    await store.write("v1", [new(i, (0, 1, n % 4)) for n, i in enumerate(ids)])
    chunks = [c async for c in store.ids("v1", chunk=10)]
    assert sorted(i for c in chunks for i in c) == ids
    assert [c async for c in store.ids("v9")] == []

    assert await store.report("v1") is None
    await store.set_report("v1", '{"items": 25}')
    assert await store.report("v1") == '{"items": 25}'

    now = time.time()
    await store.heartbeat(PodInfo("p1", "v1", ("v2",), now), ttl_s=60)
    await store.heartbeat(PodInfo("p2", "v1", (), now - 120), ttl_s=60)  # lapsed
    assert await store.pods() == [PodInfo("p1", "v1", ("v2",), now)]


async def test_an_announcement_wakes_a_watcher(store: Store, store_kind: str) -> None:
    watch = await store.watch()
    try:
        if store_kind == "sqlite":  # no announcements: the watcher polls
            assert await watch.wait(0.05) is False
            return
        assert await watch.wait(0.05) is False
        await store.stage("v2", "", CATALOG)
        assert await watch.wait(5.0) is True
    finally:
        await watch.close()
