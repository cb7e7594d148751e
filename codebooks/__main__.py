"""`python -m codebooks build|inspect|report|export|synth`: make, check, show, export bundles."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

import numpy as np
from pydantic import ValidationError

from codebooks.build import BuildConfig, build
from codebooks.bundle import BundleError, load_bundle
from codebooks.clustered import clustered_embeddings
from codebooks.embeddings import EmbeddingError, load_embeddings, save_embeddings
from codebooks.export import write_exports
from codebooks.report import write_report
from codebooks.summary import describe


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.run(args))
    except (BundleError, EmbeddingError, ValidationError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    ids, x = load_embeddings(args.embeddings, args.ids)
    if args.dim is not None and x.shape[1] != args.dim:
        raise EmbeddingError(
            f"{args.embeddings}: embeddings have d={x.shape[1]}, --dim says {args.dim}"
        )
    config = BuildConfig(**{name: getattr(args, name) for name in BuildConfig.model_fields})
    queries = None
    if args.upload_queries is not None:
        queries = np.load(args.upload_queries, allow_pickle=False)
    path = build(ids, x, config, args.out, progress=True, upload_queries=queries)
    print(f"wrote {path}")
    print(describe(load_bundle(path).manifest))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    print(f"ok: {args.bundle} verified ({len(bundle.manifest.files)} files, checksums and shapes)")
    print(describe(bundle.manifest))
    return 0


def _report(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    out = args.out or Path("reports") / bundle.version
    for path in write_report(bundle, out):
        print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    for path in write_exports(bundle, args.out, vq=not args.no_vq, progress=True):
        print(f"wrote {path}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    catalog = clustered_embeddings(args.n, args.dim, seed=args.seed)
    emb, ids = save_embeddings(args.out, catalog.ids, catalog.embeddings)
    print(f"wrote {emb} and {ids}: {args.n} clustered items, d={args.dim}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codebooks", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each build stage")
    sub = parser.add_subparsers(required=True)
    defaults = BuildConfig()

    p = sub.add_parser("build", help="build a bundle from item embeddings")
    p.add_argument(
        "--embeddings", type=Path, required=True, help=".npy (N x d float32) or .parquet"
    )
    p.add_argument("--ids", type=Path, help=".npy of N item ids (with an .npy --embeddings)")
    p.add_argument(
        "--out", type=Path, default=Path("artifacts"), help="bundle root (default artifacts/)"
    )
    p.add_argument("--dim", type=int, help="expected d; refuse embeddings of another width")
    p.add_argument(
        "--upload-queries",
        type=Path,
        help=".npy (M x d float32) of upload-like embeddings, not in the catalog, to tune an "
        "approximate VQ index on (default: held-out catalog rows)",
    )
    for name, field in BuildConfig.model_fields.items():
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        kind = str if choices else type(getattr(defaults, name))
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            choices=choices,
            default=getattr(defaults, name),
            help=f"{field.description} (default %(default)s)",
        )
    p.set_defaults(run=_build)

    p = sub.add_parser("inspect", help="verify a bundle as the loader does and print its metrics")
    p.add_argument("bundle", type=Path)
    p.set_defaults(run=_inspect)

    p = sub.add_parser("report", help="write PNGs of code usage and a markdown summary")
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, help="folder (default reports/<version>/)")
    p.set_defaults(run=_report)

    p = sub.add_parser("export", help="write items.parquet and sids.parquet for offline joins")
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--no-vq", action="store_true", help="leave out the catalog's VQ codes (slow at 1M+)"
    )
    p.set_defaults(run=_export)

    p = sub.add_parser("synth", help="write clustered synthetic embeddings (.npy pair)")
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("data/synthetic"))
    p.set_defaults(run=_synth)
    return parser


if __name__ == "__main__":
    sys.exit(main())
