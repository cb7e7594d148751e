"""Encoder throughput on CPU: torch eager, ONNX Runtime fp32 and int8, at batch 1, 32 and 256.

Each item is a full multimodal item: 32 text tokens, a 64x64 cover and a 1 s clip. Plain
MiniLM (text only) through ONNX Runtime is measured too, as the yardstick. `python -m
bench.encoder` prints a table and writes bench/results/encoder.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.machine import cpu_name
from codebooks.summary import table
from models.encoder import INPUT_NAMES, EncoderConfig, MultimodalEncoder
from models.export import export_onnx, quantize_int8, random_inputs, session

RESULTS = Path(__file__).resolve().parent / "results"
TOKENS = 32


def items_per_s(fn: Callable[[], object], batch: int, min_seconds: float, min_runs: int) -> float:
    fn()  # warm-up: allocations, ORT's first-run planning
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        fn()
        runs += 1
    return batch * runs / (time.perf_counter() - start)


def full_inputs(config: EncoderConfig, batch: int) -> dict[str, torch.Tensor]:
    """Random items with every token real and both image and audio present."""
    inputs = random_inputs(config, batch, TOKENS, seed=batch)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    inputs["input_ids"][:, 1:] = torch.randint(1000, 30000, (batch, TOKENS - 1))
    inputs["image_mask"] = torch.ones(batch)
    inputs["audio_mask"] = torch.ones(batch)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = EncoderConfig()
    model = MultimodalEncoder(config).eval()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fp32 = export_onnx(model, tmp / "encoder.onnx", full_inputs(config, 2))
        int8 = quantize_int8(fp32, tmp / "encoder.int8.onnx")
        text_only = _export_minilm(model, tmp / "minilm.onnx")
        sessions = {
            "onnxruntime fp32": session(fp32, args.threads),
            "onnxruntime int8": session(int8, args.threads),
        }
        minilm = session(text_only, args.threads)
        for batch in args.batches:
            inputs = full_inputs(config, batch)
            feed = {k: v.numpy() for k, v in inputs.items()}
            args_ = tuple(inputs[n] for n in INPUT_NAMES)

            text_feed = {"input_ids": feed["input_ids"], "attention_mask": feed["attention_mask"]}
            runs: dict[str, Callable[[], object]] = {
                "torch eager": partial(_eager, model, args_),
                **{name: partial(sess.run, None, feed) for name, sess in sessions.items()},
                "MiniLM text only, onnxruntime fp32": partial(minilm.run, None, text_feed),
            }
            for engine, fn in runs.items():
                rate = items_per_s(fn, batch, args.min_seconds, 3)
                rows.append({"engine": engine, "batch": batch, "items_per_s": round(rate, 1)})
                print(f"{engine:36s} batch {batch:4d}: {rate:8.1f} items/s", flush=True)
    result = {
        "threads": args.threads,
        "tokens": TOKENS,
        "image": [3, config.image_size, config.image_size],
        "audio_samples": config.audio_samples,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "rows": rows,
    }
    engines = list(dict.fromkeys(str(r["engine"]) for r in rows))
    speed = {(r["engine"], r["batch"]): r["items_per_s"] for r in rows}
    rates = [[e, *(f"{speed[e, b]:.1f}" for b in args.batches)] for e in engines]
    headers = ["engine", *(f"batch {b}" for b in args.batches)]
    print("\n" + table(headers, rates, align="l" + "r" * len(args.batches), pad=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoder.json").write_text(json.dumps(result, indent=2) + "\n")


def _eager(model: MultimodalEncoder, args: tuple[torch.Tensor, ...]) -> object:
    with torch.inference_mode():
        return model(*args)


def _export_minilm(model: MultimodalEncoder, path: Path) -> Path:
    """The text tower alone (MiniLM + mean pooling): the yardstick the issue quotes."""
    ids = torch.randint(1000, 30000, (2, TOKENS))
    mask = torch.ones_like(ids)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        model.text,
        (ids, mask),
        input_names=["input_ids", "attention_mask"],
        dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    assert program is not None
    program.save(str(path))
    return path


if __name__ == "__main__":
    main()
