"""`python -m backfill status`: the versions, their backfill reports and the service's pods."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from backfill.report import Report, parse_report
from store import Lifecycle, PodInfo, Store


async def status_text(store: Store) -> str:
    lifecycle = await store.lifecycle()
    reports = {v: parse_report(await store.report(v)) for v in lifecycle.versions}
    return render(lifecycle, reports, await store.pods(), time.time())


def render(
    lifecycle: Lifecycle, reports: dict[str, Report | None], pods: list[PodInfo], now: float
) -> str:
    """The registry (newest change first) with each version's backfill, then the pods."""
    rows = [("VERSION", "STATE", "SINCE (UTC)", "BACKFILL", "BUNDLE")]
    for info in sorted(lifecycle.versions.values(), key=lambda v: v.at, reverse=True):
        since = datetime.fromtimestamp(info.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            (info.version, info.state, since, _backfill(reports.get(info.version)), info.bundle)
        )
    lines = [f"active version: {lifecycle.active or '(none)'}", *_table(rows), ""]
    if not pods:
        lines.append("service pods: none live")
    else:
        pod_rows = [("POD", "ACTIVE", "ALSO WRITES", "HEARTBEAT")]
        for pod in pods:
            written = ",".join(pod.written) or "-"
            pod_rows.append((pod.pod, pod.active or "-", written, f"{now - pod.at:.0f} s ago"))
        lines += [f"service pods: {len(pods)} live", *_table(pod_rows)]
    return "\n".join(lines)


def _backfill(report: Report | None) -> str:
    if report is None:
        return "-"
    if report.finished:
        state = "finished"
    elif report.error is not None:
        state = "stopped"
    else:  # saved every 30 s while running; a killed run stays like this
        saved = report.finished_at or report.started_at
        state = f"running or killed (saved {saved:%Y-%m-%d %H:%M:%S})"
    return (
        f"{state}: {report.items} items, {report.written} written, {report.skipped} skipped, "
        f"{report.failed} failed"
    )


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
