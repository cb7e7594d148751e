"""python -m ranking evaluate (--data movielens|synthetic | --items I --events E)
--bundle artifacts/<version> [--compare <unaligned bundle>] [--encoders <bundles of other
encoder seeds>] [--workers N]"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from catalogs.errors import DataError
from catalogs.events import POSITIVE_RATING
from catalogs.files import Files
from ranking.evaluate import EvalConfig, evaluate
from ranking.model import VARIANTS, RankConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ranking")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="train every variant, write the results report")
    ev.add_argument("--data", choices=["movielens", "synthetic"], help="a built-in catalog")
    ev.add_argument("--items", type=Path, help="your catalog (docs/data.md), with --events")
    ev.add_argument("--events", type=Path, help="your interaction log, with --items")
    ev.add_argument("--positive-rating", type=float, default=POSITIVE_RATING)
    ev.add_argument("--bundle", type=Path, required=True, help="artifacts/<version>")
    ev.add_argument(
        "--compare",
        type=Path,
        help="a bundle of the unaligned encoder with the same holdout: its codes are evaluated "
        "too, to show what alignment adds",
    )
    ev.add_argument("--data-dir", type=Path, default=Path("data/ml-100k"))
    ev.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ev.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 per variant")
    ev.add_argument("--epochs", type=int, default=RankConfig.epochs)
    ev.add_argument("--dim", type=int, default=RankConfig.dim)
    ev.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ev.add_argument(
        "--ablation-seeds", type=int, default=1, help="seeds per ablated setting (0: no ablations)"
    )
    ev.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 20, 25], help="VQ K values")
    ev.add_argument("--code-dims", type=int, nargs="+", default=[16, 32, 64])
    ev.add_argument("--no-control", action="store_true", help="skip the random-codes control runs")
    ev.add_argument(
        "--encoders",
        type=Path,
        nargs="*",
        default=[],
        help="bundles of other encoder seeds (same pipeline and holdout): the seed spread",
    )
    ev.add_argument("--no-side", action="store_true", help="ID-only rows (no side features)")
    ev.add_argument("--no-references", action="store_true", help="skip the LR and DCN rows")
    ev.add_argument("--sweep-levels", type=int, nargs="*", default=[2, 3, 6], help="L values")
    ev.add_argument(
        "--sweep-centroids",
        type=int,
        nargs="*",
        default=[16, 32, 64, 256],
        help="Nc values (no values: no sweep, the bundle's own L and Nc)",
    )
    ev.add_argument("--workers", type=int, default=1, help="processes running the ranker runs")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if bool(args.items) != bool(args.events) or bool(args.items) == bool(args.data):
        parser.error("give --data, or --items and --events")
    files = Files(args.items, args.events, None, args.positive_rating) if args.items else None
    base = EvalConfig(data=args.data or "files", bundle=args.bundle, files=files)
    config = replace(
        base,
        compare=args.compare,
        data_dir=args.data_dir,
        out=args.out,
        seeds=tuple(range(args.seeds)),
        variants=tuple(args.variants),
        rank=replace(base.rank, epochs=args.epochs, dim=args.dim),
        ks=tuple(args.k),
        code_dims=tuple(args.code_dims),
        ablation_seeds=tuple(range(args.ablation_seeds)),
        control=not args.no_control,
        progress=not args.quiet,
        encoders=tuple(args.encoders),
        side=not args.no_side,
        references=not args.no_references,
        sweep_levels=tuple(args.sweep_levels),
        sweep_centroids=tuple(args.sweep_centroids),
        workers=args.workers,
    )
    try:
        evaluate(config)
    except DataError as err:
        raise SystemExit(f"refused: {err}") from err
    print(args.out.read_text())


if __name__ == "__main__":
    main()
