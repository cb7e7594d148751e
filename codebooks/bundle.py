"""The artifact bundle `artifacts/<version>/`: what every room reads or writes.

A bundle is a folder of files plus `manifest.json`, which lists each file with its sha256 and
size and states the shapes (d, K, L, Nc, N). It is written to a hidden temporary folder and
renamed into place, so a reader never sees half a bundle, and its files are made read-only: a
new build is a new version. `load_bundle` verifies every checksum and shape before anything is
used and refuses a bad bundle with a `BundleError` that names the file. The manifest's
`encoder` section is typed (`codebooks.encoder_spec.EncoderSpec`): a malformed one is refused
naming its field, and the files it names must be checksummed files of the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from codebooks.embeddings import Float32Array
from codebooks.encoder_spec import EncoderSpec
from codebooks.metrics import CollisionMetrics, LevelMetrics
from codebooks.rq import Int32Array, ResidualCodebooks
from codebooks.vq import COMPRESSED, RecallSource, Tuned, ensure_direct_map, set_search

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ITEM_IDS = "item_ids.npy"  # (N,) str: row i of the VQ codebook is this item
VQ_INDEX = "vq.faiss"  # faiss index over the N catalog embeddings
VQ_VECTORS = "vq_vectors.npy"  # (N, d) float32, only when the index keeps codes, not vectors
RQ_CENTROIDS = "rq_centroids.npy"  # (L, Nc, d) float32
RQ_BIAS = "rq_bias.npy"  # (L, Nc) float32, subtracted from squared distance at assignment
RQ_CODES = "rq_codes.npy"  # (N, L) int32, the catalog's RQ codes
SID_SUFFIX = "sid_suffix.npy"  # (N,) int32, disambiguation suffix of the catalog's semantic IDs
CORE_FILES = (ITEM_IDS, VQ_INDEX, RQ_CENTROIDS, RQ_BIAS, RQ_CODES, SID_SUFFIX)


class BundleError(RuntimeError):
    """A bundle that cannot be used; the message names the bundle file at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    sha256: str
    bytes: int


class VQManifest(Tuned):
    """The chosen index and search setting (`Tuned`), and how its recall was measured."""

    target_recall: float
    recall_queries: int  # queries the recall was measured on
    recall_source: RecallSource = "catalog rows"  # bundles before held-out tuning: catalog rows
    candidates: tuple[Tuned, ...] = ()  # with --vq-index auto: every kind measured


class RQManifest(_Strict):
    method: Literal["kmeans", "faiss-rq"]
    balance: Literal["none", "sinkhorn"]
    balance_target: float | None  # least per-level perplexity / Nc asked of the balance
    beam_size: int | None  # faiss-rq's training beam
    niter: int
    train_items: int
    seed: int


class BuildMetrics(_Strict):
    levels: list[LevelMetrics]
    collisions: CollisionMetrics
    max_suffix: int  # largest disambiguation suffix in the catalog (0: no collisions)
    suffix_depth: int  # tokens after the L codes in a semantic ID
    seconds: dict[str, float]  # wall time of each build stage


class Manifest(_Strict):
    schema_version: int
    bundle_version: str
    created_at: datetime
    dim: int
    k: int
    levels: int
    centroids: int
    n_items: int
    vq: VQManifest
    rq: RQManifest
    metrics: BuildMetrics
    encoder: EncoderSpec | None = None  # input spec of encoder.onnx, written by models/
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    item_ids: npt.NDArray[np.str_]
    rq: ResidualCodebooks
    rq_codes: Int32Array
    sid_suffix: Int32Array
    vq_index: Any  # a CPU faiss index
    vectors: Float32Array | None = None  # VQ_VECTORS memory-mapped, when the index has codes

    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    def read_rows(self, rows: npt.NDArray[np.int64]) -> Float32Array:
        """The catalog vectors of `rows` (normalised float32), exact for every index kind."""
        if self.vectors is not None:
            return np.asarray(self.vectors[rows])
        out: Float32Array = self.vq_index.reconstruct_batch(rows)
        return out

    def catalog_vectors(self, start: int, stop: int) -> Float32Array:
        """Rows start..stop-1 of the VQ codebook. Reading them back from an IVF index makes its
        direct map once, which is not thread-safe: call this before the index is shared."""
        if self.vectors is not None:
            return np.array(self.vectors[start:stop])
        ensure_direct_map(self.vq_index)
        out: Float32Array = self.vq_index.reconstruct_n(start, stop - start)
        return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_bundle(
    root: Path,
    *,
    arrays: Mapping[str, np.ndarray],
    vq_index: Any,
    manifest_fields: Mapping[str, Any],
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Write a new bundle version under `root` and return its folder.

    `manifest_fields` is the manifest without `schema_version`, `bundle_version`, `created_at`
    and `files`, which are filled in here. The version is the UTC time plus a content hash.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, array in arrays.items():
            np.save(tmp / name, array, allow_pickle=False)
        faiss.write_index(vq_index, str(tmp / VQ_INDEX))
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        files = {
            p.name: FileEntry(sha256=sha256_of(p), bytes=p.stat().st_size)
            for p in sorted(tmp.iterdir())
        }
        content = hashlib.sha256(
            json.dumps({n: f.sha256 for n, f in files.items()}).encode()
        ).hexdigest()
        now = datetime.now(UTC)
        version = f"{now:%Y%m%dT%H%M%SZ}-{content[:8]}"
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            bundle_version=version,
            created_at=now,
            files=files,
            **manifest_fields,
        )
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        for path in tmp.iterdir():
            with path.open("rb") as f:
                os.fsync(f.fileno())
            path.chmod(0o444)
        final = root / version
        if final.exists():
            raise BundleError(f"{final}: bundle version exists already; bundles are immutable")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_manifest(path: Path) -> Manifest:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; {path} is not a bundle")
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text())
    except ValidationError as err:
        raise BundleError(f"{manifest_path}: not a valid manifest: {_describe(err)}") from err
    if manifest.schema_version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema version {manifest.schema_version}, "
            f"this code reads {SCHEMA_VERSION}"
        )
    return manifest


