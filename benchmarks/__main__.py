"""Run every benchmark module (or those named on the command line).

    python -m benchmarks [name ...] [--option ...]

Options (everything from the first argument that starts with ``-``) go to the last benchmark
named, e.g. ``python -m benchmarks scale --days 365`` (``make bench BENCH="scale --days 365"``).
Benchmarks that take hours (``EXPLICIT_ONLY``) run only when named.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    cut = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    args, options = argv[:cut], argv[cut:]
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in args]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    if options and not wanted:
        print(f"options {' '.join(options)} need a benchmark name before them", file=sys.stderr)
        return 2
    failed = 0
    for name in wanted or names:
        mod = importlib.import_module(f"benchmarks.{name}")
        if not wanted and getattr(mod, "EXPLICIT_ONLY", False):
            print(f"\n=== {name} === not run: it takes hours; run it by name (make bench BENCH={name[6:]})")
            continue
        mine = options if wanted and name == wanted[-1] else []
        if mine and not inspect.signature(mod.main).parameters:
            print(f"{name} takes no options, got {' '.join(mine)}", file=sys.stderr)
            return 2
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            mod.main(mine) if mine else mod.main()
        except Exception as exc:  # one broken benchmark should not hide the others
            failed += 1
            print(f"{name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"--- {name}: {time.perf_counter() - start:.1f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
