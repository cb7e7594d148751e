"""Diagnostics a person looks at: per-level centroid usage, perplexity, collisions by prefix.

`write_report(bundle, out)` writes three PNGs and a `README.md` that shows them beside the
manifest's tables. matplotlib is imported here only (it is in the dev and train extras, not in
the service image).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codebooks.bundle import Bundle
from codebooks.metrics import HOURGLASS_RATIO
from codebooks.summary import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BALANCE_GOAL = 0.8  # the per-level perplexity we aim for, as a share of Nc


def write_report(bundle: Bundle, out: Path) -> list[Path]:
    """Write usage.png, perplexity.png, collisions.png and README.md under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    m = bundle.manifest
    codes, size = bundle.rq_codes, m.centroids
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for level in range(m.levels):
        counts = np.sort(np.bincount(codes[:, level], minlength=size))[::-1]
        ax.plot(np.arange(1, size + 1), counts / counts.sum(), label=f"level {level + 1}")
    ax.axhline(1 / size, color="grey", linestyle=":", label="even share 1/Nc")
    ax.set(
        xlabel="centroid rank",
        ylabel="share of items",
        yscale="log",
        title="Centroid usage per level",
    )
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out / "usage.png", dpi=110))

    fig, ax = plt.subplots(figsize=(7, 4))
    levels = [lv.level for lv in m.metrics.levels]
    colours = ["tab:red" if lv.hourglass else "tab:blue" for lv in m.metrics.levels]
    ax.bar(levels, [lv.perplexity for lv in m.metrics.levels], color=colours)
    ax.axhline(size, color="grey", linestyle=":", label=f"Nc = {size}")
    ax.axhline(BALANCE_GOAL * size, color="tab:green", linestyle="--", label=f"{BALANCE_GOAL} Nc")
    ax.set(
        xlabel="level",
        ylabel="perplexity",
        xticks=levels,
        title=f"Perplexity per level (red: hourglass, below {HOURGLASS_RATIO} x its neighbours)",
    )
    ax.legend(fontsize=8)
    written.append(save_figure(fig, out / "perplexity.png", dpi=110))

    fig, ax = plt.subplots(figsize=(7, 4))
    shares = m.metrics.collisions.shared_rate_by_prefix
    ax.plot(range(1, len(shares) + 1), shares, marker="o")
    ax.set(
        xlabel="prefix length (levels)",
        ylabel="share of items sharing the prefix",
        yscale="log",
        xticks=range(1, len(shares) + 1),
        title="Collisions by RQ prefix length",
    )
    written.append(save_figure(fig, out / "collisions.png", dpi=110))

    summary = out / "README.md"
    summary.write_text(
        f"# Bundle {m.bundle_version}\n\n{describe(m)}\n\n"
        f"Shared rate by prefix length 1..{m.levels}: "
        + ", ".join(f"{s:.4g}" for s in shares)
        + "\n\n"
        + "".join(f"![{p.stem}]({p.name})\n\n" for p in written)
    )
    written.append(summary)
    return written


def save_figure(fig: Figure, path: Path, dpi: int) -> Path:
    """Write `fig` to `path` cropped to what is drawn, and close it: pyplot keeps every figure
    it made alive until closed, so a report that draws many would grow without bound."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
