from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

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
from codebooks.clustered import SyntheticEmbeddings
from codebooks.encoder_spec import BackboneRecord, EncoderSpec, TensorSpec


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


FEATURES = {  # a valid features-mode section, as models/export writes it
    "file": "encoder.onnx",
    "int8_file": None,
    "mode": "features",
    "inputs": {"features": ["float32", ["batch", 12]]},
    "output": "embedding",
}
MULTIMODAL = {  # a valid multimodal section, as docs/bundle.md shows it
    "file": "encoder.onnx",
    "int8_file": "encoder.int8.onnx",
    "mode": "multimodal",
    "tokenizer": "tokenizer.json",
    "max_text_tokens": 32,
    "image_size": 64,
    "audio_sample_rate": 16000,
    "audio_samples": 16000,
    "inputs": {
        "input_ids": ["int64", ["batch", "tokens"]],
        "attention_mask": ["int64", ["batch", "tokens"]],
        "image": ["float32", ["batch", 3, 64, 64]],
        "image_mask": ["float32", ["batch"]],
        "audio": ["float32", ["batch", 16000]],
        "audio_mask": ["float32", ["batch"]],
    },
    "output": "embedding",
    "image_backbone": {"name": "resnet.pt2", "sha256": "ab" * 32},
}


def _with_encoder(bundle: Path, encoder: dict[str, Any], **files: dict[str, Any]) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["encoder"] = encoder
    manifest["files"].update(files)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _without(section: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k != key}


@pytest.mark.parametrize(
    ("encoder", "field", "message"),
    [
        (_without(FEATURES, "file"), "encoder.file", "Field required"),
        (_without(FEATURES, "mode"), "encoder.mode", "Field required"),
        (_without(FEATURES, "inputs"), "encoder.inputs", "Field required"),
        ({**FEATURES, "file": 3}, "encoder.file", "Input should be a valid string"),
        ({**FEATURES, "mode": "text"}, "encoder.mode", "Input should be 'multimodal' or"),
        ({**MULTIMODAL, "max_text_tokens": "many"}, "encoder.max_text_tokens", "valid integer"),
        ({**MULTIMODAL, "image_size": 0}, "encoder.image_size", "greater than 0"),
        (
            {**FEATURES, "inputs": {"features": ["float16", ["batch", 12]]}},
            "encoder.inputs.features.0",
            "Input should be 'int64' or 'float32'",
        ),
        (
            {**FEATURES, "inputs": {"features": "float32"}},
            "encoder.inputs.features",
            "Input should be an array",
        ),
        ({**FEATURES, "mode": "multimodal"}, "encoder.tokenizer", "needs a tokenizer"),
        (
            {**MULTIMODAL, "mode": "features"},
            "encoder.inputs",
            "mode 'features' takes inputs ['features']",
        ),
        ({**MULTIMODAL, "image_backbone": {"name": "x.pt2"}}, "encoder.image_backbone.sha256", ""),
        (
            {**FEATURES, "tokeniser": "t.json"},
            "encoder.tokeniser",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_a_malformed_encoder_section_is_refused_naming_the_manifest_and_field(
    writable_bundle: Path, encoder: dict[str, Any], field: str, message: str
) -> None:
    """Refused when the bundle loads, not when the service first runs the encoder."""
    _with_encoder(writable_bundle, encoder)
    where = re.escape(str(writable_bundle / MANIFEST))
    with pytest.raises(
        BundleError, match=rf"^{where}: not a valid manifest: .*{field}: .*{re.escape(message)}"
    ):
        load_bundle(writable_bundle)


@pytest.mark.parametrize(
    ("encoder", "model", "message"),
    [
        (FEATURES, "unlisted", r"encoder.file: 'encoder.onnx' is not listed in its files"),
        (FEATURES, "absent", r"encoder.file: 'encoder.onnx' is missing from the bundle"),
        (
            {**FEATURES, "file": "../elsewhere.onnx"},
            "listed",
            r"encoder.file: '../elsewhere.onnx' is not a file name inside the bundle",
        ),
        (
            {**MULTIMODAL, "int8_file": None, "tokenizer": "/etc/passwd"},
            "listed",
            r"encoder.tokenizer: '/etc/passwd' is not a file name inside the bundle",
        ),
        (
            {**FEATURES, "int8_file": "encoder.int8.onnx"},
            "listed",
            r"encoder.int8_file: 'encoder.int8.onnx' is not listed in its files",
        ),
        (MULTIMODAL, "listed", r"encoder.int8_file: 'encoder.int8.onnx' is not listed"),
        (
            {**MULTIMODAL, "int8_file": None},
            "listed",
            r"encoder.tokenizer: 'tokenizer.json' is not listed in its files",
        ),
    ],
)
def test_encoder_files_must_be_checksummed_files_of_the_bundle(
    writable_bundle: Path, encoder: dict[str, Any], model: str, message: str
) -> None:
    """A model that the checksums do not cover could be swapped unnoticed: refuse it.
    `model`: encoder.onnx is in the bundle and listed, listed but absent, or not listed."""
    onnx = writable_bundle / "encoder.onnx"
    onnx.write_bytes(b"not really a graph")
    entry = {"sha256": sha256_of(onnx), "bytes": onnx.stat().st_size}
    if model != "listed":
        onnx.unlink()
    _with_encoder(writable_bundle, encoder, **({} if model == "unlisted" else {onnx.name: entry}))
    where = re.escape(str(writable_bundle / MANIFEST))
    with pytest.raises(BundleError, match=rf"^{where}: {message}"):
        load_bundle(writable_bundle)


@pytest.mark.parametrize("section", [MULTIMODAL, FEATURES], ids=["multimodal", "features"])
def test_an_encoder_spec_round_trips_through_a_bundle(
    tmp_path: Path,
    embedded: SyntheticEmbeddings,
    config: BuildConfig,
    section: dict[str, Any],
) -> None:
    """spec -> build -> load gives an equal spec, and the JSON on disk is the section as given
    (same keys, same order, no defaults added)."""
    spec = EncoderSpec.model_validate(section)
    extra = {}
    for name in spec.named_files().values():
        (tmp_path / name).write_bytes(name.encode())
        extra[name] = tmp_path / name
    path = build(
        embedded.ids[:1000],
        embedded.embeddings[:1000],
        config,
        tmp_path / "out",
        extra_files=extra,
        encoder=spec,
    )
    loaded = load_bundle(path).manifest.encoder
    assert loaded == spec
    assert loaded.model_fields_set == set(section)
    on_disk = json.loads((path / MANIFEST).read_text())["encoder"]
    assert on_disk == section
    assert list(on_disk) == list(section)


def test_an_encoder_spec_reads_as_typed_fields() -> None:
    spec = EncoderSpec.model_validate(MULTIMODAL)
    assert spec.inputs["image"] == TensorSpec("float32", ["batch", 3, 64, 64])
    assert spec.inputs["image"].shape[2] == spec.image_size
    assert spec.image_backbone == BackboneRecord(name="resnet.pt2", sha256="ab" * 32)
    assert spec.audio_backbone is None
    assert spec.named_files() == {
        "file": "encoder.onnx",
        "int8_file": "encoder.int8.onnx",
        "tokenizer": "tokenizer.json",
    }
    features = EncoderSpec.model_validate(FEATURES)
    assert features.named_files() == {"file": "encoder.onnx"}
    assert features.max_text_tokens == 32  # defaults are read, not written
    assert "max_text_tokens" not in features.model_dump()
