"""The raw run's layout: the one home of where a collection run and its side files live.

Layout (see docs/ARCHITECTURE.md)::

    raw/<run_id>/vacancies.jsonl.gz          every item as received, unique by id, plus collected_at
    raw/<run_id>/meta.json                   source, parameters, counts, stop reason, coverage, rates
    quarantine/<run_id>/rows.jsonl.gz        the items validation refused, with their reasons
    quarantine/<run_id>/unreadable.jsonl.gz  a dump's values that were not items
    retention.json                           the finished runs ``hhpulse store prune`` removed

The items are written first and ``meta.json`` last, each in one atomic put: a run without
``meta.json`` was killed midway and is ignored downstream. Nothing ever rewrites an earlier
run. Everything that reads or names a raw run (collect, validation, the history, retention,
the demo source) takes it from here.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hhpulse.data.store import KeyNotFound, Store
from hhpulse.hh.records import parse_datetime

UNREADABLE_KEY = "quarantine/{run_id}/unreadable.jsonl.gz"
QUARANTINE_KEY = "quarantine/{run_id}/rows.jsonl.gz"
RETENTION_KEY = "retention.json"


@dataclass(frozen=True)
class CollectResult:
    """What one collection run wrote: its id, ``meta.json``, item count and why it stopped."""

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
    """Run ids that have a meta.json (finished runs), sorted by id (see :func:`runs_by_time`)."""
    runs = sorted({k.split("/")[1] for k in store.list("raw/") if k.endswith("/meta.json")})
    if complete_only:
        runs = [r for r in runs if store.get_json(f"raw/{r}/meta.json").get("complete")]
    return runs


def run_order_key(meta: Mapping[str, Any], run_id: str) -> tuple[float, str]:
    """How runs are ordered in time: by ``collected_at``, then by id.

    Run ids of runs started in the same second do not sort by time, and the demo's
    simulated clock is not the wall clock, so "the newest run" is always the one with the
    latest ``collected_at``. A run without one sorts last.
    """
    try:
        when = parse_datetime(meta.get("collected_at"), "collected_at")
    except ValueError:
        when = None
    return (when.timestamp() if when else float("inf"), run_id)


def runs_by_time(store: Store) -> list[str]:
    """Finished run ids, oldest first by :func:`run_order_key`."""
    metas = {r: store.get_json(f"raw/{r}/meta.json") for r in list_runs(store)}
    return sorted(metas, key=lambda r: run_order_key(metas[r], r))


def latest_run(store: Store) -> str | None:
    """The newest finished run (by ``collected_at``), or None in an empty store."""
    runs = runs_by_time(store)
    return runs[-1] if runs else None


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


def quarantined_ids(store: Store, run_id: str) -> set[str]:
    """Ids quarantined for a run (empty when the run was clean or never validated)."""
    key = QUARANTINE_KEY.format(run_id=run_id)
    if not store.exists(key):
        return set()
    data = gzip.decompress(store.get_bytes(key))
    return {str(json.loads(line).get("id")) for line in data.splitlines() if line.strip()}


def pruned_runs(store: Store) -> list[dict[str, Any]]:
    """What ``retention.json`` records of the finished runs pruned so far."""
    try:
        return list(store.get_json(RETENTION_KEY).get("pruned", []))
    except KeyNotFound:
        return []


def rebuild_gap(store: Store, folded: Sequence[str]) -> list[str]:
    """The ``folded`` runs whose raw data was pruned: a rebuild from the raw runs cannot reproduce them."""
    gone = {p["run_id"] for p in pruned_runs(store)}
    return [r for r in folded if r in gone]
