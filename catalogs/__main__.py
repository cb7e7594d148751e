"""`python -m catalogs`: write the built-in sets in the training schema, or check your files.

    python -m catalogs movielens --src data/ml-100k --out data/ml-100k
    python -m catalogs synthetic --items 5000 --events 300000 --out data/synthetic
    python -m catalogs check --items items.parquet --events events.parquet

`check` runs every refusal rule of docs/data.md (media headers included) and exits 2 with the
message when a file is refused, 0 when both would be accepted by the pipeline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from catalogs.errors import DataError
from catalogs.events import POSITIVE_RATING
from catalogs.files import Files, load_files


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except DataError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2


def _movielens(args: argparse.Namespace) -> int:
    from catalogs.movielens import write_movielens

    files = write_movielens(args.src, args.out)
    print(f"movielens: wrote {files.items} and {files.events}")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from catalogs.synthetic import synthetic_catalog, synthetic_interactions, write_synthetic

    catalog = synthetic_catalog(args.items, n_groups=args.groups, seed=args.seed)
    events = synthetic_interactions(catalog, args.events, seed=args.seed)
    files = write_synthetic(catalog, events, args.out, progress=not args.quiet)
    print(f"synthetic: wrote {files.items} and {files.events}")
    return 0


def _check(args: argparse.Namespace) -> int:
    files = Files(args.items, args.events, args.group_column, args.positive_rating)
    with tempfile.TemporaryDirectory() as media:
        catalog, events = load_files(files, Path(media), progress=not args.quiet)
    print(
        f"ok: {len(catalog)} items ({', '.join(['id', *catalog.columns])}), "
        f"{len(events)} events of {events.n_users} users, {int(events.label.sum())} positive"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m catalogs", description=__doc__)
    sub = parser.add_subparsers(required=True)
    m = sub.add_parser("movielens", help="RecBole's ml-100k files -> items/events.parquet")
    m.add_argument("--src", type=Path, default=Path("data/ml-100k"))
    m.add_argument("--out", type=Path, default=Path("data/ml-100k"))
    m.set_defaults(run=_movielens)
    s = sub.add_parser("synthetic", help="the seeded synthetic catalog, covers and clips included")
    s.add_argument("--items", type=int, default=5000)
    s.add_argument("--events", type=int, default=300_000)
    s.add_argument("--groups", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=Path("data/synthetic"))
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=_synthetic)
    c = sub.add_parser("check", help="run every refusal rule on your two files")
    c.add_argument("--items", type=Path, required=True)
    c.add_argument("--events", type=Path, required=True)
    c.add_argument("--group-column")
    c.add_argument("--positive-rating", type=float, default=POSITIVE_RATING)
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=_check)
    return parser


if __name__ == "__main__":
    sys.exit(main())
