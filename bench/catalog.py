"""A user's catalog at scale: 1M items with covers and 10M events through the pipeline's door.

    python -m bench.catalog [--items 1000000] [--events 10000000] [--skip STAGE ...] [--rewrite]

(`make bench-catalog`). Each stage is timed, with the peak memory while it ran:

1. **write**: the two Parquet files of docs/data.md, generated once under `--data`
   (data/bench-catalog/items-<N>/, reused unless `--rewrite`): N items with `id`, `text` (the
   synthetic catalog's titles), `image` (32x32 PNG covers as bytes, rendered vectorised, ~10%
   null) and `group`, in row groups of 10k rows; M events (`user`, `item`, `ts`, `label`, ids
   as strings) in time order. Not part of the pipeline: it runs in a process of its own, and
   its time is reported all the same.
2. **open**: `open_items(items, media_dir, group_column="group")` with an empty media cache:
   every row checked, every cover copied into the flat cache file; then once more with the
   cache in place (what a second run pays).
3. **events**: `read_events(events, catalog.ids)`.
4. **pairs**: `mine_pairs(events, N, PairConfig())`, with the seconds and peak RSS of its
   parts (BPR ID embeddings, User2Item, Swing, merge, split).
5. **align**: `MultimodalEncoder(EncoderConfig())` (MiniLM frozen) fed by
   `catalog_inputs(catalog, tokenizer, None)`, i.e. no text cache: decoding covers, tokenising
   and the MiniLM forward all run per batch. First the parts of one batch of 256 items (the
   CPU preparation, each tower's forward, one whole training step), then `train` on the mined
   pairs for `--align-steps` steps with each of `--workers` (DataLoader worker processes).
   With `--skip pairs`, on stand-in pairs (`standin_pairs`) instead, so that alignment can
   be timed at scale without waiting for mining.

Peak memory of a stage is this process's high-water RSS while it ran (VmHWM, reset through
/proc/self/clear_refs at the stage's start; it includes what earlier stages still hold, so
"added" is the peak minus the RSS at the start), and the RSS of child processes (DataLoader
workers, sampled every 50 ms; the file writer's own peak). Prints a Markdown table and writes
bench/results/catalog-<timestamp>.json, rewritten after every stage so that a stopped run
keeps what it finished. Not a test: numbers depend on the machine (and on what else runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

import models.pairs
from bench.machine import machine
from catalogs.events import read_events
from catalogs.interactions import Interactions
from catalogs.items import ParquetCatalog, open_items
from catalogs.synthetic import SyntheticCatalog, synthetic_catalog, synthetic_interactions
from models.align import AlignConfig, catalog_inputs, info_nce, train
from models.encoder import INPUT_NAMES, EncoderConfig, MultimodalEncoder, load_tokenizer
from models.pairs import MinedPairs, PairConfig, merge_pairs, mine_pairs

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("write", "open", "events", "pairs", "align")
MIB = 1024 * 1024
GROUPS = 32  # businesses of the synthetic catalog: the `group` column
COVER = 32  # covers are COVER x COVER PNGs (the encoder resizes them to 64 x 64)
ROW_GROUP = 10_000  # items per Parquet row group
EVENT_CHUNK = 1_000_000  # events per Parquet write
EPOCH = 1_700_000_000  # the log's first second


# ----------------------------------------------------------------------------- memory, time


def rss_mib(process: psutil.Process | None = None) -> float:
    return (process or psutil.Process()).memory_info().rss / MIB


def _reset_high_water() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _high_water_mib() -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


@dataclass
class Stage:
    """One measured stage: seconds, memory, and stage-specific numbers in `extra`."""

    name: str
    seconds: float = 0.0
    rss_start_mib: float = 0.0
    peak_rss_mib: float = 0.0
    children_peak_rss_mib: float = 0.0
    cpu_s: float = 0.0  # CPU seconds of this process and its finished children (workers)
    load_1min: float = 0.0  # the machine's load average at the end: others' work shows here
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def added_mib(self) -> float:
        return self.peak_rss_mib - self.rss_start_mib


class _Sampler(threading.Thread):
    """This process's and its children's RSS every `every` seconds; keeps the maxima."""

    def __init__(self, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.children_peak = every, 0.0, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while True:
            self.peak = max(self.peak, rss_mib(me))
            total = 0.0
            for child in me.children(recursive=True):
                try:
                    total += rss_mib(child)
                except psutil.Error:
                    continue
            self.children_peak = max(self.children_peak, total)
            if self._stop_event.wait(self.every):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Report:
    """The run's JSON, written again at the start of every stage and at the end, so a run
    that is stopped (or runs out of memory) still leaves the stages it finished."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.head = path, head
        self.stages: list[Stage] = []
        self.notes: list[str] = []

    def as_dict(self, running: str | None) -> dict[str, Any]:
        return {
            **self.head,
            "stages": [{**asdict(s), "added_mib": s.added_mib} for s in self.stages],
            "notes": self.notes,
            "running": running,  # the stage under way when this was written; None: finished
        }

    def save(self, running: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.as_dict(running), indent=2) + "\n")


