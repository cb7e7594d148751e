"""`python -m models pipeline`: its flags map onto PipelineConfig, its defaults are the config's."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="models/ needs torch: run `make install-train`")

from pathlib import Path

from catalogs.files import Files
from models.__main__ import _parser, pipeline_config
from models.pipeline import PipelineConfig


def test_defaults_are_the_pipeline_defaults() -> None:
    assert pipeline_config(_parser().parse_args(["pipeline"])) == PipelineConfig()


def test_flags_reach_the_config() -> None:
    args = _parser().parse_args(
        [
            "pipeline",
            "--data",
            "movielens",
            "--out",
            "/tmp/a",
            "--synthetic-items",
            "10",
            "--workers",
            "3",
            "--steps",
            "7",
            "--batch-size",
            "3",
            "--seed",
            "5",
            "--no-int8",
            "--resume",
            "--quiet",
            "--train-text-layers",
            "2",
            "--mode",
            "features",
        ]
    )
    config = pipeline_config(args)
    assert (config.data, config.out, config.items, config.mode) == (
        "movielens",
        Path("/tmp/a"),
        10,
        "features",
    )
    assert (config.align.steps, config.align.batch_size, config.align.seed) == (7, 3, 5)
    assert config.align.resume
    assert config.align.workers == 3
    assert not config.align.progress
    assert not config.int8
    assert config.encoder.train_text_layers == 2
    assert config.pairs.seed == config.build.seed == config.seed == 5


def test_your_files_make_a_files_run() -> None:
    args = _parser().parse_args(
        [
            *("pipeline", "--items", "shop/items.parquet", "--events", "shop/events.parquet"),
            *("--group-column", "kind", "--positive-rating", "3.5"),
        ]
    )
    config = pipeline_config(args)
    assert config.data == "files"
    assert config.files == Files(
        Path("shop/items.parquet"), Path("shop/events.parquet"), "kind", 3.5
    )


def test_items_without_events_is_an_error() -> None:
    with pytest.raises(SystemExit, match="--items and --events go together"):
        pipeline_config(_parser().parse_args(["pipeline", "--items", "shop/items.parquet"]))


def test_encoders_of_several_seeds_share_one_evaluation_split() -> None:
    """`--seed` seeds the holdout too, unless `--holdout-seed` names another: `make eval`'s
    second encoder is trained with seed 1 on the split of seed 0."""
    parse = _parser().parse_args
    first = pipeline_config(parse(["pipeline", "--holdout", "0.2", "0.1"]))
    second = pipeline_config(
        parse(["pipeline", "--holdout", "0.2", "0.1", "--seed", "1", "--holdout-seed", "0"])
    )
    alone = pipeline_config(parse(["pipeline", "--holdout", "0.2", "0.1", "--seed", "1"]))
    assert first.holdout == second.holdout
    assert alone.holdout is not None
    assert alone.holdout.seed == 1
