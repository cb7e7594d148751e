from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from codebooks.build import BuildConfig, build
from codebooks.bundle import (
    MANIFEST,
    RQ_CENTROIDS,
    RQ_CODES,
    VQ_INDEX,
    Bundle,
    BundleError,
    latest_bundle,
    load_bundle,
    sha256_of,
)
from codebooks.synthetic import SyntheticEmbeddings


def test_a_built_bundle_loads_with_its_shapes_and_metrics(
    bundle: Bundle, config: BuildConfig
) -> None:
    m = bundle.manifest
    assert (m.dim, m.k, m.levels, m.centroids, m.n_items) == (16, 5, 4, 16, 3000)
    assert bundle.rq.centroids.shape == (4, 16, 16)
    assert bundle.rq_codes.shape == (3000, 4)
    assert bundle.vq_index.ntotal == 3000
    mse = [lv.mse for lv in m.metrics.levels]
    assert mse == sorted(mse, reverse=True)  # residual error falls level by level
    assert all(0 < lv.utilisation <= 1 and 1 <= lv.perplexity <= 16 for lv in m.metrics.levels)
    assert m.metrics.collisions.items == 3000
    assert m.vq.kind == "flat"
    assert m.rq.seed == config.seed


def test_every_file_is_listed_with_its_checksum_and_read_only(bundle_path: Path) -> None:
    manifest = json.loads((bundle_path / MANIFEST).read_text())
    on_disk = {p.name for p in bundle_path.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert sha256_of(bundle_path / name) == entry["sha256"]
        assert not (bundle_path / name).stat().st_mode & (
            stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        )


def test_a_changed_byte_is_refused_naming_the_file(writable_bundle: Path) -> None:
    path = writable_bundle / RQ_CENTROIDS
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{RQ_CENTROIDS}: sha256 differs"):
        load_bundle(writable_bundle)


def test_a_missing_file_is_refused_naming_the_file(writable_bundle: Path) -> None:
    (writable_bundle / VQ_INDEX).unlink()
    with pytest.raises(BundleError, match=rf"{VQ_INDEX}: missing"):
        load_bundle(writable_bundle)


def test_a_missing_manifest_is_refused(writable_bundle: Path) -> None:
    (writable_bundle / MANIFEST).unlink()
    with pytest.raises(BundleError, match=rf"{MANIFEST}: missing"):
        load_bundle(writable_bundle)


def test_a_manifest_dim_that_disagrees_with_the_files_is_refused(writable_bundle: Path) -> None:
    manifest = json.loads((writable_bundle / MANIFEST).read_text())
    manifest["dim"] = 32
    (writable_bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{RQ_CENTROIDS}: shape \(4, 16, 16\).*\(4, 16, 32\)"):
        load_bundle(writable_bundle)


def test_an_array_of_the_wrong_dim_is_refused_even_with_its_checksum(writable_bundle: Path) -> None:
    path = writable_bundle / RQ_CODES
    np.save(path, np.zeros((3000, 5), dtype=np.int32))
    manifest = json.loads((writable_bundle / MANIFEST).read_text())
    manifest["files"][RQ_CODES] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    (writable_bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{RQ_CODES}: shape \(3000, 5\)"):
        load_bundle(writable_bundle)


def test_a_new_build_is_a_new_version_and_latest_finds_it(
    tmp_path: Path, embedded: SyntheticEmbeddings, config: BuildConfig
) -> None:
    first = build(embedded.ids, embedded.embeddings, config, tmp_path)
    second = build(embedded.ids[:2000], embedded.embeddings[:2000], config, tmp_path)
    assert first != second
    assert latest_bundle(tmp_path) == max(first, second)
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written is left behind


def test_latest_says_how_to_build_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle found"):
        latest_bundle(tmp_path)


def test_a_build_that_fails_leaves_nothing(tmp_path: Path, embedded: SyntheticEmbeddings) -> None:
    with pytest.raises(ValueError, match="at least max"):
        build(embedded.ids[:10], embedded.embeddings[:10], BuildConfig(gpu="off"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ({"file": "encoder.onnx"}, r"encoder.onnx: not listed in manifest.json"),
        (
            {"file": "../elsewhere.onnx"},
            r"'../elsewhere.onnx' is not a file name inside the bundle",
        ),
        ({"tokenizer": "/etc/passwd"}, r"'/etc/passwd' is not a file name inside the bundle"),
    ],
)
def test_encoder_files_must_be_checksummed_files_of_the_bundle(
    writable_bundle: Path, encoder: dict[str, str], message: str
) -> None:
    """A model that the checksums do not cover could be swapped unnoticed: refuse it."""
    manifest = json.loads((writable_bundle / MANIFEST).read_text())
    manifest["encoder"] = encoder
    (writable_bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(writable_bundle)
