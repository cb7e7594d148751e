"""What every store keeps, how a value is encoded, and how suffixes are decided.

The key schema and the value encoding are documented in docs/store.md; a ranking server can
read them without this code. Both stores (Redis, SQLite) share everything here: what a write or
a seed changes is decided here as typed operations (`PutItem`, `DropSid`, ...); a store only
reads, allocates suffixes and executes them.
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from codebooks.bundle import Bundle
from codebooks.metrics import tuple_keys
from codebooks.sid import codes_key, format_sid

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
        return format_sid(self.rq, self.suffix)


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
class CatalogSeed:
    """A bundle's catalog, for seeding a version: ids, (N, L) RQ codes, (N,) suffixes, and the
    version's parameters a direct reader needs (docs/store.md, "Parameters")."""

    item_ids: npt.NDArray[np.str_]
    rq_codes: npt.NDArray[np.int32]
    sid_suffix: npt.NDArray[np.int32]
    centroids: int = 0  # Nc; 0 where the caller does not know it (tests)
    k: int = 0  # K, VQ codes per item
    dim: int = 0  # d

    @classmethod
    def of(cls, bundle: Bundle) -> CatalogSeed:
        m = bundle.manifest
        return cls(bundle.item_ids, bundle.rq_codes, bundle.sid_suffix, m.centroids, m.k, m.dim)

    @property
    def levels(self) -> int:
        return int(self.rq_codes.shape[1]) if self.rq_codes.ndim == 2 else 0


class StoreError(RuntimeError):
    """The store could not be reached or failed; nothing of the operation is acknowledged."""


class LifecycleError(ValueError):
    """A lifecycle step the version's state does not allow (retire the active version, ...)."""


VersionState = Literal["staged", "active", "inactive", "retired"]


@dataclass(frozen=True)
class VersionInfo:
    """One bundle version in the store's registry.

    staged: being backfilled; uploads are written to it as well as to the active one.
    active: what readers get (`{P}:active`). inactive: was active, kept for rollback (the most
    recent one is still written with every upload). retired: its keys are gone.
    """

    version: str
    state: VersionState
    bundle: str  # the bundle's path as the process that staged or activated it saw it
    at: float  # epoch seconds of the last change of state

    def to_json(self) -> str:
        return json.dumps({"state": self.state, "bundle": self.bundle, "at": self.at})

    @classmethod
    def from_json(cls, version: str, text: str | bytes) -> VersionInfo:
        fields = json.loads(text)
        return cls(version, fields["state"], fields["bundle"], float(fields["at"]))


@dataclass(frozen=True)
class Lifecycle:
    """The registry at one moment: the active version and every version known."""

    active: str | None
    versions: dict[str, VersionInfo]

    def in_state(self, state: VersionState) -> list[str]:
        """Versions in `state`, most recently changed first."""
        found = [v for v in self.versions.values() if v.state == state]
        return [v.version for v in sorted(found, key=lambda v: v.at, reverse=True)]

    def written(self) -> list[str]:
        """Versions every upload is written to besides the active one: the staged ones and
        the most recent inactive one (so a rollback to it loses nothing)."""
        return self.in_state("staged") + self.in_state("inactive")[:1]


@dataclass(frozen=True)
class PodInfo:
    """What one service process last said it serves (heartbeat)."""

    pod: str
    active: str | None
    written: tuple[str, ...]  # versions it writes uploads to besides the active one
    at: float  # epoch seconds

    def to_json(self) -> str:
        return json.dumps({"active": self.active, "written": list(self.written), "at": self.at})

    @classmethod
    def from_json(cls, pod: str, text: str | bytes) -> PodInfo:
        f = json.loads(text)
        return cls(pod, f["active"], tuple(f["written"]), float(f["at"]))


class Watch(ABC):
    """A subscription to lifecycle announcements (stage, activate, retire)."""

    @abstractmethod
    async def wait(self, timeout_s: float) -> bool:
        """Return True at the next announcement, False after `timeout_s` without one (a
        store without announcements always waits: its readers poll)."""

    @abstractmethod
    async def close(self) -> None: ...


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
class DecodedValues:
    """Many values decoded at once, as plain lists (row i is the i-th value)."""

    suffix: list[int]
    rq: list[list[int]]
    vq: list[list[int]]


