"""One collection run: fetch items from a source and store them as an append-only raw run.

Layout (see docs/ARCHITECTURE.md)::

    raw/<run_id>/vacancies.jsonl.gz   every item as received, unique by id, plus collected_at
    raw/<run_id>/meta.json            source, parameters, counts, stop reason, coverage, rates

The items are written first and ``meta.json`` last, each in one atomic put: a run
without ``meta.json`` was killed midway and is ignored downstream. Nothing ever
rewrites an earlier run.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tqdm import tqdm

from hhpulse import __version__
from hhpulse.hh.client import HHError
from hhpulse.hh.records import format_datetime, parse_datetime
from hhpulse.hh.sources import Source
from hhpulse.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectResult:
    run_id: str
    meta: dict[str, Any]
    items: int
    stop_reason: str | None
    complete: bool

    @property
    def ok(self) -> bool:
        return self.stop_reason is None


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<8 hex>``: sorting run ids sorts runs by start time."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def list_runs(store: Store, *, complete_only: bool = False) -> list[str]:
    """Run ids that have a meta.json (finished runs), oldest first."""
    runs = sorted({k.split("/")[1] for k in store.list("raw/") if k.endswith("/meta.json")})
    if complete_only:
        runs = [r for r in runs if store.get_json(f"raw/{r}/meta.json").get("complete")]
    return runs


def encode_items(items: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for item in items:
            gz.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())
            gz.write(b"\n")
    return buf.getvalue()


def read_items(store: Store, run_id: str) -> list[dict[str, Any]]:
    data = gzip.decompress(store.get_bytes(f"raw/{run_id}/vacancies.jsonl.gz"))
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def collect(
    source: Source,
    store: Store,
    *,
    collected_at: datetime | str | None = None,
    progress: bool | None = None,
) -> CollectResult:
    """Run one collection from ``source`` into ``store``.

    A captcha, exhausted retries or any other API error stops the run cleanly: what was
    collected so far is stored, ``meta.stop_reason`` says why, and ``meta.complete`` is
    false. The caller decides how to exit (the CLI exits non-zero).
    """
    started = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = new_run_id(started)
    source.prepare(store)
    stamp = parse_datetime(collected_at, "collected_at") if collected_at else None
    stamp = stamp or source.collected_at or started
    stamp_text = format_datetime(stamp)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=0, unit="page", desc=f"collect {source.kind}", disable=not show, leave=False)

    items: dict[str, dict[str, Any]] = {}
    duplicates = 0
    stop_reason: str | None = None
    rates: dict[str, float] = {}
    rates_source = ""
    try:
        rates, rates_source = source.currency_rates()
        for n, item in enumerate(source.fetch(progress=bar), 1):
            key = str(item.get("id")) if item.get("id") is not None else f"__missing_id_{n}"
            if key in items:
                duplicates += 1
                continue
            if not item.get("collected_at"):
                item = {**item, "collected_at": stamp_text}
            items[key] = item
            if not show and n % 5000 == 0:
                log.info("collect %s: %d items so far", source.kind, len(items))
    except HHError as exc:
        stop_reason = f"{type(exc).__name__}: {exc}"
        log.error("collection stopped early, keeping %d items: %s", len(items), stop_reason)
    finally:
        bar.close()

    coverage = source.coverage()
    stats = source.stats()
    complete = stop_reason is None and bool(coverage.get("complete"))
    meta = {
        "run_id": run_id,
        "hhpulse_version": __version__,
        "source": source.describe(),
        "synthetic": source.synthetic,
        "collected_at": stamp_text,
        "started_at": format_datetime(started),
        "finished_at": format_datetime(datetime.now(timezone.utc).replace(microsecond=0)),
        "counts": {
            "requests": stats.requests,
            "pages": stats.pages,
            "retries": stats.retries,
            "items": len(items),
            "duplicates_dropped": duplicates,
        },
        "stop_reason": stop_reason,
        "complete": complete,
        "coverage": {**coverage, "complete": complete},
        "currency_rates": rates,
        "currency_rates_source": rates_source,
    }
    store.put_bytes(f"raw/{run_id}/vacancies.jsonl.gz", encode_items(list(items.values())))
    store.put_json(f"raw/{run_id}/meta.json", meta)  # last: marks the run finished
    log.info(
        "run %s: %d items (%d duplicates dropped, %d requests, %d retries) -> %s",
        run_id,
        len(items),
        duplicates,
        stats.requests,
        stats.retries,
        store.uri(f"raw/{run_id}/"),
    )
    return CollectResult(
        run_id=run_id, meta=meta, items=len(items), stop_reason=stop_reason, complete=complete
    )
