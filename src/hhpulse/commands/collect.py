"""``hhpulse collect``: one collection run into the store."""

from __future__ import annotations

import argparse
import sys

from hhpulse.config import DEFAULT_API_URL


def add_source_args(
    p: argparse.ArgumentParser, *, default_source: str = "demo", pipeline: bool = False
) -> None:
    """The source options, shared by ``collect`` and ``run`` (``pipeline``: only those the
    pipeline's collect step takes; the others keep their defaults, so none is silently ignored)."""
    collect_only = p.add_argument
    if pipeline:
        p.set_defaults(
            api_url=DEFAULT_API_URL, rps=None, max_retries=6, collected_at=None, rates=None, demo_day=None
        )

        def collect_only(*flags: str, **kwargs: object) -> None:  # type: ignore[misc]
            return None

    p.add_argument(
        "--source",
        default=default_source,
        help="api (hh.ru), demo (the bundled SYNTHETIC emulator) or file:PATH (a dump; file:- reads stdin) "
        "[%(default)s]",
    )
    collect_only("--api-url", default=DEFAULT_API_URL, help="hh.ru API root for --source api [%(default)s]")
    p.add_argument(
        "--query",
        action="append",
        dest="queries",
        metavar="TEXT",
        help="search text, repeatable [api: Python, Data Scientist, Аналитик данных; demo: everything]",
    )
    p.add_argument("--area", default=None, help="hh.ru area id [api: 113 (Russia); demo: all]")
    p.add_argument("--contact", default=None, help="contact in the HH-User-Agent header [$HHPULSE_CONTACT]")
    collect_only("--rps", type=float, default=None, help="requests per second [api: 2, demo: unlimited]")
    collect_only("--max-retries", type=int, default=6, help="retries per request on 429/5xx [%(default)s]")
    collect_only("--collected-at", default=None, help="collection time for file items without one (ISO 8601)")
    collect_only("--rates", default=None, help="GET /dictionaries JSON with currency rates, for file imports")
    p.add_argument(
        "--demo-size", type=int, default=150, help="demo market: vacancies opened per day [%(default)s]"
    )
    collect_only("--demo-day", type=int, default=None, help="demo market: simulated day [advances per run]")


def source_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The source the arguments name; :class:`~hhpulse.data.sources.SourceError` before anything
    starts when they cannot work (hh.ru's API without a contact for its HH-User-Agent header)."""
    import os

    from hhpulse.data.sources import SourceError, make_source
    from hhpulse.hh.client import CONTACT_ENV

    if (
        args.source == "api"
        and args.api_url == DEFAULT_API_URL
        and not (args.contact or os.environ.get(CONTACT_ENV))
    ):
        raise SourceError(
            "hh.ru asks every client for a contact in its HH-User-Agent header: pass --contact "
            f"you@example.com or set {CONTACT_ENV}; nothing was started"
        )
    return make_source(
        args.source,
        api_url=args.api_url,
        queries=args.queries,
        area=args.area,
        contact=args.contact,
        rps=args.rps,
        max_retries=args.max_retries,
        collected_at=args.collected_at,
        rates=args.rates,
        demo_size=args.demo_size,
        demo_day=args.demo_day,
    )


def configure(p: argparse.ArgumentParser) -> None:
    add_source_args(p)
    p.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )
    p.add_argument("--no-validate", action="store_true", help="skip the data-contract validation")
    p.add_argument("--max-bad-fraction", type=float, default=0.2, help="validation threshold [%(default)s]")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="do not fold the run into the history (a later `hhpulse history` or run folds it)",
    )
    p.add_argument(
        "--allow-mixed-data",
        action="store_true",
        help="add real data to a store of SYNTHETIC demo data, or the other way round (refused otherwise)",
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.collect import NothingCollected, collect
    from hhpulse.data.sources import SourceError
    from hhpulse.data.store import StoreError, open_store

    try:
        store = open_store(args.store)
        source = source_from_args(args)
        result = collect(source, store, allow_mixed=args.allow_mixed_data)
    except (SourceError, StoreError) as exc:
        print(f"hhpulse collect: {exc}", file=sys.stderr)
        return 2
    except NothingCollected as exc:
        print(f"hhpulse collect: {exc}", file=sys.stderr)
        return 1
    print(f"run {result.run_id}: {result.items} vacancies -> {store.uri(f'raw/{result.run_id}/')}")
    unreadable = result.meta["counts"].get("unreadable")
    if unreadable:
        from hhpulse.data.runs import UNREADABLE_KEY

        print(
            f"hhpulse collect: {unreadable} input values were not vacancies (broken JSON lines or not objects); "
            f"kept aside in {store.uri(UNREADABLE_KEY.format(run_id=result.run_id))}",
            file=sys.stderr,
        )
    if result.meta.get("synthetic"):
        print("note: --source demo collects a SYNTHETIC market from the bundled emulator, not hh.ru")
    status = 0
    if result.stop_reason:
        print(
            f"hhpulse collect: stopped early ({result.items} vacancies kept): {result.stop_reason}",
            file=sys.stderr,
        )
        status = 1
    if not args.no_validate:
        from hhpulse.data.validate import ValidationFailed, validate_run

        try:
            report = validate_run(store, result.run_id, max_bad_fraction=args.max_bad_fraction)
            print(report.summary_line())
        except ValidationFailed as exc:
            print(f"hhpulse collect: {exc}", file=sys.stderr)
            return 1
    if not args.no_history:
        from hhpulse.data.history_store import BackfillRefused, ConcurrentFoldError, HistoryError, fold_run

        try:
            print(fold_run(store, result.run_id).summary_line())
        except HistoryError as exc:
            print(f"hhpulse collect: the run is stored, but history was not updated: {exc}", file=sys.stderr)
            # a broken history is a bad shape (exit 2); a run too old to fold, or lost races, exit 1
            return 1 if isinstance(exc, (BackfillRefused, ConcurrentFoldError)) else 2
    return status
