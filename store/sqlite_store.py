"""The embedded store: one SQLite file in WAL mode, durable (synchronous=FULL).

Every operation runs on one dedicated thread that owns the connection, never on the event loop.
A write is one `BEGIN IMMEDIATE` transaction: it reads the items' records, allocates suffixes
from the tuple counters, and writes records and semantic IDs, so two writers (even two processes
on the same file) never share a suffix. Prefix lookups are range scans over the semantic IDs'
text, the order Redis keeps them in. Values are the same bytes as in Redis.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar, assert_never

from codebooks.sid import codes_key
from store.base import (
    CatalogSeed,
    DropSid,
    Lifecycle,
    NewCodes,
    Op,
    PodInfo,
    PutItem,
    PutSid,
    SeedCounter,
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
    prefix_range,
    seed_counter_ops,
    seed_lookup_ops,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    version TEXT NOT NULL, item_id TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (version, item_id));
CREATE TABLE IF NOT EXISTS sids (
    version TEXT NOT NULL, sid TEXT NOT NULL, item_id TEXT NOT NULL,
    PRIMARY KEY (version, sid));
CREATE TABLE IF NOT EXISTS counters (
    version TEXT NOT NULL, tuple TEXT NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (version, tuple));
CREATE TABLE IF NOT EXISTS seeded (version TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS versions (
    version TEXT PRIMARY KEY, state TEXT NOT NULL, bundle TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pods (pod TEXT PRIMARY KEY, info TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (version TEXT PRIMARY KEY, text TEXT NOT NULL);
"""

