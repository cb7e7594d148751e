"""A bundle's manifest as text tables, for people at a terminal and for markdown reports."""

from __future__ import annotations

from collections.abc import Sequence

from codebooks.bundle import Manifest
from codebooks.vq import COMPRESSED, Tuned


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str | None = None,
    pad: bool = True,
) -> str:
    """A GitHub-flavoured markdown table (readable as plain text too).

    `align` has one letter per column, "l" or "r" (default: every column right-aligned, for
    numbers); "l" is markdown's default, so its rule carries no colon. `pad=False` leaves cells
    unpadded: rows of reports kept in git (docs/results.md) then differ only where a value does.
    Floats are written with 4 significant digits and None as "-"; pass text to format otherwise.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    sides = align if align is not None else "r" * len(headers)
    if len(sides) != len(headers) or set(sides) - {"l", "r"}:
        raise ValueError(f"align {align!r}: one of 'l' or 'r' per column ({len(headers)})")
    if pad:
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    else:
        widths = [0] * len(headers)

    def line(values: Sequence[str]) -> str:
        justified = [
            v.ljust(w) if side == "l" else v.rjust(w)
            for v, w, side in zip(values, widths, sides, strict=True)
        ]
        return "| " + " | ".join(justified) + " |"

    rule = "|" + "|".join(_rule(w, side, pad) for w, side in zip(widths, sides, strict=True))
    return "\n".join([line(list(headers)), rule + "|", *(line(r) for r in cells)])


def _rule(width: int, side: str, pad: bool) -> str:
    """The rule under a column of `width` characters: as wide as its cells when padded, the
    usual `---` or `---:` when not."""
    if not pad:
        return "---" if side == "l" else "---:"
    return "-" * (width + 1) + ("-" if side == "l" else ":")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def vq_setting(vq: Tuned) -> str:
    """An index kind with its search setting, e.g. `ivf nprobe 11/4096`, `hnsw32 efSearch 48`."""
    if vq.kind in ("ivf", "ivf-sq8", "ivf-pq"):
        pq = f" PQ{vq.pq_bytes}" if vq.pq_bytes else ""
        short = f", shortlist {vq.shortlist}" if vq.kind in COMPRESSED else ""
        return f"{vq.kind} nprobe {vq.nprobe}/{vq.nlist}{pq}{short}"
    if vq.kind == "hnsw":
        return f"hnsw{vq.hnsw_m} efSearch {vq.ef_search}"
    return vq.kind


def describe(manifest: Manifest) -> str:
    m = manifest
    vq = m.vq
    recall = "exact" if vq.recall_at_k is None else f"{vq.recall_at_k:.4f} ({vq.recall_source})"
    c = m.metrics.collisions
    head = table(
        ["bundle", "items", "d", "K", "L", "Nc", "VQ index", f"VQ recall@{m.k}", "RQ"],
        [
            [
                m.bundle_version,
                m.n_items,
                m.dim,
                m.k,
                m.levels,
                m.centroids,
                vq_setting(vq),
                recall,
                f"{m.rq.method}/{m.rq.balance}",
            ]
        ],
    )
    levels = table(
        ["level", "residual MSE", "used", "utilisation", "perplexity", "gini", "hourglass"],
        [
            [
                lv.level,
                lv.mse,
                f"{lv.used}/{m.centroids}",
                lv.utilisation,
                lv.perplexity,
                lv.gini,
                "yes" if lv.hourglass else "",
            ]
            for lv in m.metrics.levels
        ],
    )
    collisions = table(
        ["distinct tuples", "duplicate rate", "shared rate", "max suffix", "build seconds"],
        [
            [
                c.distinct_tuples,
                c.duplicate_rate,
                c.shared_rate,
                m.metrics.max_suffix,
                " ".join(f"{k}={v:.2f}" for k, v in m.metrics.seconds.items()),
            ]
        ],
    )
    parts = [head, levels, collisions]
    if vq.candidates:
        parts.append(vq_candidates(vq.candidates, m.k))
    return "\n\n".join(parts)


def vq_candidates(candidates: Sequence[Tuned], k: int) -> str:
    """The kinds `--vq-index auto` measured, as a table."""
    return table(
        ["VQ index measured", f"recall@{k}", "queries/s", "bytes/item", "build s"],
        [
            [vq_setting(c), c.recall_at_k, c.queries_per_s, c.bytes_per_item, c.build_s]
            for c in candidates
        ],
    )
