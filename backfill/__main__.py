"""python -m backfill: run a backfill, activate or retire a version, show the status.

Settings come from the environment (`QARM_*`, the same the service reads: `QARM_REDIS_URL`
points both at one store); a flag overrides its setting. Every outcome maps to one exit
status here (errors.Exit), listed in --help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backfill.errors import Exit, RefusedError
from backfill.lifecycle import activate, retire
from backfill.report import Report
from backfill.settings import BackfillSettings
from backfill.status import status_text
from codebooks import BundleError
from store import LifecycleError, Store, StoreError, open_store

log = logging.getLogger("backfill")

EPILOG = """exit status:
  0  done
  1  run: finished, but some rows failed (each is logged and listed in the report)
  2  refused, nothing changed: bad arguments, settings or catalog export; a step the
     version's state forbids; activate: coverage does not hold
  3  the store or the Ray cluster failed mid-way; run again: a run resumes where it stopped

settings: every QARM_* variable of the store (QARM_REDIS_URL, QARM_REDIS_PREFIX,
QARM_SQLITE_PATH) and of backfill/settings.py; a flag overrides its variable."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m backfill",
        description="Write a bundle version's codes for the whole catalog (Ray Data), then "
        "switch readers to it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="stage the version and write every catalog item's codes under it",
        description="Stage the bundle's version, wait for the service's pods to write uploads "
        "to it, then write codes for the bundle's catalog and every --catalog export (Parquet: "
        "id + text/image/audio/embedding). Items the version has already are skipped, so a "
        "stopped run resumes. The version stays staged: `activate` it afterwards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--bundle", type=Path, required=True, metavar="PATH", help="the bundle folder (its version)"
    )
    run.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="PATH",
        help="a Parquet file, folder or URI of items to encode (repeatable)",
    )
    run.add_argument(
        "--address", dest="ray_address", metavar="ADDR", help="join this Ray cluster (`auto`, ...)"
    )
    run.add_argument(
        "--num-cpus", dest="ray_num_cpus", type=int, metavar="N", help="CPUs of the local Ray"
    )
    run.add_argument(
        "--actors", type=int, metavar="N", help="encoder actors (default: from the cluster)"
    )
    run.add_argument("--batch-size", type=int, metavar="N", help="items per encoder call")
    run.add_argument(
        "--gpus-per-actor", type=float, metavar="X", help="GPUs per actor (0: CPU only)"
    )
    run.add_argument("--write-batch", type=int, metavar="N", help="items per store write")
    run.add_argument(
        "--max-writes-per-s", type=float, metavar="N", help="most items written per second"
    )
    run.add_argument(
        "--wait-pods-s", type=float, metavar="S", help="wait for the pods to follow (30)"
    )

    act = commands.add_parser(
        "activate",
        help="check coverage, then switch readers to a version (also a rollback)",
        description="Refuse unless the version covers everything readers may ask for (its "
        "backfill finished without failures, every backfilled item and every item of the "
        "active version has codes, a random sample computes again equal); then switch "
        "readers atomically and wait for the pods to follow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    act.add_argument("version")
    act.add_argument(
        "--bundle", type=Path, metavar="PATH", help="its bundle folder (default: as staged)"
    )
    act.add_argument("--sample", type=int, metavar="N", help="stored values computed again (64)")
    act.add_argument("--allow-failures", action="store_true", help="activate despite failed rows")
    act.add_argument(
        "--wait-pods-s", type=float, metavar="S", help="wait for the pods to follow (30)"
    )

    ret = commands.add_parser(
        "retire",
        help="delete an old version's codes",
        description="Delete every key of a version that is neither active nor staged.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ret.add_argument("version")
    ret.add_argument(
        "--max-keys-per-s", type=float, metavar="N", help="most keys deleted per second (50000)"
    )

    commands.add_parser("status", help="versions, their backfills and the service's pods")
    return top


SETTINGS_FLAGS = (
    "ray_address",
    "ray_num_cpus",
    "actors",
    "batch_size",
    "gpus_per_actor",
    "write_batch",
    "max_writes_per_s",
    "wait_pods_s",
    "sample",
    "max_keys_per_s",
)


def settings_from(args: argparse.Namespace) -> BackfillSettings:
    """The environment's settings with every flag given on top."""
    given: dict[str, Any] = {
        name: getattr(args, name)
        for name in SETTINGS_FLAGS
        if getattr(args, name, None) is not None
    }
    return BackfillSettings(**given)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
    except ValidationError as err:
        print(f"backfill: bad settings: {err}", file=sys.stderr)
        return Exit.REFUSED
    try:
        return asyncio.run(_command(args, settings))
    except (RefusedError, LifecycleError, BundleError) as err:
        print(f"backfill: refused: {err}", file=sys.stderr)
        return Exit.REFUSED
    except StoreError as err:
        print(f"backfill: the store failed: {err}", file=sys.stderr)
        return Exit.INCOMPLETE


async def _command(args: argparse.Namespace, settings: BackfillSettings) -> int:
    if args.command == "run":
        return await _run(args, settings)
    store = open_store(settings)
    try:
        if args.command == "activate":
            return await _activate(args, settings, store)
        if args.command == "retire":
            deleted = await retire(store, settings, args.version)
            print(f"version {args.version} retired: {deleted} keys deleted")
            return Exit.OK
        print(await status_text(store))
        return Exit.OK
    finally:
        await store.close()


async def _run(args: argparse.Namespace, settings: BackfillSettings) -> int:
    # Ray is imported by the run alone: the other commands start in a fraction of the time.
    from backfill.cluster import ray_session
    from backfill.job import plan, run_backfill

    work = plan(args.bundle, args.catalog)
    if settings.ray_address is not None and settings.redis_url is None:
        log.warning(
            "the SQLite store %s is a local file: actors on other machines of the Ray "
            "cluster cannot read it (set QARM_REDIS_URL)",
            settings.sqlite_path,
        )
    store = open_store(settings)
    try:
        with ray_session(settings):
            report: Report = await run_backfill(store, settings, work)
    except (RefusedError, LifecycleError, StoreError):
        raise
    except Exception:
        log.exception("backfill of %s stopped; run it again to resume", work.version)
        return Exit.INCOMPLETE
    finally:
        await store.close()
    print(report.summary())
    for failure in report.failures[:10]:
        print(f"  failed: {failure.id} ({failure.source}): {failure.field}: {failure.message}")
    if report.failed:
        print(f"{report.failed} rows failed; exit status {Exit.ROWS_FAILED}")
        return Exit.ROWS_FAILED
    print(f"version {work.version} is staged; `python -m backfill activate {work.version}` next")
    return Exit.OK


async def _activate(args: argparse.Namespace, settings: BackfillSettings, store: Store) -> int:
    done = await activate(
        store, settings, args.version, bundle=args.bundle, allow_failures=args.allow_failures
    )
    if done.followed is None:
        print(f"version {args.version} is active already; nothing switched")
        return Exit.OK
    print(f"version {done.version} active (was {done.previous or 'none'})")
    followed = done.followed
    if followed.pods == 0:
        print("no live service pods to wait for")
    elif followed.lagging:
        log.warning(
            "after %.1f s, %d of %d service pods do not serve %s yet: %s",
            followed.seconds,
            len(followed.lagging),
            followed.pods,
            done.version,
            ", ".join(followed.lagging[:10]),
        )
    else:
        print(f"{followed.pods} service pods serve it, {followed.seconds:.1f} s after the switch")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
