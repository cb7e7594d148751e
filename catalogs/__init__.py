"""The data a model learns from: item catalogs, their interaction logs, the evaluation split.

A user's own catalog comes as two Parquet files (`items.py`, `events.py`; the schema is in
docs/data.md); the built-in sets (the seeded synthetic catalog, MovieLens-100k) are written to
the same schema or meet the same `Catalog` protocol, so every run enters by one door.
"""
