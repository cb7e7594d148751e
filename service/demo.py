"""`python -m service.demo`: start the service on the embedded store, post sample items, print
their codes, look them up again, stop the service. Works with whatever bundle is newest.

With an encoder in the bundle, the samples are text, an image and a sound; without one they are
embeddings near a few catalog items (their RQ reconstruction plus noise), so the VQ codes can
be shown as the catalog items they point to. `--url` talks to a service that is already
running instead of starting one.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from codebooks import latest_bundle, load_bundle
from codebooks.bundle import Bundle
from runtime.media import png_bytes, wav_bytes
from service.launch import free_port, wait_ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: the newest)")
    parser.add_argument(
        "--store", type=Path, default=Path("data/demo/qarm-store.sqlite3"), help="SQLite file"
    )
    parser.add_argument("--url", help="use this running service instead of starting one")
    parser.add_argument("--token", help="bearer token with write and read scopes")
    args = parser.parse_args(argv)

    bundle_path = args.bundle or latest_bundle(args.artifacts)
    bundle = load_bundle(bundle_path)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    if args.url:
        return run_demo(args.url, bundle, headers)
    port = free_port()
    env = {**os.environ, "QARM_SQLITE_PATH": str(args.store), "QARM_LOG_LEVEL": "WARNING"}
    env.pop("QARM_REDIS_URL", None)
    print(f"starting the service on 127.0.0.1:{port} (bundle {bundle.version}, {args.store})")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--bundle", str(bundle_path)],
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        return run_demo(url, bundle, headers)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def run_demo(url: str, bundle: Bundle, headers: dict[str, str]) -> int:
    items = sample_items(bundle)
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        r = client.post("/v1/items", json={"items": items})
        if r.status_code != 200:
            print(f"POST /v1/items -> {r.status_code}: {r.text}", file=sys.stderr)
            return 1
        body = r.json()
        print(f"\nPOST /v1/items: {len(items)} items encoded under bundle {body['bundle_version']}")
        print(f"{'item':<16} {'semantic ID':<28} {'RQ codes':<28} nearest catalog items (VQ)")
        for codes in body["items"]:
            near = ", ".join(str(bundle.item_ids[row]) for row in codes["vq"][:3])
            rq = " ".join(map(str, codes["rq"]))
            print(f"{codes['id']:<16} {codes['sid']:<28} {rq:<28} {near}, ...")
        ids = [i["id"] for i in items] + ["never-posted"]
        got = client.post("/v1/codes:batchGet", json={"ids": ids}).json()["items"]
        found = sum(g is not None for g in got)
        print(f"\nPOST /v1/codes:batchGet of {len(ids)} ids: {found} found, unknown -> null")
        print_catalog_item(client, bundle)
        first = body["items"][0]
        sid = client.get(f"/v1/sids/{first['sid']}").json()
        print(f"GET /v1/sids/{first['sid']} -> {sid['id']}")
        prefix = "-".join(map(str, first["rq"][:2]))
        share = client.get(f"/v1/codes/rq/{prefix}/items", params={"limit": 5}).json()
        print(f"GET /v1/codes/rq/{prefix}/items?limit=5 -> {share['items']}")
    return 0


def print_catalog_item(client: httpx.Client, bundle: Bundle) -> None:
    """A catalog item's codes, as the backfill wrote them (none without a backfill)."""
    item_id = str(bundle.item_ids[0])
    r = client.get(f"/v1/items/{item_id}/codes")
    if r.status_code == 404:
        print(f"GET /v1/items/{item_id}/codes -> 404: the catalog has no codes yet (backfill it:")
        print(
            f"    python -m backfill run --bundle {bundle.path}; python -m backfill activate ...)"
        )
        return
    codes = r.json()
    near = ", ".join(str(bundle.item_ids[row]) for row in codes["vq"][:3])
    rq = " ".join(map(str, codes["rq"]))
    print(f"GET /v1/items/{item_id}/codes (catalog item, from the backfill) -> semantic ID")
    print(f"    {codes['sid']}, RQ codes {rq}, nearest catalog items {near}, ...")


def sample_items(bundle: Bundle) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    spec = bundle.manifest.encoder
    if spec is not None:
        return [
            {"id": "demo-text", "text": "a cat dancing to summer music"},
            {"id": "demo-image", "image": _image(rng, spec.image_size), "text": "city at night"},
            {"id": "demo-audio", "audio": _sound(rng, spec.audio_sample_rate)},
        ]
    m = bundle.manifest
    rows = rng.choice(m.n_items, size=4, replace=False)
    items = []
    for n, row in enumerate(rows):
        x = bundle.rq.centroids[np.arange(m.levels), bundle.rq_codes[row]].sum(axis=0)
        x = x + 0.05 * np.linalg.norm(x) * rng.standard_normal(m.dim) / np.sqrt(m.dim)
        items.append({"id": f"demo-{n}", "embedding": x.astype(float).tolist()})
    return items


def _image(rng: np.random.Generator, size: int) -> str:
    """A noise PNG cover, base64."""
    pixels = rng.random((3, size, size), dtype=np.float32)
    return base64.b64encode(png_bytes(pixels)).decode()


def _sound(rng: np.random.Generator, rate: int) -> str:
    """Half a second of a 440 Hz tone with a little noise, as a base64 WAV at `rate`."""
    t = np.arange(rate // 2) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    return base64.b64encode(wav_bytes(tone.astype(np.float32), rate)).decode()


if __name__ == "__main__":
    sys.exit(main())
