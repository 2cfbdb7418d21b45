"""`hhpulse store prune --raw-older-than DAYS`: on a folder and a real S3 server on 127.0.0.1, it
removes only what history no longer needs, lists what would go with --dry-run, records pruned
finished runs, and keeps the demo's day sequence."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from hhpulse.data.collect import collect
from hhpulse.data.history_store import HistoryError, fold_run, history_runs, read_history, rebuild, verify
from hhpulse.data.retention import (
    KEEP_NEW,
    KEEP_REBUILD,
    KEEP_UNFOLDED,
    REMOVE_FOLDED,
    REMOVE_INTERRUPTED,
    REMOVE_UNFINISHED,
    PruneError,
    plan_prune,
    prune,
)
from hhpulse.data.runs import list_runs, pruned_runs, rebuild_gap
from hhpulse.data.sources import DEMO_START_DAY, make_source
from hhpulse.data.store import LocalStore
from hhpulse.hh.market import Market

NOW = Market.clock(DEMO_START_DAY + 10)  # the demo's simulated clock: run k is 10 - k days old


def _runs(store, n):
    """n daily demo runs, oldest first (run ids of runs started in one second do not sort by time)."""
    return [collect(make_source("demo", demo_size=20), store, progress=False).run_id for _ in range(n)]


@pytest.fixture
def four_runs(store):
    """Four daily demo runs (10, 9, 8 and 7 days old at NOW); the first three folded; an unfinished
    run 12 days old (a killed run's items, with quarantine, but no meta.json)."""
    ids = _runs(store, 4)
    fold_run(store, ids[2])
    killed = "20260220T030000Z-deadbeef"  # 2026-02-20: before NOW - 10 days
    store.put_bytes(f"raw/{killed}/vacancies.jsonl.gz", b"x" * 100)
    store.put_bytes(f"quarantine/{killed}/unreadable.jsonl.gz", b"y" * 10)
    return ids, killed


def _reasons(plan):
    return {r.run_id: (r.remove, r.reason) for r in plan.runs}


def test_the_rule_run_by_run(store, four_runs):
    ids, killed = four_runs
    plan = plan_prune(store, 8.5, now=NOW)  # runs 0 and 1 (10 and 9 days old) are older
    assert _reasons(plan) == {
        killed: (True, REMOVE_UNFINISHED),
        ids[0]: (False, KEEP_REBUILD),
        ids[1]: (False, KEEP_REBUILD),
        ids[2]: (False, KEEP_NEW),
        ids[3]: (False, KEEP_NEW),
    }
    forced = plan_prune(store, 6.5, now=NOW, force_rebuild_gap=True)  # all four are older
    assert _reasons(forced) == {
        killed: (True, REMOVE_UNFINISHED),
        ids[0]: (True, REMOVE_FOLDED),
        ids[1]: (True, REMOVE_FOLDED),
        ids[2]: (True, REMOVE_FOLDED),
        ids[3]: (False, KEEP_UNFOLDED),  # never: the next fold needs it
    }
    sizes = {r.run_id: r.bytes for r in forced.runs}
    assert sizes[killed] == 110
    assert sizes[ids[0]] == sum(store.size(k) for k in store.list(f"raw/{ids[0]}/"))
    assert forced.bytes == sum(sizes[r] for r in (killed, *ids[:3]))
    with pytest.raises(PruneError, match="at least 1 day"):
        plan_prune(store, 0.5, now=NOW)


def test_prune_without_history_keeps_every_finished_run(tmp_path):
    store = LocalStore(tmp_path)
    ids = _runs(store, 2)
    plan = plan_prune(store, 1, now=NOW, force_rebuild_gap=True)
    assert {r.run_id: r.reason for r in plan.runs} == {i: KEEP_UNFOLDED for i in ids}


def test_prune_removes_what_the_plan_says_and_history_is_unharmed(store, four_runs):
    ids, killed = four_runs
    before = read_history(store)
    plan = prune(store, plan_prune(store, 8.5, now=NOW, force_rebuild_gap=True), progress=False)
    assert [r.run_id for r in plan.removed] == sorted([killed, ids[0], ids[1]])
    assert store.list(f"raw/{killed}/") == [] and store.list(f"quarantine/{killed}/") == []
    assert store.list(f"raw/{ids[0]}/") == [] and store.list(f"raw/{ids[1]}/") == []
    assert list_runs(store) == sorted(ids[2:])
    recorded = pruned_runs(store)
    assert {p["run_id"] for p in recorded} == set(ids[:2])  # finished runs only
    assert all(p["complete_demo_run"] and p["bytes"] > 0 for p in recorded)
    assert {p["demo_day"] for p in recorded} == {DEMO_START_DAY, DEMO_START_DAY + 1}
    assert sorted(rebuild_gap(store, sorted(history_runs(store) or ()))) == sorted(ids[:2])
    # the stored history does not need them: it reads the same, and folding goes on
    after = read_history(store)
    assert after.equals(before)
    assert fold_run(store).folded == [ids[3]]
    # --verify cannot reproduce the pruned part from the raw runs left, and says so
    res = verify(store)
    assert not res.ok and any(ids[0] in d for d in res.differences)
    assert any("pruned" in d for d in res.differences)
    # and a rebuild in place refuses rather than silently dropping the pruned runs' rows
    kept = read_history(store)
    with pytest.raises(HistoryError, match="pruned"):
        rebuild(store)
    assert read_history(store).equals(kept)
    # the demo's day sequence goes on: pruned complete demo runs still count
    assert collect(make_source("demo", demo_size=20), store, progress=False).meta["source"]["day"] == (
        DEMO_START_DAY + 4
    )


def test_a_prune_killed_midway_is_finished_by_the_next(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    ids = _runs(store, 2)
    fold_run(store)
    plan = plan_prune(store, 1, now=NOW + timedelta(days=30), force_rebuild_gap=True)
    deletes = []
    real_delete = store.delete

    def killed_after_one(key):
        if deletes:
            raise KeyboardInterrupt  # the operator's ^C
        deletes.append(key)
        real_delete(key)

    monkeypatch.setattr(store, "delete", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prune(store, plan)
    monkeypatch.undo()
    assert deletes == [f"raw/{min(ids)}/meta.json"]  # meta.json went first: the run is unfinished
    again = plan_prune(store, 1, now=NOW)  # whatever the age and without --force-rebuild-gap
    assert _reasons(again)[min(ids)] == (True, REMOVE_INTERRUPTED)
    prune(store, again)
    assert store.list(f"raw/{min(ids)}/") == []
    assert {p["run_id"] for p in pruned_runs(store)} == set(ids)  # recorded before any delete


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "store", "prune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_cli_dry_run_lists_and_changes_nothing_then_prunes(store, four_runs):
    ids, killed = four_runs
    location = str(store.root) if isinstance(store, LocalStore) else store.url
    keys = store.list("")
    p = _cli("--store", location, "--raw-older-than", "1", "--dry-run")  # wall clock: all are older
    assert p.returncode == 0, p.stderr
    assert store.list("") == keys  # nothing removed
    assert f"remove {killed}" in p.stdout and "110 B" in p.stdout
    assert f"keep   {ids[0]}" in p.stdout and "--force-rebuild-gap" in p.stdout
    assert f"keep   {ids[3]}" in p.stdout and "not folded into history yet" in p.stdout
    assert (
        "would remove 1 raw run(s), 110 B (110 bytes)" in p.stdout
        and "dry run: nothing was removed" in p.stdout
    )
    p = _cli("--store", location, "--raw-older-than", "1", "--force-rebuild-gap")
    assert p.returncode == 0, p.stderr
    assert "removed 4 raw run(s)" in p.stdout
    assert list_runs(store) == [ids[3]]
    p = _cli("--store", location, "--raw-older-than", "0")
    assert p.returncode == 2 and "at least 1 day" in p.stderr


def test_prune_vacuums_the_history_table(tmp_path):
    """The same prune vacuums the history: files no version younger than the retention uses go
    (a failed fold's file, old enough); files a younger version uses stay (time travel)."""
    import os
    import time

    from hhpulse.data.history_store import TABLE_KEY, open_snapshot, read_history

    store = LocalStore(tmp_path)
    _runs(store, 3)
    fold_run(store)
    orphan = f"{TABLE_KEY}/open/000009-0badf00d.parquet"  # what a fold killed before its commit left
    store.put_bytes(orphan, b"never committed")
    old = time.time() - 40 * 86400
    os.utime(store.root / orphan, (old, old))
    young = f"{TABLE_KEY}/open/000010-0badcafe.parquet"  # an in-flight fold's: too young to go
    store.put_bytes(young, b"being committed")
    before = read_history(store)
    plan = plan_prune(store, 30, now=NOW)
    assert plan.history is not None and plan.history.files == [orphan]
    assert any(line.startswith("history: would remove 1 file(s)") for line in plan.lines(dry_run=True))
    prune(store, plan)
    assert not store.exists(orphan) and store.exists(young)
    assert all(store.exists(f"{TABLE_KEY}/{f.path}") for f in open_snapshot(store).files)
    assert read_history(store).equals(before)
    p = _cli("--store", str(tmp_path), "--raw-older-than", "30", "--history-retention-days", "0.5")
    assert p.returncode == 2 and "at least 1 day" in p.stderr
