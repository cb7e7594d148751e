"""The smallest whole-pipeline run that still exercises every stage (shared by the pipeline's
tests and the service's real-encoder test)."""

from __future__ import annotations

from pathlib import Path

from codebooks.build import BuildConfig
from models.align import AlignConfig
from models.pipeline import PipelineConfig

SMALL_BUILD = BuildConfig(k=5, levels=3, centroids=8, niter=5, train_items=1000, gpu="off")


def small_synthetic(root: Path) -> PipelineConfig:
    """240 synthetic items in 6 businesses, 4 alignment steps, a 3 x 8 RQ: seconds, not minutes."""
    return PipelineConfig(
        data="synthetic",
        out=root / "artifacts",
        report_dir=root / "reports",
        items=240,
        events=20_000,
        groups=6,
        int8_check_items=64,
        align=AlignConfig(steps=4, batch_size=16, progress=False, embed_batch=64),
        build=SMALL_BUILD,
    )
