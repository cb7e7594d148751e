"""Item embeddings at the room's edge: reading them from disk and checking the contract.

Every embedding that enters `codebooks` (a catalog to build from, a batch to encode) passes
through `checked`, so the build and the runtime quantizer see vectors prepared the same way:
n-by-d float32, finite, non-zero, L2-normalised (similarity is inner product).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]

# A vector whose norm is below this carries no direction; normalising it would amplify noise.
MIN_NORM = 1e-6


class EmbeddingError(ValueError):
    """An embedding batch that breaks the contract; `row` is the first offending row, if any."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


def checked(embeddings: object, dim: int, *, what: str = "embeddings") -> Float32Array:
    """Validate an n-by-`dim` float32 batch and return it L2-normalised (a new array).

    Refuses, naming the row and the limit: a non-array, a dtype other than float32, a shape
    other than (n, dim) with n >= 1, NaN or inf, a row whose norm is below `MIN_NORM`.
    """
    if not isinstance(embeddings, np.ndarray):
        raise EmbeddingError(f"{what}: expected a numpy array, got {type(embeddings).__name__}")
    if embeddings.dtype != np.float32:
        raise EmbeddingError(f"{what}: dtype must be float32, got {embeddings.dtype}")
    if embeddings.ndim != 2 or embeddings.shape[1] != dim or embeddings.shape[0] == 0:
        raise EmbeddingError(f"{what}: shape must be (n >= 1, {dim}), got {embeddings.shape}")
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise EmbeddingError(f"{what}: row {row} contains NaN or inf", row=row)
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)  # float32 overflows past 1e19
    small = norms < MIN_NORM
    if small.any():
        row = int(np.flatnonzero(small)[0])
        raise EmbeddingError(
            f"{what}: row {row} has norm {norms[row]:.3g}, below the minimum {MIN_NORM:g}",
            row=row,
        )
    out: Float32Array = np.ascontiguousarray(embeddings / norms[:, None], dtype=np.float32)
    if not np.isfinite(out).all():  # a finite row whose norm is not (beyond 1e308)
        row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise EmbeddingError(f"{what}: row {row} is too large to normalise", row=row)
    return out


def load_embeddings(
    embeddings_path: Path, ids_path: Path | None = None
) -> tuple[npt.NDArray[np.str_], Float32Array]:
    """Read a catalog: an `.npy` pair (N-by-d float32 + N ids) or one Parquet file.

    Parquet holds a column `id` and a column `embedding` (a list of floats per row).
    Ids are returned as strings; they must be unique and match the rows one to one.
    """
    if embeddings_path.suffix == ".parquet":
        ids, x = _read_parquet(embeddings_path)
    else:
        if ids_path is None:
            raise EmbeddingError(f"{embeddings_path}: an .npy catalog needs --ids (N item ids)")
        x = np.load(embeddings_path, allow_pickle=False)
        ids = np.load(ids_path, allow_pickle=False).astype(str)
        if ids.ndim != 1 or len(ids) != len(x):
            raise EmbeddingError(
                f"{ids_path}: expected {len(x)} ids (one per row of {embeddings_path.name}), "
                f"got shape {ids.shape}"
            )
    if x.ndim != 2:
        raise EmbeddingError(f"{embeddings_path}: expected an N-by-d matrix, got {x.shape}")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        dup = str(unique[counts > 1][0])
        raise EmbeddingError(f"{ids_path or embeddings_path}: item id {dup!r} appears twice")
    return ids, np.ascontiguousarray(x, dtype=np.float32)


def _read_parquet(path: Path) -> tuple[npt.NDArray[np.str_], Float32Array]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pyarrow is in the train and dev extras, not in serve
        raise EmbeddingError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
        ) from err
    table = pq.read_table(path, columns=["id", "embedding"])
    ids = np.asarray(table.column("id").to_pylist(), dtype=str)
    x = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    return ids, x


def save_embeddings(
    directory: Path, ids: npt.NDArray[np.str_], x: Float32Array
) -> tuple[Path, Path]:
    """Write the `.npy` pair `load_embeddings` reads: `embeddings.npy` and `ids.npy`."""
    directory.mkdir(parents=True, exist_ok=True)
    emb_path, ids_path = directory / "embeddings.npy", directory / "ids.npy"
    np.save(emb_path, x)
    np.save(ids_path, ids.astype(str))
    return emb_path, ids_path
