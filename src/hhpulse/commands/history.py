"""``hhpulse history``: fold the finished runs not folded yet into the stored history;
``--rebuild`` rebuilds it from every raw run, ``--verify`` checks it against a rebuild."""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )
    p.add_argument("--s3-endpoint", default="", help="S3/MinIO endpoint when --store is s3://")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the history from every raw run, one run at a time (after a backfill, or to repair it)",
    )
    what.add_argument(
        "--verify",
        action="store_true",
        help="rebuild into a temporary folder and compare with the stored history; exit 1 when they differ",
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.history_store import STATE_KEY, HistoryError, fold_run, rebuild, verify
    from hhpulse.data.store import StoreError, open_store

    show = sys.stderr.isatty()
    try:
        store = open_store(args.store, endpoint_url=args.s3_endpoint or None)
        if args.verify:
            res = verify(store, progress=show)
            print(res.message(), file=sys.stdout if res.ok else sys.stderr)
            return 0 if res.ok else 1
        result = rebuild(store, progress=show) if args.rebuild else fold_run(store, progress=show)
    except HistoryError as exc:
        print(f"hhpulse history: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"hhpulse history: {exc}", file=sys.stderr)
        return 2
    print(result.summary_line())
    print(f"-> {store.uri(STATE_KEY)}")
    if result.refused:
        print(
            f"hhpulse history: {len(result.refused)} finished run(s) are older than the newest run in "
            f"history and were not folded ({', '.join(result.refused[:5])}): history folds runs in "
            "time order only; run `hhpulse history --rebuild` to rebuild it from every raw run in order",
            file=sys.stderr,
        )
        return 1
    return 0
