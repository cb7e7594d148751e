"""python -m ranking evaluate --data movielens|synthetic --bundle artifacts/<version>"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from ranking.evaluate import EvalConfig, ablate, evaluate
from ranking.model import VARIANTS, RankConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ranking")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="train every variant, write the results report")
    ev.add_argument("--data", choices=["movielens", "synthetic"], required=True)
    ev.add_argument("--bundle", type=Path, required=True, help="artifacts/<version>")
    ev.add_argument("--data-dir", type=Path, default=Path("data/ml-100k"))
    ev.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ev.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 per variant")
    ev.add_argument("--epochs", type=int, default=RankConfig.epochs)
    ev.add_argument("--dim", type=int, default=RankConfig.dim)
    ev.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ab = sub.add_parser("ablate", help="K and code-dimension ablations (Tables 7, 8)")
    ab.add_argument("--data", choices=["movielens", "synthetic"], required=True)
    ab.add_argument("--bundle", type=Path, required=True, help="artifacts/<version>")
    ab.add_argument("--data-dir", type=Path, default=Path("data/ml-100k"))
    ab.add_argument("--out", type=Path, default=Path("docs/ablation.md"))
    ab.add_argument("--seeds", type=int, default=1, help="seeds 0..n-1 per setting")
    ab.add_argument("--epochs", type=int, default=RankConfig.epochs)
    ab.add_argument("--dim", type=int, default=RankConfig.dim)
    ab.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 20, 25])
    ab.add_argument("--code-dims", type=int, nargs="+", default=[16, 32, 64])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = EvalConfig(
        data=args.data,
        bundle=args.bundle,
        data_dir=args.data_dir,
        out=args.out,
        seeds=tuple(range(args.seeds)),
    )
    config = replace(config, rank=replace(config.rank, epochs=args.epochs, dim=args.dim))
    if args.command == "ablate":
        print(ablate(config, tuple(args.k), tuple(args.code_dims)))
        return
    evaluate(replace(config, variants=tuple(args.variants)))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
