"""``hhpulse validate``: check a collection run against the data contract."""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )
    p.add_argument(
        "--run",
        default="latest",
        help="run id to validate, or latest (the newest by collected_at) [%(default)s]",
    )
    p.add_argument(
        "--max-bad-fraction", type=float, default=0.2, help="fail above this share of bad rows [%(default)s]"
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.store import StoreError, open_store
    from hhpulse.data.validate import ValidationFailed, validate_run

    store = open_store(args.store)
    try:
        report = validate_run(store, args.run, max_bad_fraction=args.max_bad_fraction)
    except ValidationFailed as exc:
        print(f"hhpulse validate: {exc}", file=sys.stderr)
        return 1
    except (StoreError, ValueError) as exc:
        print(f"hhpulse validate: {exc}", file=sys.stderr)
        return 2
    print(report.summary_line())
    print(f"report: {store.uri(f'raw/{report.run_id}/validation.md')}")
    return 0
