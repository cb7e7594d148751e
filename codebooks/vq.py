"""VQ codes: the codebook is every catalog item's vector; a code is the top-K rows by inner product.

A search fetches a shortlist of candidate rows from the index and re-ranks it with exact
distances (`rerank`), so every kind answers the same way and differs only in what it may miss:

- `flat`: exact.
- `ivf`: IVF-Flat; the lists searched per query (`nprobe`) are tuned. Runs on the GPU too.
- `hnsw`: a faiss HNSW graph over the flat vectors; the search breadth (`efSearch`) is tuned.
- `ivf-sq8` and `ivf-pq`: IVF over compressed codes, d bytes (8-bit scalar quantiser) or
  `pq_bytes` (product quantiser) per item in memory. The codes only rank the shortlist; its
  exact distances come from the catalog vectors, which the bundle keeps on disk and the
  service maps from it. Both `nprobe` and the shortlist length are tuned.

Tuning measures recall@K against exact search on queries the index has not seen, as uploads
are: by default a seeded sample of catalog rows *held out* while the index is trained and
filled (added once tuning is done), or queries the caller gives (a held-out slice of real
embeddings). Catalog rows searched while inside the index overstate recall, most for a graph,
whose links were built around them. Each search setting is the least whose recall, less
CONFIDENCE_Z standard errors over the queries, reaches the target, so that new queries meet
it too rather than half of the time.

`auto` builds every kind whose memory fits the budget, tunes each, and keeps the one with the
most queries/s at the target (the highest recall when none reaches it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from codebooks.device import to_gpu
from codebooks.embeddings import Float32Array
from codebooks.rq import Int32Array

log = logging.getLogger(__name__)

VQKind = Literal["flat", "ivf", "hnsw", "ivf-sq8", "ivf-pq"]
VQRequest = Literal["auto", "flat", "ivf", "hnsw", "ivf-sq8", "ivf-pq"]
RecallSource = Literal["held-out catalog rows", "caller queries", "catalog rows"]
RowReader = Callable[[npt.NDArray[np.int64]], Float32Array]

APPROXIMATE: tuple[VQKind, ...] = ("ivf", "hnsw", "ivf-sq8", "ivf-pq")
COMPRESSED: frozenset[VQKind] = frozenset({"ivf-sq8", "ivf-pq"})  # exact vectors stay on disk
GPU_KINDS: frozenset[VQKind] = frozenset({"flat", "ivf"})  # faiss has no GPU HNSW; PQ kept on CPU
RERANK_EXTRA = 8  # candidates beyond K re-scored exactly: float32 reorders only near-ties
SHORTLIST_FACTORS = (1, 2, 4, 8, 16)  # compressed kinds: shortlists of up to factor x K
MAX_EF_SEARCH = 4096
CONFIDENCE_Z = 1.645  # a setting passes when recall's one-sided 95% lower bound meets the target
TIMING_BATCH = 256  # queries per search call when timing, as the service's micro-batches
TIMING_SECONDS = 0.5


@dataclass(frozen=True)
class VQSettings:
    """What a VQ build is asked for (the bundle's `BuildConfig` fields of the same names)."""

    k: int
    target_recall: float = 0.95
    recall_queries: int = 2000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    pq_bytes: int = 0  # 0: d / 2
    memory_bytes: float = math.inf  # auto: kinds whose index would need more are skipped
    seed: int = 0
    gpu: bool = False


class Tuned(BaseModel):
    """One index kind as built and tuned: its search setting and what was measured with it.
    The bundle manifest's `vq` section is this, plus how it was measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: VQKind
    shortlist: int | None = None  # candidates re-ranked exactly per query; None: K + 8
    nlist: int | None = None  # IVF lists
    nprobe: int | None = None  # IVF lists searched per query
    ef_search: int | None = None  # HNSW search breadth
    hnsw_m: int | None = None  # HNSW links per node
    pq_bytes: int | None = None  # ivf-pq: bytes of code per item
    recall_at_k: float | None = None  # against exact search; None when exact
    recall_stderr: float | None = None  # its standard error over the queries
    queries_per_s: float | None = None  # search and re-rank, batches of 256, at the build
    bytes_per_item: float | None = None  # the serialised index / N
    build_s: float | None = None


@dataclass(frozen=True)
class VQIndexInfo:
    chosen: Tuned
    recall_queries: int  # queries recall was measured on (0 when exact)
    recall_source: RecallSource
    candidates: list[Tuned] = field(default_factory=list)  # every kind `auto` measured

    @property
    def kind(self) -> VQKind:
        return self.chosen.kind


def choose_kind(n_items: int, requested: VQRequest, exact_max_items: int) -> VQRequest:
    """`auto` stays exact up to `exact_max_items`; above it the build measures the kinds."""
    if requested == "auto" and n_items <= exact_max_items:
        return "flat"
    return requested


def default_nlist(n_items: int) -> int:
    """About 4 sqrt(N) lists, a power of two, with at least 39 training items per list."""
    target = 2 ** round(math.log2(max(4.0 * math.sqrt(n_items), 1.0)))
    return int(max(1, min(target, 65536, n_items // 39)))


def default_shortlist(k: int, n_items: int) -> int:
    return min(k + RERANK_EXTRA, n_items)


def estimated_bytes_per_item(kind: VQKind, dim: int, s: VQSettings) -> float:
    """Memory an index of `kind` needs per item, estimated before it is built.

    flat and ivf keep the float32 vector (+ an 8-byte id in IVF lists); hnsw adds 2M links of
    4 bytes on level 0 and its id map (~56 bytes); ivf-sq8 keeps a byte per dimension and
    ivf-pq `pq_bytes`, each plus the id.
    """
    vector = 4.0 * dim
    return {
        "flat": vector,
        "ivf": vector + 8,
        "hnsw": vector + 8 * s.hnsw_m + 56,
        "ivf-sq8": dim + 8.0,
        "ivf-pq": _pq_bytes(dim, s) + 8.0,
    }[kind]


def build_vq_index(
    x: Float32Array,
    kind: VQRequest,
    settings: VQSettings,
    *,
    queries: Float32Array | None = None,
) -> tuple[Any, VQIndexInfo]:
    """n-by-d normalised float32 -> a CPU faiss index over all rows (row i is item i), tuned.

    `queries` (m-by-d, normalised) are upload-like queries to tune on; without them a seeded
    sample of `recall_queries` catalog rows is held out of the index while it is tuned.
    """
    n = len(x)
    if kind == "flat":
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return index, VQIndexInfo(
            Tuned(kind="flat", shortlist=default_shortlist(settings.k, n)), 0, "catalog rows"
        )

    probe = _probe(x, settings, queries)
    kinds = _auto_kinds(n, x.shape[1], settings) if kind == "auto" else [kind]
    best: tuple[Any, Tuned] | None = None
    candidates: list[Tuned] = []
    for each in kinds:
        start = time.perf_counter()
        index = _filled(each, x, probe.rows, settings)
        tuned = _tune(each, index, probe, settings)
        tuned = tuned.model_copy(update={"build_s": time.perf_counter() - start})
        log.info("vq %s: %s", each, tuned)
        candidates.append(tuned)
        if best is None or _better(tuned, best[1], settings.target_recall):
            best = (index, tuned)
    assert best is not None
    index, chosen = best
    if probe.held is not None:
        index.add_with_ids(x[probe.held], probe.held)
    _set_search(index, chosen)
    chosen = chosen.model_copy(update={"bytes_per_item": _serialised_bytes(index) / n})
    candidates = [chosen if c is best[1] else c for c in candidates]
    source: RecallSource = "caller queries" if queries is not None else "held-out catalog rows"
    info = VQIndexInfo(chosen, len(probe.queries), source, candidates if kind == "auto" else [])
    return index, info


@dataclass(frozen=True)
class _Probe:
    """Queries to tune on, their exact top-K, and the rows an index is filled with meanwhile."""

    queries: Float32Array
    truth: Int32Array
    rows: npt.NDArray[np.int64]  # catalog rows in the index while tuning
    held: npt.NDArray[np.int64] | None  # rows added after tuning
    read_rows: RowReader


def _probe(x: Float32Array, s: VQSettings, queries: Float32Array | None) -> _Probe:
    n = len(x)
    if queries is not None:
        held, rows, q = None, np.arange(n, dtype=np.int64), queries
    else:
        rng = np.random.default_rng(s.seed)
        size = min(s.recall_queries, max(1, n // 10))
        held = np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)
        rows = np.setdiff1d(np.arange(n, dtype=np.int64), held)
        q = x[held]
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x[rows])
    found = search(to_gpu(exact) if s.gpu else exact, q, s.k)
    truth = rows[found].astype(np.int32)
    return _Probe(np.ascontiguousarray(q), truth, rows, held, x.__getitem__)


def _auto_kinds(n: int, dim: int, s: VQSettings) -> list[VQKind]:
    fits = [k for k in APPROXIMATE if n * estimated_bytes_per_item(k, dim, s) <= s.memory_bytes]
    return fits or ["ivf-pq"]


def _reaches(recall: float | None, stderr: float | None, target: float) -> bool:
    """Recall reaches the target with CONFIDENCE_Z standard errors to spare."""
    return (recall or 0.0) - CONFIDENCE_Z * (stderr or 0.0) >= target


def _better(a: Tuned, b: Tuned, target: float) -> bool:
    """More queries/s among those that reach the target; else the higher recall."""
    a_ok = _reaches(a.recall_at_k, a.recall_stderr, target)
    b_ok = _reaches(b.recall_at_k, b.recall_stderr, target)
    if a_ok != b_ok:
        return a_ok
    if a_ok:
        return (a.queries_per_s or 0.0) > (b.queries_per_s or 0.0)
    return (a.recall_at_k or 0.0) > (b.recall_at_k or 0.0)


def _filled(kind: VQKind, x: Float32Array, rows: npt.NDArray[np.int64], s: VQSettings) -> Any:
    """An index of `kind` trained on and holding `x[rows]` under their row ids."""
    n, dim = len(rows), x.shape[1]
    index: Any
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = s.hnsw_ef_construction
        index = faiss.IndexIDMap2(graph)  # row ids survive adding the held-out rows last
        index.add_with_ids(x[rows], rows)
        return index
    nlist = default_nlist(n)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim),
            dim,
            nlist,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
        )
    else:
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, nlist, _pq_bytes(dim, s), 8, faiss.METRIC_INNER_PRODUCT
        )
    index.cp.seed = s.seed
    index.cp.max_points_per_centroid = 64
    if kind == "ivf-pq":  # the exact re-rank forgives rough PQ codebooks: train them briefly
        index.pq.cp.max_points_per_centroid = 64
        index.pq.cp.niter = 10
        index.pq.cp.seed = s.seed
    index.train(x[rows])
    index.add_with_ids(x[rows], rows)
    return index


def _pq_bytes(dim: int, s: VQSettings) -> int:
    m = s.pq_bytes or max(1, dim // 2)
    if dim % m:
        raise ValueError(f"pq_bytes: {m} does not divide d={dim}; PQ splits a vector evenly")
    return m


def _tune(kind: VQKind, index: Any, probe: _Probe, s: VQSettings) -> Tuned:
    """The least search setting reaching the target recall on the probe, and its speed."""
    searcher = to_gpu(index) if s.gpu and kind in GPU_KINDS else index
    base = default_shortlist(s.k, index.ntotal)

    def measure(t: Tuned) -> tuple[float, float]:
        _set_search(searcher, t)
        found = nearest(searcher, probe.read_rows, probe.queries, s.k, t.shortlist or base)
        per_query = recall_per_query(found, probe.truth)
        return float(per_query.mean()), float(per_query.std() / math.sqrt(len(per_query)))

    def passes(t: Tuned) -> bool:
        return _reaches(*measure(t), s.target_recall)

    if kind == "hnsw":

        def at_ef(ef: int) -> Tuned:
            return Tuned(kind=kind, shortlist=base, ef_search=ef, hnsw_m=s.hnsw_m)

        ef = _least(base, MAX_EF_SEARCH, lambda ef: passes(at_ef(ef)))
        options = [at_ef(ef or MAX_EF_SEARCH)]
    else:
        nlist = int(index.nlist)
        pq = index.pq.M if kind == "ivf-pq" else None
        factors = SHORTLIST_FACTORS if kind in COMPRESSED else (1,)
        options, high = [], nlist
        for factor in factors:  # a longer shortlist needs no more lists: each bounds the next
            shortlist = min(max(base, factor * s.k), index.ntotal)

            def at(p: int, shortlist: int = shortlist) -> Tuned:
                return Tuned(kind=kind, shortlist=shortlist, nlist=nlist, nprobe=p, pq_bytes=pq)

            nprobe = _least(1, high, lambda p: passes(at(p)))
            if nprobe is None:  # not even `high` lists reach the target with this shortlist
                options.append(at(high))
                continue
            if options and nprobe == high:
                break  # the longer shortlist saved no list: longer ones only cost re-ranking
            options.append(at(nprobe))
            high = nprobe

    def with_recall(t: Tuned) -> Tuned:
        mean, stderr = measure(t)
        return t.model_copy(update={"recall_at_k": mean, "recall_stderr": stderr})

    measured = [with_recall(t) for t in options]
    reaching = [t for t in measured if _reaches(t.recall_at_k, t.recall_stderr, s.target_recall)]
    if not reaching:
        best = max(measured, key=lambda t: t.recall_at_k or 0.0)
        log.warning(
            "vq %s: recall@%d %.4f at best, short of the target %.4f",
            kind,
            s.k,
            best.recall_at_k or 0.0,
            s.target_recall,
        )
        reaching = [best]
    timed = [
        t.model_copy(update={"queries_per_s": _queries_per_s(searcher, probe, s.k, t)})
        for t in reaching
    ]
    best = max(timed, key=lambda t: t.queries_per_s or 0.0)
    return best.model_copy(update={"bytes_per_item": _serialised_bytes(index) / index.ntotal})


def _least(low: int, high: int, passes: Callable[[int], bool]) -> int | None:
    """The least value in [low, high] that passes (passing is monotone); None if none does."""
    value = low
    while not passes(value):
        if value == high:
            return None
        low, value = value, min(2 * value, high)
    while value - low > 1:  # low fails (or is the start), value passes
        mid = (low + value) // 2
        low, value = (low, mid) if passes(mid) else (mid, value)
    return value


def _queries_per_s(index: Any, probe: _Probe, k: int, tuned: Tuned) -> float:
    """Queries/s of search and re-rank in batches of TIMING_BATCH, over at least TIMING_SECONDS."""
    batches = [
        probe.queries[i : i + TIMING_BATCH] for i in range(0, len(probe.queries), TIMING_BATCH)
    ]
    done, calls, start = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < TIMING_SECONDS:
        batch = batches[calls % len(batches)]
        nearest(index, probe.read_rows, batch, k, tuned.shortlist or k)
        done, calls = done + len(batch), calls + 1
    return done / elapsed


def _serialised_bytes(index: Any) -> int:
    return int(faiss.serialize_index(index).size)


def set_search(index: Any, nprobe: int | None, ef_search: int | None) -> None:
    """Apply a bundle's search setting; works on CPU and GPU indexes, bare or id-mapped."""
    if nprobe is not None:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    if ef_search is not None:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef_search)


