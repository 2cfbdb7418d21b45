"""The validate step of an earlier hhpulse (the one ``bench_scale --before REF`` compares with):
validate a raw run, then fold it into that version's history in a store of its own.

    PYTHONPATH=<REF's src> python benchmarks/_before_fold.py STORE RUN_ID HISTORY_STORE

Prints one JSON line: the seconds of each part and the process's peak RSS (``VmHWM``). Runs
in a process of its own, as a pod would; imports only what that version's step imports.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(root: str, run_id: str, history_root: str) -> None:
    logging.basicConfig(level=logging.ERROR)
    import hhpulse
    from hhpulse.data import history_store
    from hhpulse.data.store import LocalStore
    from hhpulse.data.validate import validate_run

    store = LocalStore(root)
    t = time.perf_counter()
    validate_run(store, run_id)
    validate_s = time.perf_counter() - t
    t = time.perf_counter()
    history_store.fold_run(store, run_id, into=LocalStore(history_root))
    fold_s = time.perf_counter() - t
    out = {"validate_s": validate_s, "fold_s": fold_s, "peak_rss": _peak_rss(), "hhpulse": hhpulse.__file__}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