def decode_values(ids: Sequence[str], values: Sequence[bytes]) -> DecodedValues:
    """`decode_value` of many values at once: the hot path of batch reads. Values of one
    version share L and K, so they decode as one array; any value that does not (a corrupt
    or unknown one) is decoded alone, and refused naming its item as `decode_value` does."""
    if not values:
        return DecodedValues([], [], [])
    n_rq, n_vq = (
        _HEADER.unpack_from(values[0], 0)[1:3] if len(values[0]) >= _HEADER.size else (0, 0)
    )
    size = _HEADER.size + 2 * n_rq + 4 * n_vq
    blob = b"".join(values)
    rows = (
        np.frombuffer(blob, np.uint8).reshape(len(values), -1)
        if len(blob) == size * len(values)
        else None
    )
    header = np.array([FORMAT, n_rq, n_vq & 0xFF, n_vq >> 8], dtype=np.uint8)
    if rows is None or not (rows[:, :4] == header).all():
        one = [decode_value(i, v) for i, v in zip(ids, values, strict=True)]
        return DecodedValues(
            [c.suffix for c in one], [list(c.rq) for c in one], [list(c.vq) for c in one]
        )
    rq_end = _HEADER.size + 2 * n_rq
    return DecodedValues(
        suffix=rows[:, 4:8].copy().view("<u4").ravel().tolist(),
        rq=rows[:, 8:rq_end].copy().view("<u2").tolist(),
        vq=rows[:, rq_end:].copy().view("<u4").tolist(),
    )


@dataclass(frozen=True)
class Choice:
    """Per item of a write: keep suffix `keep`, or take allocation number `alloc`."""

    keep: int | None
    alloc: int | None


# What a write or a seed changes, as typed operations under one version. The planners below
# decide them; a store only executes them. Tuples are text (`codes_key`), semantic IDs too
# (`format_sid`). A semantic ID's entry also makes the item findable by every prefix of its
# RQ codes: stores answer prefix lookups from the semantic IDs (their text sorts by prefix).


@dataclass(frozen=True, slots=True)
class PutSid:
    """Point semantic ID `sid` at the item (its reverse entry)."""

    sid: str
    item_id: str


@dataclass(frozen=True, slots=True)
class PutItem:
    """Set the item's value (`encode_value`), replacing any."""

    item_id: str
    value: bytes


@dataclass(frozen=True, slots=True)
class DropSid:
    """Delete the reverse entry of semantic ID `sid` of the item (it moved off it)."""

    sid: str
    item_id: str


@dataclass(frozen=True, slots=True)
class SeedCounter:
    """Set tuple `tuple_key`'s next free suffix to `next_free` unless it is set (never lowers
    a counter)."""

    tuple_key: str
    next_free: int


@dataclass(frozen=True, slots=True)
class SeedSid:
    """Point semantic ID `sid` at the item unless it points somewhere already."""

    sid: str
    item_id: str


WriteOp = PutSid | PutItem | DropSid
SeedOp = SeedCounter | SeedSid
Op = WriteOp | SeedOp

# The phases of a write, in the order a store that cannot make them one transaction (Redis
# Cluster) executes them: new reverse entries, then the records (an item's record is one hash
# field: each is atomic), then the reverse entries the records left. A crash between phases
# leaves reverse entries that no record confirms, never a record without its entry; readers
# confirm an entry by the record (docs/store.md, "What a crash can leave").
WRITE_PHASES: tuple[type[WriteOp], ...] = (PutSid, PutItem, DropSid)


def phases(ops: Sequence[WriteOp]) -> list[list[WriteOp]]:
    """`ops` grouped by `WRITE_PHASES`, in that order, empty phases left out."""
    grouped: list[list[WriteOp]] = [[] for _ in WRITE_PHASES]
    for op in ops:
        grouped[WRITE_PHASES.index(type(op))].append(op)
    return [g for g in grouped if g]


def distinct_ids(items: Sequence[NewCodes]) -> list[str]:
    """The batch's item ids, each once, in first-seen order: what a write reads first."""
    return list(dict.fromkeys(i.item_id for i in items))


@dataclass(frozen=True)
class WritePlan:
    """A write of a batch, between reading what is stored and allocating suffixes.

    A store reads the items' current records (`distinct_ids`), makes the plan, allocates one
    suffix per tuple of `allocs` (atomically, in order), and executes `finish`'s operations
    all or nothing.
    """

    items: Sequence[NewCodes]
    olds: dict[str, StoredCodes | None]
    choices: list[Choice]
    allocs: list[tuple[int, ...]]  # one RQ tuple per suffix to allocate

    @classmethod
    def of(cls, items: Sequence[NewCodes], olds: dict[str, StoredCodes | None]) -> WritePlan:
        choices, allocs = plan_suffixes(items, olds)
        return cls(items, olds, choices, allocs)

    def finish(self, allocated: Sequence[int]) -> tuple[list[StoredCodes], list[WriteOp]]:
        """The records to answer with (item order) and the operations that store them, from
        the suffixes allocated for `allocs` (the counters' values before their increments)."""
        records = resolve(self.items, self.choices, allocated)
        return records, write_ops(self.items, records, self.olds)


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


