"""`python -m models pipeline`: pairs -> align -> embed -> codebooks build -> export, one bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub

from catalogs.events import POSITIVE_RATING
from catalogs.files import Files
from catalogs.holdout import Holdout
from models.pipeline import PipelineConfig


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    return int(args.run(args))


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The command line as a PipelineConfig; with no flags it is `PipelineConfig()`."""
    base = PipelineConfig()
    files = None
    if args.items or args.events:
        if not (args.items and args.events):
            raise SystemExit("--items and --events go together (docs/data.md)")
        files = Files(args.items, args.events, args.group_column, args.positive_rating)
    return PipelineConfig(
        data="files" if files else args.data,
        files=files,
        out=args.out,
        report_dir=args.report_dir,
        data_dir=args.data_dir,
        mode=args.mode,
        features=args.features,
        items=args.synthetic_items,
        events=args.synthetic_events,
        groups=args.synthetic_groups,
        seed=args.seed,
        int8=not args.no_int8,
        holdout=Holdout(args.holdout[0], args.holdout[1], _holdout_seed(args))
        if args.holdout
        else None,
        align=replace(
            base.align,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            resume=args.resume,
            progress=not args.quiet,
            workers=base.align.workers if args.workers is None else args.workers,
        ),
        encoder=replace(
            base.encoder,
            train_text_layers=args.train_text_layers,
            image_backbone=args.image_backbone,
            image_backbone_train=tuple(args.image_backbone_train),
            audio_backbone=args.audio_backbone,
            audio_backbone_train=tuple(args.audio_backbone_train),
        ),
        pairs=replace(base.pairs, seed=args.seed),
        build=base.build.model_copy(update={"seed": args.seed}),
    )


def _pipeline(args: argparse.Namespace) -> int:
    import torch

    from catalogs.errors import DataError
    from codebooks.bundle import load_bundle
    from codebooks.summary import describe
    from models.pipeline import markdown_table, run

    if args.threads:
        torch.set_num_threads(args.threads)
    config = pipeline_config(args)
    try:
        result = run(config)
    except DataError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    if result is None:  # a torchrun process other than rank 0: rank 0 writes the bundle
        return 0
    print(f"wrote {result.bundle}")
    print(markdown_table(result.report))
    int8 = result.report.get("int8")
    if int8:
        print(
            f"int8: mean cosine {int8['mean_cosine']:.4f}, same RQ code {int8['same_code']:.3f} "
            f"-> {'kept' if int8['kept'] else 'dropped'}"
        )
    print(f"map: {result.report['map']}; seconds: {result.report['seconds']}")
    print(describe(load_bundle(result.bundle).manifest))
    return 0


def _holdout_seed(args: argparse.Namespace) -> int:
    return int(args.seed if args.holdout_seed is None else args.holdout_seed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("pipeline", help="train, embed, build and export one bundle")
    p.add_argument(
        "--data",
        choices=["synthetic", "movielens"],
        default="synthetic",
        help="a built-in catalog (ignored with --items/--events)",
    )
    p.add_argument("--items", type=Path, help="your catalog: Parquet file or folder (docs/data.md)")
    p.add_argument("--events", type=Path, help="your interaction log: Parquet file or folder")
    p.add_argument(
        "--group-column", help="an items column to colour the alignment maps by (e.g. category)"
    )
    p.add_argument(
        "--positive-rating",
        type=float,
        default=POSITIVE_RATING,
        help="events with `rating` and no `label`: the least rating that is positive",
    )
    p.add_argument("--out", type=Path, default=Path("artifacts"), help="bundle root")
    p.add_argument(
        "--report-dir", type=Path, help="reports, map and checkpoints (data/runs/<data>)"
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path("data/ml-100k"), help="MovieLens (`make data`)"
    )
    p.add_argument("--mode", choices=["multimodal", "features"], default="multimodal")
    p.add_argument("--features", type=Path, help="features mode: (N, F) .npy of upstream vectors")
    d = PipelineConfig()
    p.add_argument("--synthetic-items", type=int, default=d.items, help="synthetic catalog size")
    p.add_argument("--synthetic-events", type=int, default=d.events, help="synthetic log size")
    p.add_argument(
        "--synthetic-groups", type=int, default=d.groups, help="synthetic business groups"
    )
    p.add_argument("--steps", type=int, default=d.align.steps, help="alignment steps")
    p.add_argument(
        "--batch-size", type=int, default=d.align.batch_size, help="pairs per step (per process)"
    )
    p.add_argument(
        "--train-text-layers",
        type=int,
        default=d.encoder.train_text_layers,
        help="top MiniLM layers to fine-tune (0: frozen, its vectors cached)",
    )
    for kind, tower in (("image", "covers"), ("audio", "clips")):
        p.add_argument(
            f"--{kind}-backbone",
            type=Path,
            help=f"a pretrained {kind} tower: a torch.export .pt2 file taking the {tower} as "
            "the encoder contract gives them (docs/alignment.md)",
        )
        p.add_argument(
            f"--{kind}-backbone-train",
            nargs="*",
            default=[],
            metavar="MODULE",
            help=f"module paths of the {kind} backbone to fine-tune (e.g. net.layer4); "
            "the rest stays frozen",
        )
    p.add_argument(
        "--holdout",
        type=float,
        nargs=2,
        metavar=("TEST_SHARE", "COLD_SHARE"),
        help="evaluation run: learn only from each user's events before their latest "
        "TEST_SHARE, and hold a seeded COLD_SHARE of items out entirely (e.g. 0.2 0.1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--holdout-seed",
        type=int,
        help="seed of the held-out items and events (default: --seed); encoders of several "
        "seeds compared on one evaluation split share it",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--workers",
        type=int,
        help=f"processes preparing inputs (decode, tokenise) ahead of training ({d.align.workers})",
    )
    p.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_pipeline)
    return parser


if __name__ == "__main__":
    sys.exit(main())
