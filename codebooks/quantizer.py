"""The runtime quantizer: embeddings in, VQ and RQ codes out, from a frozen bundle."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from codebooks.bundle import Bundle
from codebooks.device import GpuMode, to_gpu, use_gpu
from codebooks.embeddings import checked
from codebooks.rq import Int32Array, rq_encode
from codebooks.vq import ensure_direct_map, rerank, search, search_exhaustively

# Candidates beyond K scored again in float64: float32's error reorders only near-ties.
RERANK_EXTRA = 8


class Quantizer:
    """Encodes batches against one bundle; safe to call from several threads at once.

    CPU faiss search is read-only and runs concurrently; a GPU index is not safe for concurrent
    calls, so GPU searches are serialised by a lock.
    """

    def __init__(self, bundle: Bundle, *, gpu: GpuMode = "auto") -> None:
        self.bundle = bundle
        self.on_gpu = use_gpu(gpu)
        self._index: Any = to_gpu(bundle.vq_index) if self.on_gpu else bundle.vq_index
        self._lock: AbstractContextManager[Any] = threading.Lock() if self.on_gpu else nullcontext()
        ensure_direct_map(bundle.vq_index)  # rerank reads candidate rows back

    @property
    def dim(self) -> int:
        return self.bundle.manifest.dim

    @property
    def k(self) -> int:
        return self.bundle.manifest.k

    @property
    def levels(self) -> int:
        return self.bundle.manifest.levels

    @property
    def version(self) -> str:
        return self.bundle.version

    def encode(self, embeddings: np.ndarray) -> tuple[Int32Array, Int32Array]:
        """B-by-d float32 -> (vq (B, K) int32 row ids nearest first, rq (B, L) int32).

        Rows are L2-normalised first. Refuses (EmbeddingError, naming the row) a wrong shape or
        dtype, NaN/inf, or a zero-norm row. A catalog item's own row is its nearest VQ row.
        Every code is a real row: where an IVF index's probed lists hold fewer than K items,
        the row is searched again over all lists. The K are the float64 best of the float32
        search's K + RERANK_EXTRA (ties to the lower row), so a code does not depend on the
        batch it came in (faiss scores a batch with BLAS, a lone row without).
        """
        x = checked(embeddings, self.dim)
        wanted = min(self.k + RERANK_EXTRA, self.bundle.manifest.n_items)
        with self._lock:
            found = search(self._index, x, wanted)
            short = np.flatnonzero((found[:, : self.k] < 0).any(axis=1))
            if len(short):  # the probed IVF lists held fewer than K items: probe them all
                found[short] = search_exhaustively(self._index, x[short], wanted)
        vq = rerank(self.bundle.vq_index, x, found, self.k)
        rq = rq_encode(x, self.bundle.rq).codes
        return vq, rq