def write_ops(
    items: Sequence[NewCodes], records: Sequence[StoredCodes], olds: dict[str, StoredCodes | None]
) -> list[WriteOp]:
    """What storing `records` changes, in `WRITE_PHASES` order: per distinct id (its last
    occurrence wins) the new semantic ID's entry, the value, and the entry of the semantic ID
    the record it replaces (stored, else its catalog entry) held, when that differs. Within a
    phase no two operations touch the same item or semantic ID (ids are distinct, semantic
    IDs are unique), so a store may execute a phase in any order."""
    last: dict[str, tuple[StoredCodes, StoredCodes | None]] = {}
    for item, record in zip(items, records, strict=True):
        last[item.item_id] = (record, previous(item, olds))
    ops: list[WriteOp] = []
    for new, old in last.values():
        ops.append(PutSid(new.sid, new.item_id))
        ops.append(PutItem(new.item_id, encode_value(new)))
        if old is not None and old.sid != new.sid:
            ops.append(DropSid(old.sid, new.item_id))
    return [op for phase in phases(ops) for op in phase]


def prefix_range(prefix: Sequence[int]) -> tuple[str, str]:
    """The semantic IDs whose RQ codes start with `prefix`, as a half-open range of their text:
    `[p-, p.)`, since every such ID is `p-...` and `.` is the character after `-`."""
    text = codes_key(prefix)
    return f"{text}-", f"{text}."


def seed_counters(catalog: CatalogSeed) -> dict[str, int]:
    """Per distinct catalog tuple: the next free suffix (its largest suffix + 1)."""
    if len(catalog.rq_codes) == 0:
        return {}
    tuples, inverse = np.unique(catalog.rq_codes, axis=0, return_inverse=True)
    top = np.full(len(tuples), -1, dtype=np.int64)
    np.maximum.at(top, inverse.reshape(-1), catalog.sid_suffix.astype(np.int64))
    return {codes_key(t): int(m) + 1 for t, m in zip(tuples.tolist(), top.tolist(), strict=True)}


class CatalogFloors:
    """Per catalog RQ tuple, its next free suffix (its largest catalog suffix + 1; 0 for a
    tuple the catalog does not hold): where a store starts a tuple's counter the first time a
    new item needs a suffix of it, so new items never take a catalog item's."""

    def __init__(self, catalog: CatalogSeed) -> None:
        keys = tuple_keys(catalog.rq_codes.astype(np.int32))
        self._keys, inverse = np.unique(keys, return_inverse=True)
        top = np.full(len(self._keys), -1, dtype=np.int64)
        np.maximum.at(top, inverse.reshape(-1), catalog.sid_suffix.astype(np.int64))
        self._next = top + 1

    def of(self, rq: Sequence[int]) -> int:
        if len(self._keys) == 0:
            return 0
        key = tuple_keys(np.asarray([rq], dtype=np.int32))[0]
        at = int(np.searchsorted(self._keys, key))
        return int(self._next[at]) if at < len(self._keys) and self._keys[at] == key else 0


def seed_counter_ops(catalog: CatalogSeed) -> list[SeedCounter]:
    """Seeding a version's suffix counters: one per distinct catalog tuple."""
    return [SeedCounter(t, n) for t, n in seed_counters(catalog).items()]


def seed_lookup_ops(catalog: CatalogSeed, rows: slice = slice(None)) -> list[SeedSid]:
    """Seeding the semantic IDs of catalog items `rows`. Like every seed operation they are
    idempotent and never move a semantic ID that is in use."""
    return [
        SeedSid(format_sid(rq, suffix), item_id)
        for item_id, rq, suffix in zip(
            catalog.item_ids[rows].tolist(),
            catalog.rq_codes[rows].tolist(),
            catalog.sid_suffix[rows].tolist(),
            strict=True,
        )
    ]


def check_promotable(lifecycle: Lifecycle, version: str) -> None:
    info = lifecycle.versions.get(version)
    if info is not None and info.state == "retired":
        raise LifecycleError(f"version {version} is retired: its keys are gone; build a new bundle")


def check_retirable(lifecycle: Lifecycle, version: str) -> VersionInfo | None:
    """The version's registry entry; refuses the active version and a staged one."""
    info = lifecycle.versions.get(version)
    if lifecycle.active == version:
        raise LifecycleError(f"version {version} is active; activate another version first")
    if info is not None and info.state == "staged":
        raise LifecycleError(f"version {version} is staged (being backfilled); not retired")
    return info


