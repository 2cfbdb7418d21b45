"""One collection run: fetch items from a source and store them as an append-only raw run.

Layout (see docs/ARCHITECTURE.md)::

    raw/<run_id>/vacancies.jsonl.gz   every item as received, unique by id, plus collected_at
    raw/<run_id>/meta.json            source, parameters, counts, stop reason, coverage, rates

The items are written first and ``meta.json`` last, each in one atomic put: a run
without ``meta.json`` was killed midway and is ignored downstream. Nothing ever
rewrites an earlier run.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

from tqdm import tqdm

from hhpulse import __version__
from hhpulse.data.runs import UNREADABLE_KEY, CollectResult, encode_items, list_runs, new_run_id
from hhpulse.data.sources import Source
from hhpulse.data.store import Store, StoreError, update_json
from hhpulse.hh.client import HHError
from hhpulse.hh.records import format_datetime, parse_datetime

log = logging.getLogger(__name__)

# -- what a store holds: synthetic (demo) data, real data, or (on purpose) both --------------
STORE_INFO = "store.json"
DATA_KINDS = ("synthetic", "real", "mixed")


class MixedDataError(StoreError):
    """A run would put real data into a synthetic store, or the other way round."""


class NothingCollected(RuntimeError):
    """The source failed before it gave a single item: no raw run is written, and the store's
    data kind is not recorded (a store is marked only by a run that collected something)."""


def store_data_kind(store: Store) -> str | None:
    """``synthetic``, ``real`` or ``mixed`` (recorded in ``store.json``); None for an empty store.

    Stores from before ``store.json`` are judged by their runs' ``meta.json``.
    """
    if store.exists(STORE_INFO):
        kind = store.get_json(STORE_INFO).get("data")
        if kind in DATA_KINDS:
            return str(kind)
    kinds = {bool(store.get_json(f"raw/{r}/meta.json").get("synthetic")) for r in list_runs(store)}
    if not kinds:
        return None
    return "mixed" if len(kinds) > 1 else ("synthetic" if kinds.pop() else "real")


def check_data_kind(store: Store, synthetic: bool, *, allow_mixed: bool = False) -> str:
    """The store's kind once a run of this kind is added; :class:`MixedDataError` when that mixes
    synthetic and real data and ``allow_mixed`` was not given."""
    new = "synthetic" if synthetic else "real"
    kind = store_data_kind(store)
    if kind is None or kind == new:
        return new
    if kind == "mixed" or allow_mixed:
        return "mixed"
    what = {"synthetic": "SYNTHETIC demo data", "real": "real hh.ru data"}
    raise MixedDataError(
        f"the store {store.uri()} holds {what[kind]}; refusing to add {what[new]} to it: models trained "
        f"on the mix would blend the two, and the {kind} champion would stay. Use another store "
        "(--store DIR), or pass --allow-mixed-data (pipeline: allow_mixed_data) to mix them on purpose"
    )


def record_data_kind(store: Store, kind: str, run_id: str) -> None:
    """Write ``store.json`` when the store's kind is new or changed, with a conditional write.

    ``kind`` is what :func:`check_data_kind` allowed when the run started. When a run of the other
    kind finished meanwhile (two runs at once on a new store), the store now holds both: the record
    says ``mixed`` and, unless mixing was allowed (``kind`` is ``mixed``), :class:`MixedDataError`
    says what happened.
    """
    raced: list[str] = []

    def merge(cur: dict[str, Any] | None) -> dict[str, Any]:
        have = (cur or {}).get("data")
        new = kind if have in (None, kind) or kind == "mixed" else "mixed"
        if cur is not None and have == new:
            return cur
        raced[:] = [have] if new == "mixed" and kind != "mixed" else []
        return {"data": new, "since_run": run_id, "updated_at": format_datetime(datetime.now(timezone.utc))}

    update_json(store, STORE_INFO, merge)
    if raced:
        raise MixedDataError(
            f"a run of {raced[0]} data finished in {store.uri()} while this run collected {kind} data "
            f"(run {run_id}): the store now holds both and {store.uri(STORE_INFO)} says mixed. Move one "
            "of the two runs' raw/<run_id>/ folders to another store, or keep the mix on purpose"
        )


def collect(
    source: Source,
    store: Store,
    *,
    collected_at: datetime | str | None = None,
    progress: bool | None = None,
    allow_mixed: bool = False,
) -> CollectResult:
    """Run one collection from ``source`` into ``store`` (see :func:`_collect`); whatever the
    source claimed before fetching (the demo's day) is settled when the run ends, however it ends."""
    try:
        result = _collect(
            source, store, collected_at=collected_at, progress=progress, allow_mixed=allow_mixed
        )
    except BaseException:
        source.finish(store, None)
        raise
    source.finish(store, result)
    return result


def _collect(
    source: Source,
    store: Store,
    *,
    collected_at: datetime | str | None = None,
    progress: bool | None = None,
    allow_mixed: bool = False,
) -> CollectResult:
    """Run one collection from ``source`` into ``store``.

    A store holds synthetic (demo) or real data: a run of the other kind raises
    :class:`MixedDataError` before anything is fetched, unless ``allow_mixed``.
    Lines of a dump that cannot be read as items go to ``quarantine/<run_id>/unreadable.jsonl.gz``
    (``meta.counts.unreadable``); they never stop the run.

    A captcha, exhausted retries or any other API error stops the run cleanly: what was
    collected so far is stored, ``meta.stop_reason`` says why, and ``meta.complete`` is
    false. The caller decides how to exit (the CLI exits non-zero). When the error came before
    any item, :class:`NothingCollected` is raised instead: no empty run, no ``store.json``.
    """
    started = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = new_run_id(started)
    kind = check_data_kind(store, source.synthetic, allow_mixed=allow_mixed)
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

    if stop_reason is not None and not items:
        raise NothingCollected(
            f"nothing was collected from {source.kind}, so no run was stored and the store is unchanged: "
            f"{stop_reason}"
        )
    coverage = source.coverage()
    stats = source.stats()
    rejected = source.rejected()
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
            "unreadable": len(rejected),
        },
        "stop_reason": stop_reason,
        "complete": complete,
        "coverage": {**coverage, "complete": complete},
        "currency_rates": rates,
        "currency_rates_source": rates_source,
    }
    store.put_bytes(f"raw/{run_id}/vacancies.jsonl.gz", encode_items(list(items.values())))
    if rejected:
        store.put_bytes(UNREADABLE_KEY.format(run_id=run_id), encode_items(rejected))
        log.warning(
            "%d input lines could not be read as vacancies -> %s",
            len(rejected),
            store.uri(UNREADABLE_KEY.format(run_id=run_id)),
        )
    store.put_json(f"raw/{run_id}/meta.json", meta)  # last: marks the run finished
    record_data_kind(store, kind, run_id)
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
