"""Prometheus metrics: one registry per app (no module globals), `qarm_` prefix, base units,
explicit buckets (powers of two for batch sizes), one histogram per stage."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZES = tuple(float(2**i) for i in range(11))  # 1 .. 1024
STAGES = ("decode", "encode", "quantize", "store")
# every op label of qarm_store_errors: what the service asks of the store
STORE_OPS = ("write", "get", "sid", "prefix", "ping", "activate", "follow")
# every phase label of qarm_read_timeouts: which part of a request was too slow to arrive
READ_PHASES = ("headers", "body")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "qarm_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "qarm_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "qarm_batch_size_items", "items per encoder batch", buckets=BATCH_SIZES, registry=r
        )
        self.queue_depth = Gauge(
            "qarm_queue_depth_items", "items waiting to be batched", registry=r
        )
        self.queue_capacity = Gauge(
            "qarm_queue_capacity_items",
            "items the queue holds (QARM_MAX_QUEUE); beyond it writes get 503",
            registry=r,
        )
        self.queue_wait = Histogram(
            "qarm_queue_wait_seconds",
            "time an item waited in the queue before its batch started",
            buckets=SECONDS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "qarm_stage_duration_seconds",
            "time of one stage: decode (per request), encode/quantize/store (per batch)",
            ["stage"],
            buckets=SECONDS,
            registry=r,
        )
        self.items_encoded = Counter(
            "qarm_items_encoded", "items encoded and stored", ["source"], registry=r
        )
        self.dropped = Counter(
            "qarm_items_dropped", "queued items dropped before the encoder", ["reason"], registry=r
        )
        self.errors = Counter("qarm_errors", "errors answered, by kind", ["kind"], registry=r)
        self.read_timeouts = Counter(
            "qarm_read_timeouts",
            "clients too slow to send a request: headers (connection closed unanswered) or body "
            "(408, then closed)",
            ["phase"],
            registry=r,
        )
        self.bodies_parsing = Gauge(
            "qarm_bodies_parsing",
            "request bodies with the body-parsing worker process (queued there or parsing)",
            registry=r,
        )
        self.store_errors = Counter(
            "qarm_store_errors", "store operations that failed", ["store", "op"], registry=r
        )
        self.bundle = Info("qarm_bundle", "the active bundle", registry=r)
        self.encoder = Info("qarm_encoder", "the encoder's ONNX Runtime provider", registry=r)
        self.written = Gauge(
            "qarm_bundle_written",
            "1 per version every upload is also written to (staged, or kept for rollback)",
            ["version"],
            registry=r,
        )
        self.reloads = Counter(
            "qarm_reloads",
            "bundle switches (POST /admin/reload, or following an activation) and loads of "
            "staged versions",
            ["result"],
            registry=r,
        )
        for stage in STAGES:  # every series exists from the first scrape
            self.stage_seconds.labels(stage)
        for reason in ("deadline", "caller_gone"):
            self.dropped.labels(reason)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        for phase in READ_PHASES:
            self.read_timeouts.labels(phase)

    def declare(self, error_kinds: Iterable[str], store_kind: str) -> None:
        """Create the labelled error series at 0, so dashboards and rate() see them before
        the first failure instead of "no data"."""
        for kind in error_kinds:
            self.errors.labels(kind)
        for op in STORE_OPS:
            self.store_errors.labels(store_kind, op)