def _describe(err: ValidationError) -> str:
    """Each error as `field.path: message (got value)`, e.g. `encoder.file: Field required`."""
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"])
        got = "" if e["type"] == "missing" else f" (got {_short(e['input'])})"
        parts.append(f"{where}: {e['msg']}{got}" if where else f"{e['msg']}{got}")
    return "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_files(path: Path, manifest: Manifest) -> None:
    """Every core file and every file the encoder section names is listed (so checksummed),
    and every listed file is present with its size and sha256."""
    named = manifest.encoder.named_files() if manifest.encoder is not None else {}
    for field, name in named.items():
        problem = None
        if Path(name).name != name or name in {".", ".."}:
            problem = "is not a file name inside the bundle"
        elif name not in manifest.files:
            problem = "is not listed in its files, so not checksummed"
        elif not (path / name).is_file():
            problem = "is missing from the bundle"
        if problem:
            raise BundleError(f"{path / MANIFEST}: encoder.{field}: {name!r} {problem}")
    for name in CORE_FILES:
        if name not in manifest.files:
            raise BundleError(f"{path / name}: not listed in {MANIFEST}")
    for name, entry in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: missing (listed in {MANIFEST})")
        if file.stat().st_size != entry.bytes:
            raise BundleError(f"{file}: {file.stat().st_size} bytes, manifest says {entry.bytes}")
        if sha256_of(file) != entry.sha256:
            raise BundleError(f"{file}: sha256 differs from the manifest's; the file was changed")


def load_bundle(path: Path) -> Bundle:
    """Verify and load a bundle; any disagreement raises BundleError naming the file."""
    manifest = load_manifest(path)
    verify_files(path, manifest)
    m = manifest
    item_ids = _array(path, ITEM_IDS, (m.n_items,), "str")
    centroids = _array(path, RQ_CENTROIDS, (m.levels, m.centroids, m.dim), "float32")
    bias = _array(path, RQ_BIAS, (m.levels, m.centroids), "float32")
    rq_codes = _array(path, RQ_CODES, (m.n_items, m.levels), "int32")
    suffix = _array(path, SID_SUFFIX, (m.n_items,), "int32")
    if rq_codes.size and (rq_codes.min() < 0 or rq_codes.max() >= m.centroids):
        raise BundleError(f"{path / RQ_CODES}: codes outside 0..{m.centroids - 1}")
    try:
        index = faiss.read_index(str(path / VQ_INDEX))
    except RuntimeError as err:
        raise BundleError(f"{path / VQ_INDEX}: not a faiss index: {err}") from err
    if index.d != m.dim or index.ntotal != m.n_items:
        raise BundleError(
            f"{path / VQ_INDEX}: holds {index.ntotal} vectors of dim {index.d}, "
            f"manifest says {m.n_items} of dim {m.dim}"
        )
    set_search(index, m.vq.nprobe, m.vq.ef_search)
    vectors = None
    if m.vq.kind in COMPRESSED:
        if VQ_VECTORS not in m.files:
            raise BundleError(f"{path / VQ_VECTORS}: an {m.vq.kind} bundle needs it; not listed")
        vectors = _array(path, VQ_VECTORS, (m.n_items, m.dim), "float32", mmap=True)
    return Bundle(
        path=path,
        manifest=manifest,
        item_ids=item_ids,
        rq=ResidualCodebooks(centroids=centroids, bias=bias),
        rq_codes=rq_codes,
        sid_suffix=suffix,
        vq_index=index,
        vectors=vectors,
    )


def _array(path: Path, name: str, shape: tuple[int, ...], dtype: str, *, mmap: bool = False) -> Any:
    """Load `name` (memory-mapped with `mmap`) and check it against the manifest; dtype "str"
    accepts any unicode width."""
    try:
        array = np.load(path / name, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise BundleError(f"{path / name}: not a plain .npy array: {err}") from err
    dtype_ok = array.dtype.kind == "U" if dtype == "str" else array.dtype == np.dtype(dtype)
    if array.shape != shape or not dtype_ok:
        raise BundleError(
            f"{path / name}: shape {array.shape} of {array.dtype}, the manifest implies "
            f"shape {shape} of {dtype}"
        )
    return array


def latest_bundle(root: Path) -> Path:
    """The newest version under `root` (versions start with their UTC build time)."""
    versions = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))
    if not versions:
        raise BundleError(f"{root}: no bundle found; build one with `python -m codebooks build`")
    return versions[-1]
