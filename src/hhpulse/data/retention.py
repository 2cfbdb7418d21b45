"""Retention: ``hhpulse store prune --raw-older-than DAYS``, of raw runs and of the history's files.

Raw runs (``raw/<run_id>/``, with their ``quarantine/<run_id>/``) are the immutable record that
the history is folded from. A normal run never reads a run again once it is folded, but
``hhpulse history --rebuild`` and ``--verify`` read every raw run from the first. So what history
still needs is precise:

=====================================  ===============================================================
raw run                                older than DAYS: pruned?
=====================================  ===============================================================
unfinished (no ``meta.json``)          yes: nothing reads it (a run killed midway; history skips it)
finished, not folded yet               never: the next fold needs it
finished, folded (or skipped by the    only with ``--force-rebuild-gap``: ``--rebuild`` and
fold: no items)                        ``--verify`` need it. With the flag it goes, and
                                       ``retention.json`` records it (see below)
newer than DAYS                        never
=====================================  ===============================================================

A run's age is its ``collected_at`` (an unfinished run's: the start time in its id) against now.
Without a history (the Delta table ``history/vacancies/``, see :mod:`hhpulse.data.history_store`),
no finished run is pruned.

The same prune vacuums the history table (``--history-retention-days``, 30 by default): it
removes the data files that no version of the table younger than that uses (the open files
earlier folds replaced, settled files rewritten when vacancies came back, the files of folds
that failed before their commit) and old id indexes. Time travel (``hhpulse train --as-of``,
``hhpulse history --restore``) reaches back exactly that far. Once the Delta table holds every
run the old layout held (``history/state.json``, ``open/``, ``settled/``, ``index/``), those
old files go too.

``retention.json`` (updated with a conditional write) lists every pruned finished run: id,
``collected_at``, bytes, whether it was a complete demo run and its day (the demo source counts
those when it picks the next day, so pruning never makes it collect a day again), and when it
was pruned. After a forced prune, a rebuild from the raw runs left can no longer reproduce the
history's older part: :func:`rebuild_gap` names the runs that are missing, for
``hhpulse history`` to refuse ``--rebuild`` (``--verify`` reports them as runs the raw record
lacks).

A prune records the finished runs it removes in ``retention.json`` first, then deletes each
run's ``meta.json`` first and its other objects after: what a prune killed midway leaves of a
run is removed by the next prune, whatever its age (the record says it was being pruned). It is
an operator's command: the pipeline never runs it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hhpulse.data import history_legacy
from hhpulse.data.history_store import (
    RETENTION_DAYS,
    HistoryError,
    VacuumPlan,
    history_runs,
    open_snapshot,
    plan_vacuum,
    vacuum,
)
from hhpulse.data.runs import RETENTION_KEY, list_runs, pruned_runs
from hhpulse.data.store import KeyNotFound, Store, update_json
from hhpulse.hh.records import format_datetime, parse_datetime

log = logging.getLogger(__name__)

RUN_PREFIXES = ("raw/", "quarantine/")

# why a run is kept (or goes)
REMOVE_UNFINISHED = "unfinished (no meta.json): nothing reads it"
REMOVE_FOLDED = "folded into history (--force-rebuild-gap: --rebuild can no longer reproduce it)"
REMOVE_INTERRUPTED = "recorded as pruned by a prune that was interrupted"
KEEP_NEW = "newer than the cutoff"
KEEP_UNFOLDED = "not folded into history yet: the next fold needs it"
KEEP_REBUILD = "folded, but `hhpulse history --rebuild`/`--verify` need it (see --force-rebuild-gap)"
KEEP_NO_TIME = "its time is unknown"


class PruneError(RuntimeError):
    """The prune cannot be done as asked."""


@dataclass
class RunPlan:
    run_id: str
    when: datetime | None
    bytes: int
    keys: list[str]
    remove: bool
    reason: str
    meta: dict[str, Any] | None = None


@dataclass
class PrunePlan:
    cutoff: datetime
    runs: list[RunPlan] = field(default_factory=list)
    history: VacuumPlan | None = None  # the history table's vacuum (None: no table)
    legacy: list[str] = field(default_factory=list)  # the old layout's files, replaced by the table
    legacy_bytes: int = 0
    legacy_kept: str | None = None  # why the old layout's files stay

    @property
    def removed(self) -> list[RunPlan]:
        return [r for r in self.runs if r.remove]

    @property
    def kept(self) -> list[RunPlan]:
        return [r for r in self.runs if not r.remove]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed)

    def lines(self, *, dry_run: bool) -> list[str]:
        """What goes (and what old runs stay, and why), one run a line, then a summary."""
        verb = "would remove" if dry_run else "removed"
        out = [
            f"{'remove' if r.remove else 'keep  '} {r.run_id}  {_when(r.when)}  {human_bytes(r.bytes):>9}  {r.reason}"
            for r in self.runs
            if r.remove or r.reason != KEEP_NEW
        ]
        kept_old = [r for r in self.kept if r.reason != KEEP_NEW]
        out.append(
            f"{verb} {len(self.removed)} raw run(s), {human_bytes(self.bytes)} ({self.bytes} bytes), "
            f"older than {format_datetime(self.cutoff)}; kept {len(self.kept)} "
            f"({len(kept_old)} of them older, listed above)"
        )
        if self.history is not None:
            h = self.history
            out.append(
                f"history: {verb} {len(h.files)} file(s), {human_bytes(h.bytes)}, that no version of the "
                f"last {h.retention_days:g} days uses (time travel reaches back {h.retention_days:g} days)"
            )
        if self.legacy:
            out.append(
                f"history: {verb} the old layout's {len(self.legacy)} file(s), {human_bytes(self.legacy_bytes)} "
                "(history/state.json, open/, settled/, index/): the Delta table holds every run they held"
            )
        elif self.legacy_kept:
            out.append(f"history: kept the old layout's files: {self.legacy_kept}")
        return out


def _when(when: datetime | None) -> str:
    return format_datetime(when) if when else "?" * 20


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _run_time(run_id: str, meta: dict[str, Any] | None) -> datetime | None:
    try:
        if meta is not None:
            return parse_datetime(meta.get("collected_at"), "collected_at")
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except (ValueError, TypeError):
        return None


def plan_prune(
    store: Store,
    older_than_days: float,
    *,
    force_rebuild_gap: bool = False,
    now: datetime | None = None,
    history_retention_days: float = RETENTION_DAYS,
) -> PrunePlan:
    """Decide, run by run, what a prune removes (nothing is changed)."""
    if older_than_days < 1:
        raise PruneError(f"--raw-older-than must be at least 1 day, got {older_than_days:g}")
    if history_retention_days < 1:
        raise PruneError(f"--history-retention-days must be at least 1 day, got {history_retention_days:g}")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    cutoff = now - timedelta(days=older_than_days)
    keys: dict[str, list[str]] = defaultdict(list)
    for prefix in RUN_PREFIXES:
        for key in store.list(prefix):
            if key.count("/") >= 2:
                keys[key.split("/")[1]].append(key)
    finished = set(list_runs(store))
    folded = history_runs(store)
    gone = {p["run_id"] for p in pruned_runs(store)}
    plan = PrunePlan(cutoff)
    for run_id in sorted(keys):
        meta = store.get_json(f"raw/{run_id}/meta.json") if run_id in finished else None
        when = _run_time(run_id, meta)
        if run_id in gone:
            remove, reason = True, REMOVE_INTERRUPTED
        elif when is None:
            remove, reason = False, KEEP_NO_TIME
        elif when >= cutoff:
            remove, reason = False, KEEP_NEW
        elif meta is None:
            remove, reason = True, REMOVE_UNFINISHED
        elif folded is None or run_id not in folded:
            remove, reason = False, KEEP_UNFOLDED
        elif force_rebuild_gap:
            remove, reason = True, REMOVE_FOLDED
        else:
            remove, reason = False, KEEP_REBUILD
        old = remove or when is None or when < cutoff
        size = sum(store.size(k) for k in keys[run_id]) if old else 0
        plan.runs.append(RunPlan(run_id, when, size, sorted(keys[run_id]), remove, reason, meta))
    _plan_history(store, plan, history_retention_days)
    return plan


def _plan_history(store: Store, plan: PrunePlan, retention_days: float) -> None:
    try:
        plan.history = plan_vacuum(store, retention_days)
        snap = open_snapshot(store)
    except HistoryError as exc:
        raise PruneError(f"the history cannot be vacuumed: {exc}") from None
    legacy = history_legacy.keys(store)
    if not legacy:
        return
    if snap is None:
        plan.legacy_kept = (
            "the history is still in the old layout (the next fold moves it onto the Delta table)"
        )
        return
    try:
        old = history_legacy.load_state(store)
    except history_legacy.LegacyError:
        old = None  # unreadable: nothing in it can be read again
    missing = sorted({r["run_id"] for r in (old or {}).get("runs", [])} - {r["run_id"] for r in snap.runs})
    if missing:
        plan.legacy_kept = (
            f"the Delta table lacks {len(missing)} run(s) they hold (e.g. {', '.join(missing[:3])})"
        )
        return
    plan.legacy = legacy
    plan.legacy_bytes = sum(_size(store, k) for k in legacy)


def _size(store: Store, key: str) -> int:
    try:
        return store.size(key)
    except KeyNotFound:
        return 0


def _record(run: RunPlan) -> dict[str, Any]:
    meta = run.meta or {}
    source = meta.get("source") or {}
    demo = source.get("kind") == "demo" and bool(meta.get("complete"))
    return {
        "run_id": run.run_id,
        "collected_at": meta.get("collected_at"),
        "bytes": run.bytes,
        "complete_demo_run": demo,
        "demo_day": source.get("day") if demo else None,
        "pruned_at": format_datetime(datetime.now(timezone.utc).replace(microsecond=0)),
    }


def prune(store: Store, plan: PrunePlan, *, progress: bool = False) -> PrunePlan:
    """Carry out ``plan``: record the finished runs it removes in ``retention.json``, then delete
    each run (``meta.json`` first)."""
    from tqdm import tqdm

    records = [_record(r) for r in plan.removed if r.meta is not None]
    if records:

        def add(cur: dict[str, Any] | None) -> dict[str, Any]:
            cur = cur or {"pruned": []}
            have = {p["run_id"] for p in cur["pruned"]}
            pruned = [*cur["pruned"], *(r for r in records if r["run_id"] not in have)]
            return {
                "pruned": sorted(pruned, key=lambda p: p["run_id"]),
                "updated_at": records[0]["pruned_at"],
            }

        update_json(store, RETENTION_KEY, add)
    for run in tqdm(plan.removed, desc="prune", unit="run", disable=not progress, leave=False):
        meta_key = f"raw/{run.run_id}/meta.json"
        for key in sorted(run.keys, key=lambda k: k != meta_key):  # meta.json first
            store.delete(key)
        log.info("removed raw run %s (%s)", run.run_id, human_bytes(run.bytes))
    if plan.history is not None:
        try:
            done = vacuum(store, plan.history.retention_days)
        except HistoryError as exc:
            raise PruneError(f"the history cannot be vacuumed: {exc}") from None
        if done is not None:
            plan.history = done
    for key in sorted(plan.legacy, key=lambda k: k != history_legacy.STATE_KEY):  # the state first
        store.delete(key)
    return plan
