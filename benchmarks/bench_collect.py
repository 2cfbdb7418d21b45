"""Collecting, validating and folding into history the 23,742 real vacancies (file import).

Baseline measured in the same run: plain json.loads of the same gzip file.
"""

from __future__ import annotations

import tempfile

from benchmarks._common import RATES, mb, measured, real_data_or_skip


def _baseline(path):
    import gzip
    import json

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return sum(1 for line in fh if json.loads(line))


def _collect_validate(path, root):
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import make_source
    from hhpulse.data.store import LocalStore
    from hhpulse.data.validate import validate_run

    store = LocalStore(root)
    result = collect(
        make_source(f"file:{path}", rates=RATES if RATES.is_file() else None), store, progress=False
    )
    report = validate_run(store, result.run_id)
    return result.items, report.bad


def _history(root):
    from hhpulse.data.history_store import rebuild_history
    from hhpulse.data.store import LocalStore

    return len(rebuild_history(LocalStore(root)))


def main() -> None:
    path = real_data_or_skip()
    if path is None:
        return
    import logging

    logging.getLogger("hhpulse").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-") as root:
        n, base_s, base_mem, _ = measured(lambda: _baseline(path))
        (items, bad), cv_s, cv_mem, cv_peak = measured(lambda: _collect_validate(path, root))
        rows, h_s, h_mem, _ = measured(lambda: _history(root))
    print(f"{'step':<44} {'seconds':>8} {'RSS growth':>11}")
    print(f"{'baseline: json.loads of the gzip file':<44} {base_s:>8.2f} {mb(base_mem):>11}")
    print(
        f"{'collect (file import) + validate':<44} {cv_s:>8.2f} {mb(cv_mem):>11}   (peak RSS {mb(cv_peak)})"
    )
    print(f"{'history rebuild':<44} {h_s:>8.2f} {mb(h_mem):>11}")
    print(
        f"{items} vacancies collected, {bad} quarantined, {rows} in history; "
        f"collect+validate is {cv_s / base_s:.1f}x the bare JSON parse"
    )
