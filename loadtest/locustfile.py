"""Locust users for qarm: the upload pipeline and the ranking servers.

`make loadtest` (loadtest/run.py) starts the service and runs this headless; it passes, by
environment:
  QARM_LOADTEST_TOKEN  a bearer token with write and read scopes
  QARM_LOADTEST_KNOWN  a JSON file: ids the service has codes for (posted before the run)
  QARM_LOADTEST_ACKS   a JSON-lines file this run appends every acknowledged write to
  QARM_LOADTEST_RUN    a run id, so uploaded ids are never seen before
  QARM_LOADTEST_BATCH  items per upload (default 16)
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any, ClassVar

from locust import HttpUser, between, events, task

from loadtest.media import MediaPool

TOKEN = os.environ.get("QARM_LOADTEST_TOKEN", "")
RUN = os.environ.get("QARM_LOADTEST_RUN", "adhoc")
BATCH = int(os.environ.get("QARM_LOADTEST_BATCH", "16"))
READ_IDS = 100
UNKNOWN_SHARE = 0.1  # of each batchGet: ids nobody posted


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


class Acks:
    """Acknowledged writes, one JSON line each: id and the codes the service answered."""

    file: ClassVar[Any] = None

    @classmethod
    def open(cls) -> None:
        path = os.environ.get("QARM_LOADTEST_ACKS")
        if path and cls.file is None:
            cls.file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 (closed at test stop)

    @classmethod
    def record(cls, version: str, items: list[dict[str, Any]]) -> None:
        if cls.file is None:
            return
        for codes in items:
            line = {k: codes[k] for k in ("id", "vq", "rq", "suffix", "sid")}
            cls.file.write(json.dumps({**line, "bundle_version": version}) + "\n")
        cls.file.flush()

    @classmethod
    def close(cls) -> None:
        if cls.file is not None:
            cls.file.close()
            cls.file = None


def _start(**_: Any) -> None:
    Acks.open()


def _stop(**_: Any) -> None:
    Acks.close()


events.test_start.add_listener(_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_stop)  # type: ignore[no-untyped-call]


_user_numbers = itertools.count()


class UploadPipeline(HttpUser):
    """Posts batches of new items (title, JPEG cover, WAV clip), each id never seen before."""

    weight = 1
    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.media = MediaPool(seed=1000 + self.number)
        self.serial = itertools.count()

    @task
    def upload(self) -> None:
        ids = [f"lt-{RUN}-u{self.number}-{next(self.serial)}" for _ in range(BATCH)]
        body = {"items": [self.media.item(i) for i in ids]}
        with self.client.post(
            "/v1/items", json=body, headers=_headers(), name="/v1/items", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            out = r.json()
            if [c["id"] for c in out["items"]] != ids:
                r.failure("the answer's items are not the posted ids in order")
                return
            Acks.record(out["bundle_version"], out["items"])
            r.success()


class RankingServer(HttpUser):
    """Reads the codes of 100 ids at a time: known ones, and some nobody posted."""

    weight = 3
    wait_time = between(0.01, 0.05)
    known: ClassVar[list[str]] = []

    def on_start(self) -> None:
        if not RankingServer.known:
            path = os.environ.get("QARM_LOADTEST_KNOWN")
            RankingServer.known = json.loads(Path(path).read_text()) if path else []
        self.rng = random.Random(next(_user_numbers))

    @task
    def batch_get(self) -> None:
        n_unknown = int(READ_IDS * UNKNOWN_SHARE) if self.known else READ_IDS
        known = self.rng.sample(self.known, READ_IDS - n_unknown) if self.known else []
        unknown = [f"never-{RUN}-{self.rng.getrandbits(48):x}" for _ in range(n_unknown)]
        ids = known + unknown
        self.rng.shuffle(ids)
        with self.client.post(
            "/v1/codes:batchGet",
            json={"ids": ids},
            headers=_headers(),
            name="/v1/codes:batchGet",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            items = r.json()["items"]
            unknown_set = set(unknown)
            for item_id, codes in zip(ids, items, strict=True):
                if (codes is None) != (item_id in unknown_set):
                    r.failure(f"{item_id}: {'missing' if codes is None else 'unexpected codes'}")
                    return
                if codes is not None and codes["id"] != item_id:
                    r.failure(f"asked for {item_id}, answered {codes['id']}")
                    return
            r.success()
