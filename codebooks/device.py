"""Where faiss runs: on the GPU when a GPU build of faiss and a GPU are both present.

Build and runtime take the same path either way; only the index object differs.
"""

from __future__ import annotations

from typing import Any, Literal

import faiss

GpuMode = Literal["auto", "on", "off"]


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu, or with faiss-gpu on a machine without a GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def use_gpu(mode: GpuMode) -> bool:
    """`auto` takes the GPU when there is one; `on` insists and says why it cannot."""
    if mode == "off":
        return False
    available = gpu_count() > 0
    if mode == "on" and not available:
        raise RuntimeError("GPU faiss asked for (gpu=on), but faiss sees no GPU: install faiss-gpu")
    return available


def to_gpu(index: Any) -> Any:
    """A GPU copy of a CPU index (faiss keeps the GPU resources alive with the index)."""
    return faiss.index_cpu_to_all_gpus(index)