@contextmanager
def measure(name: str, report: Report) -> Iterator[Stage]:
    """Time the block and record its peak memory as a Stage of `report`."""
    report.save(running=name)
    stage = Stage(name)
    exact = _reset_high_water()
    stage.rss_start_mib = rss_mib()
    sampler = _Sampler()
    sampler.start()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    try:
        yield stage
    finally:
        stage.seconds = time.perf_counter() - start
        stage.cpu_s = _cpu_seconds() - cpu
        stage.load_1min = os.getloadavg()[0]
        sampler.stop()
        high_water = _high_water_mib() if exact else None
        stage.peak_rss_mib = max(stage.peak_rss_mib, sampler.peak, high_water or 0.0)
        stage.children_peak_rss_mib = sampler.children_peak
        report.stages.append(stage)
        print(
            f"{name}: {stage.seconds:.1f} s, peak RSS {stage.peak_rss_mib:,.0f} MiB "
            f"(+{stage.added_mib:,.0f}), children {stage.children_peak_rss_mib:,.0f} MiB, "
            f"CPU {stage.cpu_s:.1f} s, load {stage.load_1min:.1f}",
            flush=True,
        )


@contextmanager
def timed_calls(
    module: ModuleType, names: tuple[str, ...], stage: Stage
) -> Iterator[dict[str, dict[str, float]]]:
    """Seconds spent in each of `module`'s functions `names` while the block runs, and this
    process's peak RSS during each (they are wrapped in the module's namespace, so calls from
    inside the module are counted). The high-water mark is reset for each call; what it held
    before is kept in `stage`, whose own peak thus stays the stage's."""
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    peaks: dict[str, float] = dict.fromkeys(names, 0.0)
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            before = _high_water_mib()
            stage.peak_rss_mib = max(stage.peak_rss_mib, before or 0.0)
            exact = before is not None and _reset_high_water()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                after = _high_water_mib() if exact else None
                peaks[name] = max(peaks[name], after or 0.0)
                stage.peak_rss_mib = max(stage.peak_rss_mib, after or 0.0)

        return timed

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield {"seconds": seconds, "peak_rss_mib": peaks}
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


# ----------------------------------------------------------------------------- the two files


def png_rgb(pixels: npt.NDArray[np.uint8], level: int = 6) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (8-bit RGB, no filter, zlib): a third of PIL's time."""
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0 on every row
    rows[:, 1:] = pixels.reshape(height, 3 * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + chunk(b"IEND", b"")
    )