def _set_search(index: Any, tuned: Tuned) -> None:
    set_search(index, tuned.nprobe, tuned.ef_search)


def nearest(
    index: Any, read_rows: RowReader, queries: Float32Array, k: int, shortlist: int
) -> Int32Array:
    """Top-k rows by exact inner product among the index's `shortlist` candidates."""
    return rerank(read_rows, queries, shortlist_search(index, queries, k, shortlist), k)


def shortlist_search(index: Any, queries: Float32Array, k: int, shortlist: int) -> Int32Array:
    """`shortlist` candidate rows per query; where an IVF search's probed lists held fewer than
    k rows, that query is searched again over every list, so each code is K real rows."""
    found = search(index, queries, shortlist)
    short = np.flatnonzero((found[:, :k] < 0).any(axis=1))
    if len(short):
        found[short] = search_exhaustively(index, queries[short], shortlist)
    return found


def own_row_first(vq: Int32Array, rows: npt.NDArray[np.int64]) -> Int32Array:
    """VQ codes of catalog rows with each row's own id first, then its K-1 nearest others.

    An exact or IVF search always finds a catalog row itself; a graph search can miss it
    (HNSW, about 1 in 1,000 at the tuned efSearch), and a catalog item's code names it first.
    """
    others = vq != rows[:, None]
    rest = np.stack([row[keep][: vq.shape[1] - 1] for row, keep in zip(vq, others, strict=True)])
    out: Int32Array = np.concatenate([rows[:, None], rest], axis=1).astype(np.int32)
    return out


