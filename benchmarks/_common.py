"""Shared helpers for the benchmarks: where the shared data is, and measuring time and peak memory."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HHPULSE_SHARED", REPO.parent / "shared"))
REAL_DUMP = SHARED / "data" / "hh" / "vacancies_dev.api.jsonl.gz"
RATES = SHARED / "data" / "hh" / "api_samples" / "dictionaries_2024-12.json"


def real_data_or_skip() -> Path | None:
    if not REAL_DUMP.is_file():
        print(f"SKIP: real data not found at {REAL_DUMP} (set HHPULSE_SHARED)")
        return None
    return REAL_DUMP


def _child(conn: Any, fn: Callable[[], Any]) -> None:
    import psutil

    base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    try:
        out = fn()
        err = None
    except Exception as exc:  # report, do not hang the parent
        out, err = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn.send((out, err, seconds, max(0, peak - base), peak))
    conn.close()


def measured(fn: Callable[[], Any]) -> tuple[Any, float, int, int]:
    """Run ``fn`` in a forked child: (result, seconds, peak RSS growth in bytes, peak RSS in bytes)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn))
    proc.start()
    out, err, seconds, growth, peak = parent.recv()
    proc.join()
    if err:
        raise RuntimeError(err)
    return out, seconds, growth, peak


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def timed_request(
    conn: Any, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[float, int]:
    """One request on a keep-alive ``http.client`` connection: (seconds, status), the answer read."""
    t = time.perf_counter()
    conn.request(method, path, body, headers)
    resp = conn.getresponse()
    resp.read()
    return time.perf_counter() - t, resp.status


def start_predictor(
    bundle_dir: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``python -m hhpulse.serving`` on ``port`` with ``extra`` flags (output discarded); ``env``
    adds to (or overrides) this process's environment."""
    cmd = [sys.executable, "-m", "hhpulse.serving", "--model_dir", str(bundle_dir), "--http_port", str(port)]
    return subprocess.Popen(
        [*cmd, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