def _palette(k: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """(B,) indices -> (B, 3) distinct saturated RGB (golden-angle hues), as the synthetic
    catalog's covers use."""
    h = (k * 0.618034) % 1.0
    rgb = np.abs(((h[:, None] * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1
    out: npt.NDArray[np.float32] = (0.15 + 0.85 * np.clip(rgb, 0, 1)).astype(np.float32)
    return out


class Covers:
    """Covers in the synthetic catalog's look, smaller and cheap to render: the base picture
    depends only on (style, business), so those few are drawn once, vectorised (the style's
    striped colour, the business's corner patch), and each item adds one of a bank of noise
    tiles; a row's cover is then one gather and one add."""

    def __init__(self, n_groups: int, rng: np.random.Generator, tiles: int = 256) -> None:
        style, business = np.divmod(np.arange(n_groups * n_groups, dtype=np.int64), n_groups)
        yy, xx = np.mgrid[0:COVER, 0:COVER].astype(np.float32) / COVER
        angle = (np.pi * (style % 8) / 8)[:, None, None]
        freq = (3 + style % 5)[:, None, None]
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        img = _palette(style)[:, None, None, :] * (0.6 + 0.4 * stripes[..., None])  # (K, S, S, 3)
        patch = COVER // 8
        iy, ix = np.mgrid[0:COVER, 0:COVER]
        y0 = np.where(business % 2 == 0, 0, COVER - patch)[:, None, None]
        x0 = np.where(business // 2 % 2 == 0, 0, COVER - patch)[:, None, None]
        corner = (iy >= y0) & (iy < y0 + patch) & (ix >= x0) & (ix < x0 + patch)  # (K, S, S)
        mixed = 0.5 * img + 0.5 * _palette(business * 7 + 3)[:, None, None, :]
        img = np.where(corner[..., None], mixed, img)
        self.n_groups = n_groups
        self.base = np.round(np.clip(img, 0, 1) * 255.0).astype(np.int16)  # (K, S, S, 3)
        self.noise = np.round(rng.normal(0.0, 5.0, (tiles, COVER, COVER, 3))).astype(np.int16)
        self.rng = rng

    def render(
        self, catalog: SyntheticCatalog, rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint8]:
        """(B, COVER, COVER, 3) uint8 covers of catalog rows `rows`."""
        combo = catalog.style[rows] * self.n_groups + catalog.business[rows]
        tile = self.rng.integers(0, len(self.noise), size=len(rows))
        out: npt.NDArray[np.uint8] = np.clip(self.base[combo] + self.noise[tile], 0, 255).astype(
            np.uint8
        )
        return out


def write_items(
    path: Path, catalog: SyntheticCatalog, *, seed: int, progress: bool
) -> dict[str, Any]:
    """The items file, ROW_GROUP rows at a time (bounded memory), via a temporary name."""
    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("image", pa.binary()), ("group", pa.int32())]
    )
    ids = catalog.ids
    covers = Covers(GROUPS, np.random.default_rng((seed, 17)))
    tmp = path.with_suffix(".tmp")
    n_covers = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in tqdm(
            range(0, len(catalog), ROW_GROUP), desc="write items", disable=not progress
        ):
            rows = np.arange(start, min(start + ROW_GROUP, len(catalog)))
            pixels = covers.render(catalog, rows)
            has = catalog.has_image[rows]
            image = [png_rgb(pixels[j]) if has[j] else None for j in range(len(rows))]
            n_covers += int(has.sum())
            batch = [
                pa.array(ids[rows].tolist(), pa.string()),
                pa.array(catalog.texts(rows), pa.string()),
                pa.array(image, pa.binary()),
                pa.array(catalog.business[rows], pa.int32()),
            ]
            writer.write_table(pa.table(batch, schema=schema), row_group_size=ROW_GROUP)
    tmp.replace(path)
    return {"covers": n_covers}


def write_events(
    path: Path, catalog: SyntheticCatalog, n_events: int, *, seed: int
) -> dict[str, Any]:
    """The events file: the synthetic log in time order (as a log is exported), ids as
    strings, EVENT_CHUNK rows per write, via a temporary name."""
    log = synthetic_interactions(catalog, n_events, seed=seed)
    order = np.argsort(log.ts, kind="stable")
    dictionary = pa.array(catalog.ids.tolist(), pa.string())
    schema = pa.schema(
        [("user", pa.string()), ("item", pa.string()), ("ts", pa.int64()), ("label", pa.int8())]
    )
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(order), EVENT_CHUNK):
            sel = order[start : start + EVENT_CHUNK]
            user = pc.binary_join_element_wise(
                "user-", pa.array(log.user[sel]).cast(pa.string()), ""
            )
            item = pa.DictionaryArray.from_arrays(
                pa.array(log.item[sel], pa.int32()), dictionary
            ).dictionary_decode()
            batch = [
                user,
                item,
                pa.array(log.ts[sel] + EPOCH, pa.int64()),
                pa.array(log.label[sel].astype(np.int8), pa.int8()),
            ]
            writer.write_table(pa.table(batch, schema=schema))
    tmp.replace(path)
    return {"users": log.n_users, "positives": int(log.label.sum())}


def write_files(
    items_path: Path | None,
    events_path: Path | None,
    n_items: int,
    n_events: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """The files not None, from one synthetic catalog; seconds and peak RSS of each."""
    synthetic = synthetic_catalog(n_items, n_groups=GROUPS, seed=seed)
    out: dict[str, Any] = {}
    if items_path is not None:
        t = time.perf_counter()
        out.update(write_items(items_path, synthetic, seed=seed, progress=progress))
        out["items_s"] = time.perf_counter() - t
    if events_path is not None:
        t = time.perf_counter()
        out.update(write_events(events_path, synthetic, n_events, seed=seed))
        out["events_s"] = time.perf_counter() - t
    out["writer_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ----------------------------------------------------------------------------- alignment


def standin_pairs(events: Interactions, n_items: int) -> MinedPairs:
    """Pairs for timing alignment without mining (`--skip pairs`): each positive event with
    the same user's previous positive event, deduplicated. Throughput does not depend on
    which pairs they are, only on the rows a batch draws, which are spread the same way."""
    positives = events.positives()
    same_user = positives.user[1:] == positives.user[:-1]
    raw = np.stack([positives.item[:-1][same_user], positives.item[1:][same_user]], axis=1)
    train = merge_pairs(raw, n_items=n_items)
    return MinedPairs(train, np.zeros((0, 2), dtype=np.int64), {"train": len(train)})


def _mean_seconds(fn: Callable[[int], object], repeats: int) -> float:
    """Mean seconds of fn(i) for i in 1..repeats, after fn(0) as a warm-up."""
    fn(0)
    start = time.perf_counter()
    for i in range(1, repeats + 1):
        fn(i)
    return (time.perf_counter() - start) / repeats


def batch_parts(
    model: MultimodalEncoder,
    catalog: ParquetCatalog,
    pairs: MinedPairs,
    batch_pairs: int,
    repeats: int,
) -> dict[str, float]:
    """Seconds per batch of 2 x `batch_pairs` items: CPU preparation (`catalog_inputs`: text
    take, cover decoding, tokenising), each tower's forward, and a whole training step
    (forward of all towers, InfoNCE, backward, AdamW) on prepared inputs."""
    tokenizer = load_tokenizer(model.config.max_text_tokens)
    inputs_fn = catalog_inputs(catalog, tokenizer, None)
    rng = np.random.default_rng(1)

    def rows(i: int) -> npt.NDArray[np.int64]:
        del i
        chosen = pairs.train[rng.integers(0, len(pairs.train), batch_pairs)]
        return np.concatenate([chosen[:, 0], chosen[:, 1]])

    out = {"prepare_s": _mean_seconds(lambda i: inputs_fn(rows(i)), repeats)}
    inputs = inputs_fn(rows(0))
    args = [inputs[name] for name in INPUT_NAMES]
    model.eval()
    with torch.no_grad():
        out["text_forward_s"] = _mean_seconds(lambda _: model.text(args[0], args[1]), repeats)
        out["image_forward_s"] = _mean_seconds(lambda _: model.image(args[2]), repeats)
        out["audio_forward_s"] = _mean_seconds(lambda _: model.audio(args[4]), repeats)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(_: int) -> float:
        emb = model(*args)
        loss = info_nce(emb[:batch_pairs], emb[batch_pairs:], 0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss.item())

    out["train_step_s"] = _mean_seconds(step, repeats)
    model.eval()
    return out


def align_throughput(
    model: MultimodalEncoder,
    catalog: ParquetCatalog,
    pairs: MinedPairs,
    steps: int,
    batch_pairs: int,
    workers: int,
) -> dict[str, float]:
    """`train` for `steps` steps on the mined pairs, inputs prepared by `workers` processes."""
    tokenizer = load_tokenizer(model.config.max_text_tokens)
    config = AlignConfig(steps=steps, batch_size=batch_pairs, workers=workers, progress=False)
    start = time.perf_counter()
    result = train(model, catalog_inputs(catalog, tokenizer, None), pairs.train, config)
    seconds = time.perf_counter() - start
    return {
        "workers": workers,
        "steps": steps,
        "batch_pairs": batch_pairs,
        "pairs_per_s": result.pairs_per_s,
        "items_per_s": 2 * result.pairs_per_s,
        "train_call_s": seconds,
        "loss_first": result.losses[0],
        "loss_last": result.losses[-1],
    }


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Args:
    items: int
    events: int
    data: Path
    skip: tuple[str, ...]
    rewrite: bool
    align_steps: int
    align_batch: int
    workers: tuple[int, ...]
    part_repeats: int
    threads: int
    seed: int
    progress: bool
    out: Path


def paths(args: Args) -> tuple[Path, Path, Path]:
    """(folder, items file, events file): one items file per size, its logs beside it."""
    folder = args.data / f"items-{args.items}"
    return folder, folder / "items.parquet", folder / f"events-{args.events}.parquet"


@dataclass
class Bench:
    """What the stages share: the arguments, the report they add to, and the run's files."""

    args: Args
    report: Report
    folder: Path
    items_path: Path
    events_path: Path

    @property
    def media_dir(self) -> Path:
        return self.folder / "media"


def run(args: Args, path: Path) -> dict[str, Any]:
    """Every stage not in `args.skip`; the report, also written to `path` as it goes."""
    torch.set_num_threads(args.threads)  # before report_head, which records it
    folder, items_path, events_path = paths(args)
    bench = Bench(args, Report(path, report_head(args)), folder, items_path, events_path)
    if "write" not in args.skip:
        write_stage(bench)
    record_files(bench)
    catalog = open_stage(bench) if "open" not in args.skip else None
    ids = catalog.ids if catalog is not None else item_ids(items_path)
    events = events_stage(bench, ids) if "events" not in args.skip else None
    pairs = pairs_stage(bench, events, len(ids))
    del events  # alignment runs without the event log in memory
    if "align" not in args.skip:
        align_stage(bench, catalog, pairs)
    bench.report.save()
    return bench.report.as_dict(None)


def report_head(args: Args) -> dict[str, Any]:
    """The report's fixed part: date, machine, sizes and arguments."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(),
            "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "torch": torch.__version__,
            "pyarrow": pa.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "items": args.items,
        "events": args.events,
        "peak_rss_exact": _reset_high_water(),  # VmHWM can be reset: per-stage peaks are exact
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
    }


def write_stage(bench: Bench) -> None:
    """1. The two files, written by a process of their own unless both exist (--rewrite)."""
    args = bench.args
    bench.folder.mkdir(parents=True, exist_ok=True)
    need_items = args.rewrite or not bench.items_path.is_file()
    need_events = args.rewrite or not bench.events_path.is_file()
    if not (need_items or need_events):
        bench.report.notes.append(f"files reused from {bench.folder} (--rewrite writes them again)")
        return
    # In a process of its own, as a user's files exist before the pipeline starts: the
    # measured stages then run in a process that did nothing else.
    with measure("write files (not the pipeline)", bench.report) as stage:
        done = subprocess.run(write_command(args), check=True, stdout=subprocess.PIPE, text=True)
    stage.extra.update(json.loads(done.stdout.strip().splitlines()[-1]))
    stage.children_peak_rss_mib = stage.extra.pop("writer_peak_rss_mib")


def write_command(args: Args) -> list[str]:
    """`python -m bench.catalog --write-only` with this run's sizes, folder and seed."""
    return [
        sys.executable,
        "-m",
        "bench.catalog",
        "--write-only",
        f"--items={args.items}",
        f"--events={args.events}",
        f"--data={args.data}",
        f"--seed={args.seed}",
        *(["--rewrite"] if args.rewrite else []),
        *([] if args.progress else ["--quiet"]),
    ]


def record_files(bench: Bench) -> None:
    """The two files' sizes into the report's head; stops the run if either is missing."""
    items_path, events_path = bench.items_path, bench.events_path
    if not (items_path.is_file() and events_path.is_file()):
        raise SystemExit(f"{items_path} or {events_path} missing: run without --skip write")
    bench.report.head["files"] = {
        "items": str(items_path),
        "items_bytes": items_path.stat().st_size,
        "item_row_groups": pq.ParquetFile(items_path).metadata.num_row_groups,
        "events": str(events_path),
        "events_bytes": events_path.stat().st_size,
    }


def open_stage(bench: Bench) -> ParquetCatalog:
    """2. `open_items` cold (empty media cache), then warm: the warm catalog is kept."""
    shutil.rmtree(bench.media_dir, ignore_errors=True)
    open_cold(bench)  # its catalog is gone before the warm open starts
    with measure("open_items (cache reused)", bench.report) as stage:
        catalog = open_items(
            bench.items_path, bench.media_dir, group_column="group", progress=False
        )
    stage.extra["rows_per_s"] = len(catalog) / stage.seconds
    return catalog


def open_cold(bench: Bench) -> None:
    """`open_items` with an empty media cache: every row checked, every cover copied."""
    media_dir = bench.media_dir
    with measure("open_items", bench.report) as stage:
        catalog = open_items(
            bench.items_path, media_dir, group_column="group", progress=bench.args.progress
        )
    stage.extra["rows_per_s"] = len(catalog) / stage.seconds
    stage.extra["media_cache_bytes"] = sum(
        p.stat().st_size for p in media_dir.iterdir() if p.is_file()
    )
    stage.extra["covers"] = int(catalog.media["image"].present.sum())
    stage.extra["text_bytes"] = catalog.text.nbytes if catalog.text is not None else 0


def item_ids(items_path: Path) -> npt.NDArray[np.str_]:
    """The items' ids read from the file, when the open stage is skipped."""
    return np.asarray(pq.read_table(items_path, columns=["id"]).column("id").to_pylist())


def events_stage(bench: Bench, ids: npt.NDArray[np.str_]) -> Interactions:
    """3. `read_events` against the items' ids."""
    with measure("read_events", bench.report) as stage:
        events = read_events(bench.events_path, ids)
    stage.extra["rows_per_s"] = len(events) / stage.seconds
    stage.extra["users"] = events.n_users
    stage.extra["positives"] = int(events.label.sum())
    return events


def pairs_stage(bench: Bench, events: Interactions | None, n_items: int) -> MinedPairs | None:
    """4. Mined pairs; with `--skip pairs`, stand-in pairs if alignment still runs; None
    when there are no events or nothing needs pairs."""
    skip, notes = bench.args.skip, bench.report.notes
    if "pairs" not in skip and events is not None:
        return mine_stage(bench, events, n_items)
    if "pairs" not in skip:
        notes.append("pairs skipped: they need the events stage")
    elif events is not None and "align" not in skip:
        pairs = standin_pairs(events, n_items)
        notes.append(
            f"pairs not mined (--skip pairs): alignment trained on {len(pairs.train):,} stand-in "
            "pairs (each positive event with the same user's previous one)"
        )
        return pairs
    return None


def mine_stage(bench: Bench, events: Interactions, n_items: int) -> MinedPairs:
    """`mine_pairs` with the seconds and peak RSS of each of its parts."""
    parts = ("train_id_embeddings", "user2item_pairs", "swing_pairs", "merge_pairs", "split_pairs")
    with (
        measure("mine_pairs", bench.report) as stage,
        timed_calls(models.pairs, parts, stage) as by_part,
    ):
        pairs = mine_pairs(events, n_items, PairConfig())
    stage.extra["events_per_s"] = len(events) / stage.seconds
    stage.extra["pairs"] = pairs.counts
    stage.extra["parts"] = by_part
    return pairs


def align_stage(bench: Bench, catalog: ParquetCatalog | None, pairs: MinedPairs | None) -> None:
    """5. One batch by part, then `train` with each `--workers`; needs a catalog and pairs."""
    args, report = bench.args, bench.report
    if pairs is None or catalog is None:
        report.notes.append("align skipped: it needs the open and events stages")
        return
    torch.manual_seed(args.seed)
    model = MultimodalEncoder(EncoderConfig())
    assert model.text_frozen
    with measure(f"one batch of {2 * args.align_batch} items, by part", report) as stage:
        stage.extra.update(batch_parts(model, catalog, pairs, args.align_batch, args.part_repeats))
    for workers in args.workers:
        with measure(f"train, workers={workers}", report) as stage:
            stage.extra.update(
                align_throughput(model, catalog, pairs, args.align_steps, args.align_batch, workers)
            )


def _rate(stage: dict[str, Any]) -> str:
    extra = stage["extra"]
    if "rows_per_s" in extra:
        return f"{extra['rows_per_s']:,.0f} rows/s"
    if "events_per_s" in extra:
        return f"{extra['events_per_s']:,.0f} events/s"
    if "pairs_per_s" in extra:
        return f"{extra['pairs_per_s']:.1f} pairs/s ({extra['items_per_s']:.1f} items/s)"
    return "-"


def _note(stage: dict[str, Any]) -> str:
    extra = stage["extra"]
    if "media_cache_bytes" in extra:
        return (
            f"media cache {extra['media_cache_bytes'] / MIB:,.0f} MiB, {extra['covers']:,} covers"
        )
    if "pairs" in extra:
        counts = extra["pairs"]
        by_part = extra["parts"]
        parts = ", ".join(
            f"{k} {v:.1f} s (peak {by_part['peak_rss_mib'][k]:,.0f} MiB)"
            for k, v in by_part["seconds"].items()
        )
        return f"{counts['train']:,} train + {counts['held_out']:,} held-out pairs; {parts}"
    if "prepare_s" in extra:
        return (
            f"prepare {extra['prepare_s']:.3f} s; forward: text {extra['text_forward_s']:.3f}, "
            f"image {extra['image_forward_s']:.3f}, audio {extra['audio_forward_s']:.3f} s; "
            f"train step {extra['train_step_s']:.3f} s"
        )
    if "pairs_per_s" in extra:
        return f"{extra['steps']} steps x {extra['batch_pairs']} pairs"
    shown = {k: v for k, v in extra.items() if not k.endswith("_per_s")}
    return ", ".join(
        f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in shown.items()
    )


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"{report['items']:,} items, {report['events']:,} events; {m['cores']} cores "
        f"({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}, torch {m['torch']} "
        f"({m['torch_threads']} threads)",
        "",
        "| stage | seconds | CPU s | load | rate | peak RSS (MiB) | added (MiB) "
        "| child processes' RSS (MiB) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["stages"]:
        lines.append(
            f"| {s['name']} | {s['seconds']:.1f} | {s['cpu_s']:.1f} | {s['load_1min']:.1f} | "
            f"{_rate(s)} | "
            f"{s['peak_rss_mib']:,.0f} | "
            f"{s['added_mib']:,.0f} | {s['children_peak_rss_mib']:,.0f} | {_note(s)} |"
        )
    f = report["files"]
    lines += [
        "",
        f"items file {f['items_bytes'] / MIB:,.0f} MiB ({f['item_row_groups']} row groups), "
        f"events file {f['events_bytes'] / MIB:,.0f} MiB",
        *report["notes"],
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, default=Path("data/bench-catalog"))
    parser.add_argument("--skip", nargs="*", choices=STAGES, default=[])
    parser.add_argument("--rewrite", action="store_true", help="write the files even if present")
    parser.add_argument("--align-steps", type=int, default=20)
    parser.add_argument("--align-batch", type=int, default=128, help="pairs per step")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--part-repeats", type=int, default=3, help="batches timed per part")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--write-only", action="store_true", help="write the files, print their JSON, stop"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    a = parser.parse_args()
    args = Args(
        items=a.items,
        events=a.events,
        data=a.data,
        skip=tuple(a.skip),
        rewrite=a.rewrite,
        align_steps=a.align_steps,
        align_batch=a.align_batch,
        workers=tuple(a.workers),
        part_repeats=a.part_repeats,
        threads=a.threads,
        seed=a.seed,
        progress=not a.quiet,
        out=a.out,
    )
    if a.write_only:
        folder, items_path, events_path = paths(args)
        folder.mkdir(parents=True, exist_ok=True)
        written = write_files(
            items_path if args.rewrite or not items_path.is_file() else None,
            events_path if args.rewrite or not events_path.is_file() else None,
            args.items,
            args.events,
            args.seed,
            args.progress,
        )
        print(json.dumps(written))
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"catalog-{stamp}.json"
    print(f"JSON (written after every stage): {path}", flush=True)
    print(markdown(run(args, path)))


if __name__ == "__main__":
    main()
