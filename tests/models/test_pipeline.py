"""The whole pipeline on tiny data: one bundle that codebooks accepts, which a torch-free
reader can serve from using nothing but the bundle and its manifest."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from catalogs.files import load_files
from catalogs.holdout import HOLDOUT_FILE, Holdout, load_cold_items
from catalogs.movielens import movielens_files, write_movielens
from catalogs.synthetic import synthetic_catalog, synthetic_interactions, write_synthetic
from codebooks.bundle import load_bundle
from codebooks.quantizer import Quantizer
from models.align import AlignConfig
from models.export import encoder_spec, session
from models.pipeline import PipelineConfig, run
from tests.catalogs.test_movielens import ITEMS, RATINGS
from tests.models.small import SMALL_BUILD, small_synthetic

Run = tuple[PipelineConfig, Path, dict[str, Any]]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("pipeline")
    config = small_synthetic(root)
    result = run(config)
    assert result is not None  # a single process is rank 0
    return config, result.bundle, result.report


def test_writes_one_valid_bundle_with_the_encoder(
    synthetic_run: Run,
) -> None:
    config, path, report = synthetic_run
    assert [p for p in config.out.iterdir() if not p.name.startswith(".")] == [path]
    bundle = load_bundle(path)  # verifies every checksum and shape
    manifest = bundle.manifest
    assert manifest.n_items == 240
    assert manifest.encoder == encoder_spec(config.encoder, int8=report["int8"]["kept"])
    assert {"encoder.onnx", "tokenizer.json", "alignment.json"} <= set(manifest.files)
    assert ("encoder.int8.onnx" in manifest.files) == report["int8"]["kept"]
    assert max(report["parity_max_abs_diff"].values()) <= 1e-4
    assert json.loads((path / "alignment.json").read_text())["pairs"] == report["pairs"]
    assert (config.reports / "alignment-synthetic.png").is_file()
    assert (config.reports / "checkpoints" / "align.pt").is_file()
    for stage in ("before", "after"):
        assert set(report[stage]) >= {"recall@10", "recall@50", "group_purity@10"}


def test_bundle_serves_without_torch_code(synthetic_run: Run) -> None:
    """Encode catalog items as the service would: tokenizer.json, the manifest's constants,
    encoder.onnx, then the quantizer. The codes must be the catalog's own."""
    _, path, _ = synthetic_run
    bundle = load_bundle(path)
    spec = bundle.manifest.encoder
    assert spec is not None
    assert spec.tokenizer is not None
    catalog = synthetic_catalog(240, n_groups=6, seed=0)
    rows = np.arange(0, 240, 7)
    content = catalog.content(rows)
    tokenizer = Tokenizer.from_file(str(path / spec.tokenizer))
    encodings = tokenizer.encode_batch(content.texts)
    feed: dict[str, np.ndarray] = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "image": content.image,
        "image_mask": content.image_mask,
        "audio": content.audio,
        "audio_mask": content.audio_mask,
    }
    assert feed["image"].shape[1:] == (3, spec.image_size, spec.image_size)
    assert feed["audio"].shape[1] == spec.audio_samples
    emb = session(path / spec.file).run([spec.output], feed)[0]
    vq, rq = Quantizer(bundle, gpu="off").encode(emb)
    np.testing.assert_array_equal(vq[:, 0], rows)  # each item's nearest VQ row is itself
    assert (rq == bundle.rq_codes[rows]).all(axis=1).mean() >= 0.95


