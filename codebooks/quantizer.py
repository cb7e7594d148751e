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
from codebooks.vq import GPU_KINDS, default_shortlist, ensure_direct_map, rerank, shortlist_search


class Quantizer:
    """Encodes batches against one bundle; safe to call from several threads at once.

    CPU faiss search is read-only and runs concurrently; a GPU index is not safe for concurrent
    calls, so GPU searches are serialised by a lock. Only flat and IVF indexes move to the GPU;
    HNSW and IVF-PQ are searched on the CPU whatever `gpu` says.
    """

    def __init__(self, bundle: Bundle, *, gpu: GpuMode = "auto") -> None:
        self.bundle = bundle
        m = bundle.manifest
        self.on_gpu = use_gpu(gpu) and m.vq.kind in GPU_KINDS
        self.shortlist = m.vq.shortlist or default_shortlist(m.k, m.n_items)
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
        the row is searched again over all lists. The K are the float64 best of the index's
        shortlist (the manifest's `vq.shortlist`, ties to the lower row), scored on the exact
        catalog vectors, so a code does not depend on the batch it came in (faiss scores a
        batch with BLAS, a lone row without) nor on a compressed index's approximation.
        """
        x = checked(embeddings, self.dim)
        with self._lock:
            found = shortlist_search(self._index, x, self.k, self.shortlist)
        vq = rerank(self.bundle.read_rows, x, found, self.k)
        rq = rq_encode(x, self.bundle.rq).codes
        return vq, rq