class Store(ABC):
    """Codes per bundle version, an active-version pointer, suffix counters, reverse lookups."""

    kind: str

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    @abstractmethod
    async def active_version(self) -> str | None: ...

    async def activate(
        self, version: str, catalog: CatalogSeed, *, seed_lookups: bool, bundle: str = ""
    ) -> None:
        """Seed `version` from its catalog once (suffix counters, parameters, the row -> id
        map; with `seed_lookups` also the catalog's semantic IDs), then point readers at it
        (as `promote`).

        The service's start on an empty store and `POST /admin/reload` use this; it checks no
        coverage. A catalog's own codes come from the backfill (`stage`, `write`, `promote`)."""
        await self._seed_once(version, catalog, seed_lookups)
        await self.promote(version, bundle)

    async def stage(self, version: str, bundle: str, catalog: CatalogSeed) -> None:
        """Seed `version`'s suffix counters from its catalog (never lowering one) and register
        it as staged, then announce it. Refuses (LifecycleError) an active version."""
        if (await self.lifecycle()).active == version:
            raise LifecycleError(f"version {version} is active; only a new version is staged")
        await self._seed_once(version, catalog, seed_lookups=False)
        await self._set_state(version, "staged", bundle)

    async def retire(self, version: str, *, batch: int, max_keys_per_s: float) -> int:
        """Mark `version` retired (announced: service processes stop writing it), then delete
        its keys in batches, at most `max_keys_per_s`; answers the keys deleted. Refuses
        (LifecycleError) the active version and a staged one. Retiring a retired version
        again deletes what a write in flight at the first call left behind."""
        info = check_retirable(await self.lifecycle(), version)
        await self._set_state(version, "retired", info.bundle if info is not None else "")
        return await self._delete_version(version, batch=batch, max_keys_per_s=max_keys_per_s)

    @abstractmethod
    def attach(self, version: str, catalog: CatalogSeed, *, seed_lookups: bool = False) -> None:
        """Tell the store the catalog of a version this process writes (a loaded bundle): a
        store that starts suffix counters at their first use, or seeds a version again after
        losing its data, needs it (Redis). Staging and activation attach it too."""

    @abstractmethod
    async def _seed_once(self, version: str, catalog: CatalogSeed, seed_lookups: bool) -> None:
        """Seed the version unless it is seeded already (see `activate`)."""

    @abstractmethod
    async def _set_state(self, version: str, state: VersionState, bundle: str) -> None:
        """Record the version's state in the registry and announce it (where the store can)."""

    @abstractmethod
    async def _delete_version(self, version: str, *, batch: int, max_keys_per_s: float) -> int:
        """Delete every key of `version`, `batch` at a time, rate-limited; answers how many."""

    @abstractmethod
    async def promote(self, version: str, bundle: str) -> str | None:
        """Point readers at `version` in one atomic step: `{P}:active`, the version active
        and the previous active one inactive in the registry; then announce. Answers the
        previous active version. The caller checks coverage first."""

    @abstractmethod
    async def lifecycle(self) -> Lifecycle: ...

    @abstractmethod
    async def watch(self) -> Watch:
        """Subscribe to lifecycle announcements (Redis pub/sub; SQLite: none, poll)."""

    @abstractmethod
    async def heartbeat(self, pod: PodInfo, ttl_s: float) -> None:
        """Record what a service process serves; the record lapses after `ttl_s`."""

    @abstractmethod
    async def pods(self) -> list[PodInfo]:
        """Every service process whose heartbeat has not lapsed."""

    @abstractmethod
    async def set_report(self, version: str, text: str) -> None:
        """Keep a version's backfill report (JSON; its schema is the backfill's)."""

    @abstractmethod
    async def report(self, version: str) -> str | None: ...

    @abstractmethod
    def ids(self, version: str, chunk: int = 1000) -> AsyncIterator[list[str]]:
        """Every item id with codes under `version`, in chunks (any order)."""

    @abstractmethod
    async def write(self, version: str, items: Sequence[NewCodes]) -> list[StoredCodes]:
        """Allocate suffixes and write every item with its reverse entries, all or nothing;
        answer the stored records in item order."""

    @abstractmethod
    async def get_values(self, version: str, ids: Sequence[str]) -> list[bytes | None]:
        """The stored values of `ids` (`encode_value` bytes), in order; None for an id the
        version has no codes of."""

    async def get_many(self, version: str, ids: Sequence[str]) -> list[StoredCodes | None]:
        values = await self.get_values(version, ids)
        return [
            decode_value(i, v) if v is not None else None for i, v in zip(ids, values, strict=True)
        ]

    @abstractmethod
    async def item_for_sid(self, version: str, sid: str) -> str | None:
        """The item whose stored record holds semantic ID `sid`, or None."""

    @abstractmethod
    async def items_for_prefix(self, version: str, prefix: Sequence[int], limit: int) -> list[str]:
        """Up to `limit` items whose first RQ codes are `prefix`, in the text order of their
        semantic IDs (the order every store keeps them in)."""

    @abstractmethod
    async def close(self) -> None: ...