# Tables holding a version's codes, emptied by `retire`.
VERSION_TABLES = ("items", "sids", "counters", "seeded", "reports")


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: Path, seed_chunk: int = 2000) -> None:
        """`seed_chunk`: catalog items seeded per transaction at activation, so reads and writes
        queued on the store's one thread are answered between chunks, not after the whole seed."""
        self.path = path
        self.seed_chunk = seed_chunk
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qarm-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                self._conn = _connect(self.path)
            return fn(self._conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.Error as err:
            raise StoreError(f"sqlite {what} ({self.path}): {err}") from err

    async def ping(self) -> None:
        await self._run("ping", lambda c: c.execute("SELECT 1").fetchone())

    async def active_version(self) -> str | None:
        def get(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = 'active'").fetchone()
            return str(row[0]) if row else None

        return await self._run("active version", get)

    def attach(self, version: str, catalog: CatalogSeed, *, seed_lookups: bool = False) -> None:
        """Nothing to keep: SQLite seeds a version's counters when it is staged or activated,
        and never loses them apart from its file."""
        del version, catalog, seed_lookups

    async def _seed_once(self, version: str, catalog: CatalogSeed, seed_lookups: bool) -> None:
        """Seed the version's counters, then its lookups chunk by chunk (each chunk its own
        transaction, idempotent), then mark it seeded. A seed cut short is redone next time:
        nothing marks the version seeded before every chunk is in."""

        def seeded(c: sqlite3.Connection) -> bool:
            return bool(c.execute("SELECT 1 FROM seeded WHERE version = ?", (version,)).fetchone())

        def seed_counters_(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                _execute(c, version, seed_counter_ops(catalog))

        def finish(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                c.execute("INSERT OR IGNORE INTO seeded VALUES (?)", (version,))

        if await self._run("seed", seeded):
            return
        await self._run("seed", seed_counters_)
        if seed_lookups:
            for start in range(0, len(catalog.item_ids), self.seed_chunk):
                rows = slice(start, start + self.seed_chunk)
                seed = partial(_seed_lookups, version=version, catalog=catalog, rows=rows)
                await self._run("seed", seed)
        await self._run("seed", finish)

    async def _set_state(self, version: str, state: VersionState, bundle: str) -> None:
        await self._run(state, partial(_write_state, version=version, state=state, bundle=bundle))

    async def promote(self, version: str, bundle: str) -> str | None:
        def promote(c: sqlite3.Connection) -> str | None:
            with _Transaction(c):
                lifecycle = _lifecycle(c)
                check_promotable(lifecycle, version)
                previous = lifecycle.active
                now = time.time()
                c.execute("INSERT OR REPLACE INTO meta VALUES ('active', ?)", (version,))
                c.execute(
                    "INSERT OR REPLACE INTO versions VALUES (?, 'active', ?, ?)",
                    (version, bundle, now),
                )
                if previous is not None and previous != version:
                    c.execute(
                        "UPDATE versions SET state = 'inactive', at = ? WHERE version = ?",
                        (now, previous),
                    )
                return previous

        return await self._run("promote", promote)

    async def _delete_version(self, version: str, *, batch: int, max_keys_per_s: float) -> int:
        deleted = 0
        for table in VERSION_TABLES:
            while True:
                start = time.perf_counter()
                delete = partial(_delete_some, table=table, version=version, limit=batch)
                n = await self._run("retire", delete)
                deleted += n
                if n < batch:
                    break
                await asyncio.sleep(max(0.0, n / max_keys_per_s - (time.perf_counter() - start)))
        return deleted

    async def lifecycle(self) -> Lifecycle:
        return await self._run("lifecycle", _lifecycle)

    async def watch(self) -> Watch:
        return _PollingWatch()

    async def heartbeat(self, pod: PodInfo, ttl_s: float) -> None:
        def put(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                c.execute(
                    "INSERT OR REPLACE INTO pods VALUES (?, ?, ?)",
                    (pod.pod, pod.to_json(), pod.at + ttl_s),
                )

        await self._run("heartbeat", put)

    async def pods(self) -> list[PodInfo]:
        def get(c: sqlite3.Connection) -> list[PodInfo]:
            now = time.time()
            with _Transaction(c):
                c.execute("DELETE FROM pods WHERE until < ?", (now,))
                rows = c.execute("SELECT pod, info FROM pods ORDER BY pod").fetchall()
            return [PodInfo.from_json(str(r[0]), str(r[1])) for r in rows]

        return await self._run("pods", get)

    async def set_report(self, version: str, text: str) -> None:
        def put(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                c.execute("INSERT OR REPLACE INTO reports VALUES (?, ?)", (version, text))

        await self._run("report", put)

    async def report(self, version: str) -> str | None:
        def get(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT text FROM reports WHERE version = ?", (version,)).fetchone()
            return str(row[0]) if row else None

        return await self._run("report", get)

    async def ids(self, version: str, chunk: int = 1000) -> AsyncIterator[list[str]]:
        last = ""
        while True:
            page = partial(_ids_after, version=version, after=last, limit=chunk)
            found = await self._run("ids", page)
            if not found:
                return
            yield found
            last = found[-1]

    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        def write(c: sqlite3.Connection) -> list[StoredCodes]:
            with _Transaction(c):
                found = _values(c, version, distinct_ids(items))
                plan = WritePlan.of(items, {i: decode_value(i, v) for i, v in found.items()})
                allocated = [
                    int(
                        c.execute(
                            "INSERT INTO counters VALUES (?, ?, 1) ON CONFLICT (version, tuple) "
                            "DO UPDATE SET next = next + 1 RETURNING next",
                            (version, codes_key(rq)),
                        ).fetchone()[0]
                    )
                    - 1
                    for rq in plan.allocs
                ]
                records, ops = plan.finish(allocated)
                _execute(c, version, ops)
                return records

        return await self._run("write", write)

    async def get_values(self, version: str, ids: Sequence[str]) -> list[bytes | None]:
        def get(c: sqlite3.Connection) -> list[bytes | None]:
            found = _values(c, version, list(dict.fromkeys(ids)))
            return [found.get(i) for i in ids]

        return await self._run("get", get)

    async def item_for_sid(self, version: str, sid: str) -> str | None:
        def get(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT item_id FROM sids WHERE version = ? AND sid = ?", (version, sid)
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run("sid lookup", get)

    async def items_for_prefix(self, version: str, prefix: Sequence[int], limit: int) -> list[str]:
        low, high = prefix_range(prefix)

        def get(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT item_id FROM sids WHERE version = ? AND sid >= ? AND sid < ? "
                "ORDER BY sid LIMIT ?",
                (version, low, high, limit),
            )
            return [str(r[0]) for r in rows]

        return await self._run("prefix lookup", get)

    async def close(self) -> None:
        def close(c: sqlite3.Connection) -> None:
            c.close()

        if self._conn is not None:
            await self._run("close", close)
            self._conn = None
        self._thread.shutdown(wait=True)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (then re-raised)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:  # disk full, I/O error: never leave the connection mid-transaction
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


class _PollingWatch(Watch):
    """SQLite announces nothing: a follower waits out its poll interval and reads again."""

    async def wait(self, timeout_s: float) -> bool:
        await asyncio.sleep(timeout_s)
        return False

    async def close(self) -> None:
        return None


def _lifecycle(c: sqlite3.Connection) -> Lifecycle:
    active = c.execute("SELECT value FROM meta WHERE key = 'active'").fetchone()
    rows = c.execute("SELECT version, state, bundle, at FROM versions").fetchall()
    return Lifecycle(
        active=str(active[0]) if active else None,
        versions={str(r[0]): VersionInfo(str(r[0]), r[1], str(r[2]), float(r[3])) for r in rows},
    )


def _write_state(c: sqlite3.Connection, version: str, state: VersionState, bundle: str) -> None:
    with _Transaction(c):
        c.execute(
            "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)",
            (version, state, bundle, time.time()),
        )


def _delete_some(c: sqlite3.Connection, table: str, version: str, limit: int) -> int:
    """Up to `limit` rows of `version` from `table`, in one transaction."""
    key = {"items": "item_id", "sids": "sid", "counters": "tuple"}
    with _Transaction(c):
        if table in key:
            cols = key[table]
            cursor = c.execute(
                f"DELETE FROM {table} WHERE version = ? AND ({cols}) IN "
                f"(SELECT {cols} FROM {table} WHERE version = ? LIMIT ?)",
                (version, version, limit),
            )
        else:
            cursor = c.execute(f"DELETE FROM {table} WHERE version = ?", (version,))
        return int(cursor.rowcount)


def _ids_after(c: sqlite3.Connection, version: str, after: str, limit: int) -> list[str]:
    rows = c.execute(
        "SELECT item_id FROM items WHERE version = ? AND item_id > ? ORDER BY item_id LIMIT ?",
        (version, after, limit),
    )
    return [str(r[0]) for r in rows]


def _seed_lookups(c: sqlite3.Connection, version: str, catalog: CatalogSeed, rows: slice) -> None:
    """The semantic-ID rows of catalog items `rows`, in one transaction."""
    with _Transaction(c):
        _execute(c, version, seed_lookup_ops(catalog, rows))


def _values(c: sqlite3.Connection, version: str, ids: Sequence[str]) -> dict[str, bytes]:
    """The stored values of `ids` (distinct) under `version`, in one query (the ids travel as
    one JSON array, so no cap on bound parameters applies); a missing id is left out."""
    rows = c.execute(
        "SELECT item_id, value FROM items WHERE version = ? "
        "AND item_id IN (SELECT value FROM json_each(?))",
        (version, json.dumps(list(ids))),
    )
    return {str(r[0]): bytes(r[1]) for r in rows}


# One statement per operation type, executed in `WRITE_PHASES` order (inside one transaction
# the order only has to keep a moved item's new entry and its old one apart: they differ).
_PUT_SID = "INSERT OR REPLACE INTO sids VALUES (?, ?, ?)"
_PUT_ITEM = "INSERT OR REPLACE INTO items VALUES (?, ?, ?)"
_DROP_SID = "DELETE FROM sids WHERE version = ? AND sid = ? AND item_id = ?"
_SEED_SID = "INSERT OR IGNORE INTO sids VALUES (?, ?, ?)"
_SEED_COUNTER = "INSERT OR IGNORE INTO counters VALUES (?, ?, ?)"
_IN_ORDER = (_PUT_SID, _PUT_ITEM, _DROP_SID, _SEED_SID, _SEED_COUNTER)


def _execute(c: sqlite3.Connection, version: str, ops: Iterable[Op]) -> None:
    """Execute `ops` under `version` inside the caller's transaction: one `executemany` per
    operation type."""
    rows: dict[str, list[tuple[str | int | bytes, ...]]] = {sql: [] for sql in _IN_ORDER}
    for op in ops:
        match op:
            case PutSid(sid, item_id):
                rows[_PUT_SID].append((version, sid, item_id))
            case PutItem(item_id, value):
                rows[_PUT_ITEM].append((version, item_id, value))
            case DropSid(sid, item_id):
                rows[_DROP_SID].append((version, sid, item_id))
            case SeedSid(sid, item_id):
                rows[_SEED_SID].append((version, sid, item_id))
            case SeedCounter(tuple_key, next_free):
                rows[_SEED_COUNTER].append((version, tuple_key, next_free))
            case _:
                assert_never(op)
    for sql, params in rows.items():
        if params:
            c.executemany(sql, params)
