"""The embedded store: one SQLite file in WAL mode, durable (synchronous=FULL).

Every operation runs on one dedicated thread that owns the connection, never on the event loop.
A write is one `BEGIN IMMEDIATE` transaction: it reads the items' records, allocates suffixes
from the tuple counters, and writes records, semantic IDs and prefix rows, so two writers (even
two processes on the same file) never share a suffix. Values are the same bytes as in Redis.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

from store.base import (
    Catalog,
    NewCodes,
    Store,
    StoredCodes,
    StoreError,
    codes_key,
    decode_value,
    encode_value,
    final_writes,
    plan_suffixes,
    prefixes,
    resolve,
    seed_counters,
    sid_of,
    stale_prefixes,
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
CREATE TABLE IF NOT EXISTS prefixes (
    version TEXT NOT NULL, prefix TEXT NOT NULL, item_id TEXT NOT NULL,
    PRIMARY KEY (version, prefix, item_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    version TEXT NOT NULL, tuple TEXT NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (version, tuple));
CREATE TABLE IF NOT EXISTS seeded (version TEXT PRIMARY KEY);
"""


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

    async def activate(self, version: str, catalog: Catalog, *, seed_lookups: bool) -> None:
        """Seed the version's counters, then its lookups chunk by chunk (each chunk its own
        transaction, idempotent), then mark it seeded and active. A seed cut short is redone at
        the next activation: nothing marks the version seeded before every chunk is in."""

        def seeded(c: sqlite3.Connection) -> bool:
            return bool(c.execute("SELECT 1 FROM seeded WHERE version = ?", (version,)).fetchone())

        def seed_counters_(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                c.executemany(
                    "INSERT OR IGNORE INTO counters VALUES (?, ?, ?)",
                    ((version, t, n) for t, n in seed_counters(catalog).items()),
                )

        def finish(c: sqlite3.Connection) -> None:
            with _Transaction(c):
                c.execute("INSERT OR IGNORE INTO seeded VALUES (?)", (version,))
                c.execute("INSERT OR REPLACE INTO meta VALUES ('active', ?)", (version,))

        if not await self._run("activate", seeded):
            await self._run("activate", seed_counters_)
            if seed_lookups:
                for start in range(0, len(catalog.item_ids), self.seed_chunk):
                    rows = slice(start, start + self.seed_chunk)
                    seed = partial(_seed_lookups, version=version, catalog=catalog, rows=rows)
                    await self._run("activate", seed)
        await self._run("activate", finish)

    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        def write(c: sqlite3.Connection) -> list[StoredCodes]:
            with _Transaction(c):
                olds: dict[str, StoredCodes | None] = {}
                for item_id in dict.fromkeys(i.item_id for i in items):
                    row = c.execute(
                        "SELECT value FROM items WHERE version = ? AND item_id = ?",
                        (version, item_id),
                    ).fetchone()
                    olds[item_id] = decode_value(item_id, row[0]) if row else None
                choices, allocs = plan_suffixes(items, olds)
                allocated = [
                    int(
                        c.execute(
                            "INSERT INTO counters VALUES (?, ?, 1) ON CONFLICT (version, tuple) "
                            "DO UPDATE SET next = next + 1 RETURNING next",
                            (version, codes_key(rq)),
                        ).fetchone()[0]
                    )
                    - 1
                    for rq in allocs
                ]
                records = resolve(items, choices, allocated)
                for new, old in final_writes(items, records, olds):
                    c.execute(
                        "INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                        (version, new.item_id, encode_value(new)),
                    )
                    if old is not None and (old.rq, old.suffix) != (new.rq, new.suffix):
                        c.execute(
                            "DELETE FROM sids WHERE version = ? AND sid = ?", (version, old.sid)
                        )
                    c.executemany(
                        "DELETE FROM prefixes WHERE version = ? AND prefix = ? AND item_id = ?",
                        ((version, codes_key(p), new.item_id) for p in stale_prefixes(new, old)),
                    )
                    c.execute(
                        "INSERT OR REPLACE INTO sids VALUES (?, ?, ?)",
                        (version, new.sid, new.item_id),
                    )
                    c.executemany(
                        "INSERT OR IGNORE INTO prefixes VALUES (?, ?, ?)",
                        ((version, codes_key(p), new.item_id) for p in prefixes(new.rq)),
                    )
                return records

        return await self._run("write", write)

    async def get_many(self, version: str, ids: Sequence[str]) -> list[StoredCodes | None]:
        def get(c: sqlite3.Connection) -> list[StoredCodes | None]:
            found: dict[str, bytes] = {}
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), 500):  # SQLite caps the bound parameters
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = c.execute(
                    f"SELECT item_id, value FROM items WHERE version = ? AND item_id IN ({marks})",
                    (version, *chunk),
                )
                found.update((str(r[0]), bytes(r[1])) for r in rows)
            return [decode_value(i, found[i]) if i in found else None for i in ids]

        return await self._run("get", get)

    async def item_for_sid(self, version: str, sid: str) -> str | None:
        def get(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT item_id FROM sids WHERE version = ? AND sid = ?", (version, sid)
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run("sid lookup", get)

    async def items_for_prefix(self, version: str, prefix: Sequence[int], limit: int) -> list[str]:
        def get(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT item_id FROM prefixes WHERE version = ? AND prefix = ? "
                "ORDER BY item_id LIMIT ?",
                (version, codes_key(prefix), limit),
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


def _seed_lookups(c: sqlite3.Connection, version: str, catalog: Catalog, rows: slice) -> None:
    """The semantic-ID and prefix rows of catalog items `rows`, in one transaction."""
    items = zip(
        catalog.item_ids[rows].tolist(),
        catalog.rq_codes[rows].tolist(),
        catalog.sid_suffix[rows].tolist(),
        strict=True,
    )
    with _Transaction(c):
        for item_id, rq, suffix in items:
            sid = sid_of(rq, suffix)
            c.execute("INSERT OR IGNORE INTO sids VALUES (?, ?, ?)", (version, sid, item_id))
            c.executemany(
                "INSERT OR IGNORE INTO prefixes VALUES (?, ?, ?)",
                ((version, codes_key(p), item_id) for p in prefixes(tuple(rq))),
            )
