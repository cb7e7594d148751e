"""What every store keeps, how a value is encoded, and how suffixes are decided.

The key schema and the value encoding are documented in docs/store.md; a ranking server can
read them without this code. Both stores (Redis, SQLite) share everything here and differ only
in how they read, allocate and write.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FORMAT = 1  # first byte of every value; bumped if the layout ever changes
_HEADER = struct.Struct("<BBHI")  # format, L, K, suffix


@dataclass(frozen=True)
class StoredCodes:
    """An item's codes under one bundle version, as stored."""

    item_id: str
    vq: tuple[int, ...]
    rq: tuple[int, ...]
    suffix: int

    @property
    def sid(self) -> str:
        return sid_of(self.rq, self.suffix)


@dataclass(frozen=True)
class NewCodes:
    """Codes the batcher computed for an item; the store decides its suffix.

    `catalog` is the item's (RQ tuple, suffix) in the bundle when it is a catalog item: it
    keeps that suffix while its tuple stays the same.
    """

    item_id: str
    vq: tuple[int, ...]
    rq: tuple[int, ...]
    catalog: tuple[tuple[int, ...], int] | None = None


@dataclass(frozen=True)
class Catalog:
    """A bundle's catalog, for seeding a version: ids, (N, L) RQ codes, (N,) suffixes."""

    item_ids: npt.NDArray[np.str_]
    rq_codes: npt.NDArray[np.int32]
    sid_suffix: npt.NDArray[np.int32]


class StoreError(RuntimeError):
    """The store could not be reached or failed; nothing of the operation is acknowledged."""


def codes_key(codes: Sequence[int]) -> str:
    """RQ codes (a full tuple or a prefix) as they appear in keys: `12-0-255`."""
    return "-".join(str(int(c)) for c in codes)


def sid_of(rq: Sequence[int], suffix: int) -> str:
    return f"{codes_key(rq)}-{suffix}"


def encode_value(codes: StoredCodes) -> bytes:
    """Little-endian: u8 format=1, u8 L, u16 K, u32 suffix, L x u16 RQ, K x u32 VQ."""
    n_rq, n_vq = len(codes.rq), len(codes.vq)
    return (
        _HEADER.pack(FORMAT, n_rq, n_vq, codes.suffix)
        + struct.pack(f"<{n_rq}H", *codes.rq)
        + struct.pack(f"<{n_vq}I", *codes.vq)
    )


def decode_value(item_id: str, value: bytes) -> StoredCodes:
    if len(value) < _HEADER.size:
        raise StoreError(f"value of item {item_id!r}: {len(value)} bytes, shorter than a header")
    fmt, n_rq, n_vq, suffix = _HEADER.unpack_from(value, 0)
    if fmt != FORMAT or len(value) != _HEADER.size + 2 * n_rq + 4 * n_vq:
        raise StoreError(f"value of item {item_id!r}: format {fmt}, {len(value)} bytes: unknown")
    rq = struct.unpack_from(f"<{n_rq}H", value, _HEADER.size)
    vq = struct.unpack_from(f"<{n_vq}I", value, _HEADER.size + 2 * n_rq)
    return StoredCodes(item_id, vq, rq, suffix)


@dataclass(frozen=True)
class Choice:
    """Per item of a write: keep suffix `keep`, or take allocation number `alloc`."""

    keep: int | None
    alloc: int | None


def plan_suffixes(
    items: Sequence[NewCodes], olds: dict[str, StoredCodes | None]
) -> tuple[list[Choice], list[tuple[int, ...]]]:
    """Decide which items keep a suffix and which need a new one (in batch order).

    An item keeps its suffix when its stored record (or, never written, its catalog entry)
    has the same RQ tuple; otherwise it takes the next free suffix of its tuple. An id that
    appears twice in one write sees its first occurrence. Returns the choices and the tuples
    to allocate for, one per `Choice.alloc`.
    """
    choices: list[Choice] = []
    allocs: list[tuple[int, ...]] = []
    pending: dict[tuple[str, tuple[int, ...]], int] = {}
    for item in items:
        old = previous(item, olds)
        if old is not None and old.rq == item.rq:
            choices.append(Choice(keep=old.suffix, alloc=None))
        elif (item.item_id, item.rq) in pending:
            choices.append(Choice(keep=None, alloc=pending[(item.item_id, item.rq)]))
        else:
            pending[(item.item_id, item.rq)] = len(allocs)
            choices.append(Choice(keep=None, alloc=len(allocs)))
            allocs.append(item.rq)
    return choices, allocs