def _tiny_movielens(tmp_path: Path, **settings: Any) -> PipelineConfig:
    """63 films and 3,000 ratings in RecBole's files; the pipeline in features mode on them."""
    data = tmp_path / "ml"
    data.mkdir()
    movies = "".join(
        f"{i}\tMovie {i} part {i % 7}\t199{i % 10}\t{['Drama', 'Comedy', 'Action'][i % 3]}\n"
        for i in range(10, 70)
    )
    (data / "ml-100k.item").write_text(ITEMS + movies)
    rng = np.random.default_rng(0)
    ratings = "".join(
        f"{u}\t{int(i)}\t{rng.integers(3, 6)}\t{1000 + k}\n"
        for k, (u, i) in enumerate(
            zip(rng.integers(0, 40, 3000), rng.integers(10, 70, 3000), strict=True)
        )
    )
    (data / "ml-100k.inter").write_text(RATINGS + ratings)
    write_movielens(data, data)
    return PipelineConfig(
        data="movielens",
        data_dir=data,
        mode="features",
        out=tmp_path / "artifacts",
        report_dir=tmp_path / "reports",
        align=AlignConfig(steps=3, batch_size=16, progress=False),
        build=SMALL_BUILD,
        **settings,
    )


def test_movielens_in_features_mode(tmp_path: Path) -> None:
    result = run(_tiny_movielens(tmp_path))
    assert result is not None
    manifest = load_bundle(result.bundle).manifest
    assert manifest.n_items == 63
    assert manifest.encoder is not None
    assert manifest.encoder.mode == "features"
    inputs = manifest.encoder.model_dump(mode="json")["inputs"]
    assert inputs == {"features": ["float32", ["batch", 384]]}
    assert "tokenizer.json" not in manifest.files


def test_a_holdout_keeps_the_test_period_and_cold_items_out(tmp_path: Path) -> None:
    """What the ranking evaluation relies on: pairs from the past of warm items only, cold
    items outside the codebooks, and their embeddings from the exported graph in the bundle."""
    holdout = Holdout(test_share=0.2, cold_share=0.1, seed=2)
    config = _tiny_movielens(tmp_path, holdout=holdout)
    result = run(config)
    assert result is not None
    movies, events = load_files(movielens_files(config.data_dir), None)
    cold = holdout.cold_items(len(movies))
    assert result.report["events"] == holdout.training_events(events, len(movies)).sum()
    assert result.report["pairs"]["future"] > 0  # behaviour from after training, to score on
    assert {"future recall@10", "future recall@50"} <= set(result.report["after"])
    bundle = load_bundle(result.bundle)
    assert sorted(bundle.item_ids.tolist()) == sorted(movies.ids[~cold].tolist())
    assert HOLDOUT_FILE in bundle.manifest.files  # checksummed like every bundle file
    held = load_cold_items(result.bundle)
    assert held is not None
    assert held.holdout == holdout
    assert held.ids.tolist() == movies.ids[cold].tolist()
    assert held.embeddings.shape == (int(cold.sum()), bundle.manifest.dim)
    np.testing.assert_allclose(np.linalg.norm(held.embeddings, axis=1), 1.0, atol=1e-5)
    vq, _ = Quantizer(bundle, gpu="off").encode(held.embeddings)
    assert (vq < bundle.manifest.n_items).all()  # their neighbours are warm catalog rows


def test_your_own_files_go_the_same_way(tmp_path: Path) -> None:
    """A user's two Parquet files, covers and clips as bytes: checked, decoded in a worker
    process, aligned, exported and built into a bundle like a built-in set."""
    catalog = synthetic_catalog(120, n_groups=6, seed=0)
    events = synthetic_interactions(catalog, 8000, seed=0)
    files = write_synthetic(catalog, events, tmp_path / "shop", progress=False)
    base = small_synthetic(tmp_path)
    config = replace(
        base,
        data="files",
        files=files,
        int8=False,
        align=replace(base.align, steps=2, workers=1),
    )
    result = run(config)
    assert result is not None
    bundle = load_bundle(result.bundle)
    assert bundle.item_ids.tolist() == catalog.ids.tolist()
    assert bundle.manifest.encoder is not None
    assert bundle.manifest.encoder.mode == "multimodal"
    assert result.report["data"] == "files"
    assert result.report["events"] == len(events)
    assert (config.reports / "media" / "image.bin").is_file()
    assert (config.reports / "media" / "audio.bin").is_file()
