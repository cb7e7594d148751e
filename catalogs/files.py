"""A user's two files, items and events, opened together: the pipeline's and the ranking
evaluation's one door for every catalog that is not generated on the fly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from catalogs.events import POSITIVE_RATING, read_events
from catalogs.interactions import Interactions
from catalogs.items import ParquetCatalog, open_items


@dataclass(frozen=True)
class Files:
    items: Path  # Parquet file or folder: `id` and content columns (docs/data.md)
    events: Path  # Parquet file or folder: `user`, `item`, `ts`, `label` or `rating`
    group_column: str | None = None  # an items column to colour the alignment maps by
    positive_rating: float = POSITIVE_RATING  # with `rating` instead of `label`


def load_files(
    files: Files, media_dir: Path | None, *, progress: bool = True
) -> tuple[ParquetCatalog, Interactions]:
    """Check and open both files (items first: events are checked against its ids).

    Images and clips are cached in `media_dir`; None skips them (a ranking evaluation needs
    ids and events only).
    """
    catalog = open_items(files.items, media_dir, group_column=files.group_column, progress=progress)
    events = read_events(files.events, catalog.ids, positive_rating=files.positive_rating)
    return catalog, events
