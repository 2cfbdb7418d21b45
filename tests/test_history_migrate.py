"""A history in the hand-written layout of earlier versions (tests/data/legacy-history, made by
them) moves onto the Delta table once, by `hhpulse history --migrate` or by the first fold,
checked equal; its old files stay until `hhpulse store prune` removes them. On a folder and S3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from hhpulse.data import history_legacy
from hhpulse.data.history import build_history, load_raw_runs
from hhpulse.data.history_store import (
    TABLE_KEY,
    HistoryError,
    fold_run,
    load_state,
    migrate,
    open_snapshot,
    read_history,
    verify,
    versions,
)
from hhpulse.data.retention import plan_prune, prune
from hhpulse.data.store import LocalStore, open_store
from test_history_fold import T0, write_run

FIXTURE = Path(__file__).parent / "data" / "legacy-history"


@pytest.fixture(params=["folder", "s3"])
def legacy_store(request, tmp_path):
    if request.param == "folder":
        shutil.copytree(FIXTURE, tmp_path / "store", ignore=shutil.ignore_patterns("README.md"))
        return LocalStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    store = open_store(f"s3://{bucket}/p")
    for path in sorted(p for p in FIXTURE.rglob("*") if p.is_file() and p.name != "README.md"):
        store.put_bytes(path.relative_to(FIXTURE).as_posix(), path.read_bytes())
    return store


def _old(store) -> pd.DataFrame:
    return history_legacy.read(store, history_legacy.load_state(store))


def test_the_fixture_is_the_old_layout_with_superseded_rows(legacy_store):
    state = history_legacy.load_state(legacy_store)
    assert state["format"] == "hhpulse-history/1" and len(state["runs"]) == 7
    assert open_snapshot(legacy_store) is None
    pd.testing.assert_frame_equal(_old(legacy_store), build_history(load_raw_runs(legacy_store)))
    # read_history reads it as it is until it is moved
    pd.testing.assert_frame_equal(read_history(legacy_store), _old(legacy_store))


def test_migrate_moves_it_checked_equal_and_leaves_the_old_files(legacy_store):
    store = legacy_store
    old, old_keys = _old(store), history_legacy.keys(store)
    res = migrate(store)
    assert res.version == 0 and res.vacancies == len(old)
    pd.testing.assert_frame_equal(read_history(store), old, check_exact=True)
    state, version = load_state(store)
    old_state = history_legacy.load_state(store)
    assert version == 0 and state["runs"] == old_state["runs"] and state["counts"] == old_state["counts"]
    assert state["operation"] == "migrate" and state["migrated_from"] == "history/state.json"
    assert history_legacy.keys(store) == old_keys  # left until pruned
    assert verify(store).ok
    with pytest.raises(HistoryError, match="already holds the history"):
        migrate(store)
    # folding goes on on the table
    write_run(store, "20260310T000000Z-00000001", T0 + timedelta(days=9), [{"id": "1", "name": "n"}])
    assert fold_run(store).folded == ["20260310T000000Z-00000001"]
    pd.testing.assert_frame_equal(read_history(store), build_history(load_raw_runs(store)))


def test_the_first_fold_migrates(legacy_store):
    store = legacy_store
    write_run(store, "20260310T000000Z-00000001", T0 + timedelta(days=9), [{"id": "1", "name": "n"}])
    res = fold_run(store)
    assert res.folded == ["20260310T000000Z-00000001"] and res.version == 1
    assert [v["operation"] for v in versions(store)] == ["fold", "migrate"]
    pd.testing.assert_frame_equal(read_history(store), build_history(load_raw_runs(store)))


def test_prune_removes_the_old_files_once_the_table_holds_their_runs(legacy_store):
    store = legacy_store
    plan = plan_prune(store, 1)
    assert not plan.legacy and "still in the old layout" in plan.legacy_kept
    migrate(store)
    plan = plan_prune(store, 10_000)
    assert plan.legacy == history_legacy.keys(store) and plan.legacy_bytes > 0
    assert any("old layout" in line for line in plan.lines(dry_run=True))
    kept = read_history(store)
    prune(store, plan)
    assert history_legacy.keys(store) == []
    assert not [k for k in store.list("history/") if not k.startswith(f"{TABLE_KEY}/")]
    pd.testing.assert_frame_equal(read_history(store), kept)
    assert verify(store).ok


def test_migrate_through_the_cli(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "store", ignore=shutil.ignore_patterns("README.md"))
    store = LocalStore(tmp_path / "store")
    old = _old(store)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "hhpulse.cli", "history", *args, "--store", str(store.root)],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ.copy(),
        )

    p = cli("--migrate")
    assert p.returncode == 0 and "34 vacancies" in p.stdout and "version 0" in p.stdout, p.stderr
    pd.testing.assert_frame_equal(read_history(store), old)
    p = cli("--migrate")
    assert p.returncode == 2 and "already holds the history" in p.stderr


def test_two_first_folds_at_once_move_it_once(legacy_store):
    from conftest import run_together

    store = legacy_store
    write_run(store, "20260310T000000Z-00000001", T0 + timedelta(days=9), [{"id": "1", "name": "n"}])
    out = run_together(lambda: fold_run(store), lambda: fold_run(store))
    assert not any(isinstance(o, Exception) for o in out), out
    assert [v["operation"] for v in versions(store)][-1] == "migrate"
    assert sum(v["operation"] == "migrate" for v in versions(store)) == 1
    state, _ = load_state(store)
    assert [r["run_id"] for r in state["runs"]].count("20260310T000000Z-00000001") == 1
    pd.testing.assert_frame_equal(read_history(store), build_history(load_raw_runs(store)))
