"""Time travel for training: a model's card and metrics.json name the history version it was
trained on, and `hhpulse train --as-of VERSION` gives exactly the same training set (the same ids,
the same labels) after the history has moved on. Also: a column added to the records is added to
the table (schema evolution)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hhpulse.data.collect import collect
from hhpulse.data.history_store import fold_run, open_snapshot, read_history
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore
from hhpulse.flows.workflow import load_data
from hhpulse.model.dataset import build_dataset

CANDIDATES = {
    "candidates": [
        {"name": "salary-lr", "task": "salary", "kind": "logreg", "params": {"C": 4.0}},
        {"name": "demand-lr", "task": "demand", "kind": "logreg", "params": {"C": 1.0}},
    ]
}


def _day(store):
    res = collect(make_source("demo", demo_size=60, demo_transport="in-process"), store, progress=False)
    return fold_run(store, res.run_id)


def _dataset(store, version=None):
    data = load_data(str(store.root), window_days=180, version=version)
    return data, build_dataset(data.history, data.rates_by_run)


def _same(a, b):
    assert set(a.tasks) == set(b.tasks)
    for task in a.tasks:
        pd.testing.assert_frame_equal(a.tasks[task].frame, b.tasks[task].frame, check_exact=True)


def _train(store, out, tmp_path, *extra):
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps(CANDIDATES))
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "train", "--data", str(store.root), "--out", str(out)]
        + ["--candidates", str(cands), "--window-days", "180", "--no-refit", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    return p


def test_a_models_training_set_is_rebuilt_from_its_card(tmp_path):
    store = LocalStore(tmp_path / "store")
    for _ in range(3):
        _day(store)
    version = open_snapshot(store).version
    data, then = _dataset(store)
    assert data.window["version"] == version
    first = tmp_path / "first"
    _train(store, first, tmp_path)
    metrics = json.loads((first / "metrics.json").read_text())
    card = (first / "model_card.md").read_text()
    assert (
        metrics["history"]["version"] == version
        and metrics["dataset"]["history_window"]["version"] == version
    )
    assert f"- history version: {version} of " in card and f"--as-of {version} --window-days 180" in card

    for _ in range(2):  # the history moves on
        _day(store)
    _, now = _dataset(store)
    with pytest.raises(AssertionError):
        _same(now, then)  # (the test can fail: today's training set is another)
    data_again, again = _dataset(store, version)
    _same(again, then)
    assert data_again.rates_by_run == data.rates_by_run and data_again.window == data.window

    second = tmp_path / "second"
    p = _train(store, second, tmp_path, "--as-of", str(version))
    assert f"table version {version}" in p.stdout
    metrics2 = json.loads((second / "metrics.json").read_text())
    assert metrics2["history"] == metrics["history"]
    assert metrics2["dataset"]["salary_counts"] == metrics["dataset"]["salary_counts"]
    assert metrics2["dataset"]["demand_counts"] == metrics["dataset"]["demand_counts"]
    ids1, ids2 = np.load(first / "training_ids.npz"), np.load(second / "training_ids.npz")
    assert sorted(ids1.files) == sorted(ids2.files)
    for key in ids1.files:
        assert np.array_equal(np.sort(ids1[key]), np.sort(ids2[key]))


def test_as_of_a_version_that_is_not_there_is_one_line(tmp_path):
    store = LocalStore(tmp_path / "store")
    _day(store)
    for args, why in ((["--as-of", "7"], "no version 7"), (["--as-of", "-1"], "--as-of must be")):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "hhpulse.cli",
                "train",
                "--data",
                str(store.root),
                "--out",
                str(tmp_path / "x"),
            ]
            + args,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 2 and why in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_new_record_column_is_added_to_the_table(tmp_path, monkeypatch):
    """What a field added to hhpulse.hh.records gives: the next fold adds the column to the table;
    rows written before read it as null, rows of the new run have it."""
    import hhpulse.data.history as h
    import hhpulse.data.history_store as hs

    store = LocalStore(tmp_path / "store")
    _day(store)
    before = read_history(store)
    cols = (*h.HISTORY_COLUMNS[:-2], "key_skills", *h.HISTORY_COLUMNS[-2:])
    stored = (*cols, *h.FOLD_COLUMNS)
    monkeypatch.setattr(hs, "RECORD_COLUMNS", (*hs.RECORD_COLUMNS, "key_skills"))
    for mod in (h, hs):
        monkeypatch.setattr(mod, "HISTORY_COLUMNS", cols)
        monkeypatch.setattr(mod, "STORED_COLUMNS", stored)
    real_frame = hs.run_frame

    def with_skills(*args, **kwargs):
        df = real_frame(*args, **kwargs)
        return df.assign(key_skills="python|sql")

    monkeypatch.setattr(hs, "run_frame", with_skills)
    res = _day(store)
    snap = open_snapshot(store)
    assert "key_skills" in [f.name for f in snap.table.schema().fields]
    got = snap.table.to_pyarrow_table().to_pandas()
    fresh = got["last_run_id"] == res.newest_run
    assert (got.loc[fresh, "key_skills"] == "python|sql").all()
    old_only = ~got["id"].isin(got.loc[fresh, "id"])
    assert old_only.any() and got.loc[old_only, "key_skills"].isna().all()
    monkeypatch.undo()
    assert set(before["id"]) <= set(read_history(store)["id"])  # and today's reader still reads it