def search(index: Any, queries: Float32Array, k: int) -> Int32Array:
    """Top-k row ids, nearest first, as int32 (-1 where the index holds fewer than k rows)."""
    _, ids = index.search(queries, k)
    out: Int32Array = ids.astype(np.int32)
    return out


def search_exhaustively(index: Any, queries: Float32Array, k: int) -> Int32Array:
    """`search` over every list of an IVF index (per call: the shared index is not changed);
    a plain search for any other index."""
    nlist = getattr(index, "nlist", None)
    if nlist is None:
        return search(index, queries, k)
    params = faiss.SearchParametersIVF()
    params.nprobe = int(nlist)
    _, ids = index.search(queries, k, params=params)
    out: Int32Array = ids.astype(np.int32)
    return out


def recall_per_query(found: Int32Array, truth: Int32Array) -> npt.NDArray[np.float64]:
    """Each query's share of its true top-K found (the K are each row's distinct ids)."""
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    out: npt.NDArray[np.float64] = hits.any(axis=1).sum(axis=1) / truth.shape[1]
    return out


def recall_at_k(found: Int32Array, truth: Int32Array) -> float:
    """Mean share of each query's true top-K that the approximate top-K found."""
    from faiss.contrib.evaluation import knn_intersection_measure

    return float(knn_intersection_measure(found, truth))  # type: ignore[no-untyped-call]


def ensure_direct_map(index: Any) -> None:
    """Let an IVF index read rows back by id (a flat or id-mapped index always can). Not
    thread-safe: call it before the index is shared."""
    if getattr(index, "nlist", None) is not None and index.direct_map.type == 0:
        faiss.extract_index_ivf(index).make_direct_map()


def rerank(read_rows: RowReader, queries: Float32Array, found: Int32Array, k: int) -> Int32Array:
    """B-by-m candidate rows (-1: none) -> B-by-k int32, best first by inner product computed
    in float64 over the rows `read_rows` gives; ties go to the lower row."""
    valid = found >= 0
    vectors = np.zeros((*found.shape, queries.shape[1]), dtype=np.float64)
    vectors[valid] = read_rows(found[valid].astype(np.int64))
    scores = np.einsum("bmd,bd->bm", vectors, queries.astype(np.float64))
    scores[~valid] = -np.inf
    order = np.lexsort((np.where(valid, found, np.iinfo(np.int32).max), -scores), axis=1)
    out: Int32Array = np.take_along_axis(found, order[:, :k], axis=1).astype(np.int32)
    return out