def previous(item: NewCodes, olds: dict[str, StoredCodes | None]) -> StoredCodes | None:
    """The item's record before this write: stored, else its catalog entry, else None."""
    old = olds.get(item.item_id)
    if old is None and item.catalog is not None:
        rq, suffix = item.catalog
        old = StoredCodes(item.item_id, (), rq, suffix)
    return old


def resolve(
    items: Sequence[NewCodes],
    choices: Sequence[Choice],
    allocated: Sequence[int],
) -> list[StoredCodes]:
    """The records to answer with, one per item, from the choices and allocated suffixes."""
    out = []
    for item, choice in zip(items, choices, strict=True):
        suffix = choice.keep if choice.alloc is None else allocated[choice.alloc]
        assert suffix is not None
        out.append(StoredCodes(item.item_id, item.vq, item.rq, suffix))
    return out


def final_writes(
    items: Sequence[NewCodes], records: Sequence[StoredCodes], olds: dict[str, StoredCodes | None]
) -> list[tuple[StoredCodes, StoredCodes | None]]:
    """One (new record, record it replaces) per distinct id; the last occurrence wins."""
    last: dict[str, tuple[StoredCodes, StoredCodes | None]] = {}
    for item, record in zip(items, records, strict=True):
        last[item.item_id] = (record, previous(item, olds))
    return list(last.values())


def stale_prefixes(new: StoredCodes, old: StoredCodes | None) -> Iterator[tuple[int, ...]]:
    """Prefixes of `old` the item leaves (each level where old and new prefixes differ)."""
    if old is None:
        return
    for level in range(1, len(old.rq) + 1):
        if old.rq[:level] != new.rq[:level]:
            yield old.rq[:level]


def prefixes(rq: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    for level in range(1, len(rq) + 1):
        yield rq[:level]


def seed_counters(catalog: Catalog) -> dict[str, int]:
    """Per distinct catalog tuple: the next free suffix (its largest suffix + 1)."""
    if len(catalog.rq_codes) == 0:
        return {}
    tuples, inverse = np.unique(catalog.rq_codes, axis=0, return_inverse=True)
    top = np.full(len(tuples), -1, dtype=np.int64)
    np.maximum.at(top, inverse.reshape(-1), catalog.sid_suffix.astype(np.int64))
    return {codes_key(t): int(m) + 1 for t, m in zip(tuples.tolist(), top.tolist(), strict=True)}


class Store(ABC):
    """Codes per bundle version, an active-version pointer, suffix counters, reverse lookups."""

    kind: str

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    @abstractmethod
    async def active_version(self) -> str | None: ...

    @abstractmethod
    async def activate(self, version: str, catalog: Catalog, *, seed_lookups: bool) -> None:
        """Seed `version` from its catalog once (suffix counters; with `seed_lookups` also the
        catalog's semantic IDs and prefix sets), then point readers at it."""

    @abstractmethod
    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        """Allocate suffixes and write every item with its reverse entries, all or nothing;
        answer the stored records in item order."""

    @abstractmethod
    async def get_many(self, version: str, ids: Sequence[str]) -> list[StoredCodes | None]: ...

    @abstractmethod
    async def item_for_sid(self, version: str, sid: str) -> str | None: ...

    @abstractmethod
    async def items_for_prefix(
        self, version: str, prefix: Sequence[int], limit: int
    ) -> list[str]: ...

    @abstractmethod
    async def close(self) -> None: ...
