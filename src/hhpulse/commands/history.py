"""``hhpulse history``: rebuild history/vacancies.parquet from every raw run."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.history import HISTORY_KEY, rebuild_history, summarize
    from hhpulse.store import open_store

    store = open_store(args.store)
    print(summarize(rebuild_history(store)))
    print(f"-> {store.uri(HISTORY_KEY)}")
    return 0
