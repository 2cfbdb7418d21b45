"""``hhpulse history``: fold the finished runs not folded yet into the stored history (a Delta Lake
table); ``--rebuild`` rebuilds it from every raw run, ``--verify`` checks it against a rebuild,
``--versions`` lists its versions, ``--restore VERSION`` goes back to one, ``--migrate`` moves a
history in the old layout onto the table."""

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
        help="rebuild the history from every raw run, one run at a time, as a new version of the table "
        "(to repair it, whatever history/ holds)",
    )
    what.add_argument(
        "--verify",
        action="store_true",
        help="rebuild into a temporary folder and compare with the stored history; exit 1 when they differ",
    )
    what.add_argument(
        "--versions",
        action="store_true",
        help="list the table's versions (newest first): time, operation, runs folded, vacancies",
    )
    what.add_argument(
        "--restore",
        type=int,
        default=None,
        metavar="VERSION",
        help="make an earlier version the history again (as a new version; see --versions)",
    )
    what.add_argument(
        "--migrate",
        action="store_true",
        help="move a history in the old layout (history/state.json) onto the Delta table, checked equal "
        "(the first fold does it too); the old files stay until `hhpulse store prune`",
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.history_store import (
        TABLE_KEY,
        BackfillRefused,
        ConcurrentFoldError,
        HistoryError,
        fold_run,
        migrate,
        rebuild,
        restore,
        verify,
        versions,
    )
    from hhpulse.data.store import StoreError, open_store

    show = sys.stderr.isatty()
    try:
        store = open_store(args.store, endpoint_url=args.s3_endpoint or None)
        if args.verify:
            res = verify(store, progress=show)
            print(res.message(), file=sys.stdout if res.ok else sys.stderr)
            return 0 if res.ok else 1
        if args.versions:
            return _print_versions(store, versions(store))
        if args.restore is not None:
            result = restore(store, args.restore)
        elif args.migrate:
            result = migrate(store)
        elif args.rebuild:
            result = rebuild(store, progress=show)
        else:
            result = fold_run(store, progress=show)
    except (BackfillRefused, ConcurrentFoldError) as exc:
        print(f"hhpulse history: {exc}", file=sys.stderr)
        return 1
    except (HistoryError, StoreError, KeyError, ValueError) as exc:
        print(f"hhpulse history: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(result.summary_line())
    print(f"-> {store.uri(TABLE_KEY)}")
    if result.refused:
        print(
            f"hhpulse history: {len(result.refused)} finished run(s) are much older than the history and "
            f"were not folded ({', '.join(result.refused[:5])}): folding them in time order would fold too "
            "many later runs again; run `hhpulse history --rebuild` to rebuild it from every raw run in order",
            file=sys.stderr,
        )
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _print_versions(store, rows) -> int:  # type: ignore[no-untyped-def]
    from hhpulse.data.history_store import TABLE_KEY

    if not rows:
        print(f"hhpulse history: no history table at {store.uri(TABLE_KEY)}", file=sys.stderr)
        return 2
    print(f"{'version':>7}  {'time':<25} {'operation':<14} {'runs':>5} {'vacancies':>9}  folded")
    for r in rows:
        folded = r.get("folded") or []
        what = ", ".join(folded[:3]) + (f" (+{len(folded) - 3})" if len(folded) > 3 else "")
        if r.get("restored_from") is not None:
            what = f"restored version {r['restored_from']}"
        runs = "" if r.get("runs") is None else r["runs"]
        vac = "" if r.get("vacancies") is None else r["vacancies"]
        print(
            f"{r['version']:>7}  {r.get('time') or '':<25} {r.get('operation') or '':<14} {runs!s:>5} "
            f"{vac!s:>9}  {what}"
        )
    print(
        f"-> {store.uri(TABLE_KEY)}  (time travel: hhpulse train --as-of VERSION; hhpulse history --restore VERSION)"
    )
    return 0
