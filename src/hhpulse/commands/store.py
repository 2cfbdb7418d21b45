"""``hhpulse store prune --raw-older-than DAYS [--dry-run]``: remove old raw runs that history no
longer needs, and vacuum the history table (see :mod:`hhpulse.data.retention` for the rules). The
pipeline never runs it."""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    prune = sub.add_parser(
        "prune",
        help="remove raw runs older than DAYS that history no longer needs; vacuum the history table",
        description=(
            "Remove raw runs (raw/<run>/ and quarantine/<run>/) older than DAYS that history no longer "
            "needs: unfinished runs always; finished runs folded into history only with "
            "--force-rebuild-gap (history --rebuild/--verify read every raw run); never a run not "
            "folded yet. Pruned finished runs are recorded in retention.json. Then vacuum the history "
            "table: remove its files that no version younger than --history-retention-days uses "
            "(time travel reaches back that far), and the old layout's files once the table holds "
            "every run they held."
        ),
    )
    prune.set_defaults(_parser=prune)
    prune.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )
    prune.add_argument("--s3-endpoint", default="", help="S3/MinIO endpoint when --store is s3://")
    prune.add_argument(
        "--raw-older-than",
        type=float,
        required=True,
        metavar="DAYS",
        help="prune runs collected more than DAYS days ago (at least 1)",
    )
    prune.add_argument(
        "--history-retention-days",
        type=float,
        default=None,
        metavar="DAYS",
        help="keep every history file a table version of the last DAYS days uses: how far back "
        "time travel (train --as-of, history --restore) reaches; at least 1 [30]",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="list what would go, and how many bytes; change nothing"
    )
    prune.add_argument(
        "--force-rebuild-gap",
        action="store_true",
        help="also remove runs already folded into history; `hhpulse history --rebuild` and "
        "--verify can then no longer reproduce the part of history they made",
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.history_store import RETENTION_DAYS
    from hhpulse.data.retention import PruneError, plan_prune, prune
    from hhpulse.data.store import StoreError, open_store

    try:
        store = open_store(args.store, endpoint_url=args.s3_endpoint or None)
        plan = plan_prune(
            store,
            args.raw_older_than,
            force_rebuild_gap=args.force_rebuild_gap,
            history_retention_days=RETENTION_DAYS
            if args.history_retention_days is None
            else args.history_retention_days,
        )
        if not args.dry_run:
            prune(store, plan, progress=sys.stderr.isatty())
    except (PruneError, StoreError) as exc:
        print(f"hhpulse store prune: {exc}", file=sys.stderr)
        return 2
    for line in plan.lines(dry_run=args.dry_run):
        print(line)
    if args.dry_run:
        print("dry run: nothing was removed")
    return 0
