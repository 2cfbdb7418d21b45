"""Vacancy history: sightings fold into one row per vacancy, and closes are inferred soundly."""

from __future__ import annotations

import pandas as pd

from hhpulse.data.collect import collect
from hhpulse.data.history import HISTORY_COLUMNS, RawRun, build_history
from hhpulse.data.history_store import read_history, rebuild_history
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore
from hhpulse.hh.market import Market


def _item(vid, published, **kw):
    return {"id": vid, "name": "n", "published_at": published, "snippet": {"responsibility": "r"}, **kw}


def _run(run_id, when, items, *, queries=("python",), area="1", complete=True, quarantined=()):
    meta = {
        "collected_at": when,
        "complete": complete,
        "coverage": {"queries": list(queries), "area": area, "complete": complete, "truncated": []},
    }
    return RawRun(run_id, meta, items, set(quarantined))


def test_folds_sightings_and_infers_closes():
    runs = [
        _run(
            "r1",
            "2026-03-01T12:00:00Z",
            [_item("1", "2026-02-20T10:00:00+0300"), _item("2", "2026-02-25T00:00:00+0300")],
        ),
        _run("r2", "2026-03-08T12:00:00Z", [_item("1", "2026-03-06T10:00:00+0300", name="renamed")]),
        _run("r3", "2026-03-15T12:00:00Z", [_item("1", "2026-03-06T10:00:00+0300", archived=True)]),
    ]
    h = build_history(runs).set_index("id")
    assert list(build_history(runs).columns) == list(HISTORY_COLUMNS)
    one, two = h.loc["1"], h.loc["2"]
    assert one["times_seen"] == 3 and one["name"] == "n"  # latest sighting's fields
    assert one["first_published_at"] == pd.Timestamp("2026-02-20T07:00:00Z")
    assert one["latest_published_at"] == pd.Timestamp("2026-03-06T07:00:00Z")
    # archived at r3, open at r2: closed in between, at the midpoint
    assert one["closed_reason"] == "archived" and one["closed_at"] == pd.Timestamp("2026-03-12T00:00:00Z")
    assert one["closed_after"] == pd.Timestamp("2026-03-08T12:00:00Z")
    assert one["closed_by"] == pd.Timestamp("2026-03-15T12:00:00Z")
    # both were there when observation began: their start is not observed
    assert pd.isna(one["observed_since"]) and pd.isna(two["observed_since"])
    # 2 vanished from r2, which covered r1's search: closed between the two runs
    assert two["closed_reason"] == "absent_from_complete_run"
    assert two["closed_after"] == pd.Timestamp("2026-03-01T12:00:00Z")
    assert two["closed_by"] == pd.Timestamp("2026-03-08T12:00:00Z")
    assert two["closed_at"] == pd.Timestamp("2026-03-05T00:00:00Z")


def test_runs_fold_in_collection_order_not_id_order():
    # two runs started within the same second: their ids do not sort by time
    early = _run(
        "20260301T120000Z-ffffffff", "2026-03-01T12:00:00Z", [_item("1", "2026-02-20T10:00:00+0300")]
    )
    late = _run("20260301T120000Z-00000000", "2026-03-08T12:00:00Z", [_item("2", "2026-03-06T10:00:00+0300")])
    h = build_history([early, late]).set_index("id")
    assert h.loc["1", "closed_reason"] == "absent_from_complete_run"
    assert pd.isna(h.loc["2", "closed_reason"])
    assert h.loc["2", "last_run_id"] == late.run_id


def test_no_close_without_complete_coverage():
    base = _run("r1", "2026-03-01T12:00:00Z", [_item("1", "2026-02-20T10:00:00+0300")])
    for later in [
        _run("r2", "2026-03-08T12:00:00Z", [], complete=False),  # stopped early (captcha)
        _run("r2", "2026-03-08T12:00:00Z", [], queries=("java",)),  # another search
        _run("r2", "2026-03-08T12:00:00Z", [], area="2"),  # another area
    ]:
        assert build_history([base, later])["closed_at"].isna().all()
    dump = _run(
        "r1", "2026-03-01T12:00:00Z", [_item("1", "2026-02-20T10:00:00+0300")], queries=(), complete=False
    )
    assert (
        build_history([dump, _run("r2", "2026-03-08T12:00:00Z", [], queries=("",), area=None)])["closed_at"]
        .isna()
        .all()
    )


def test_quarantined_and_unparseable_rows_are_left_out():
    run = _run(
        "r1",
        "2026-03-01T12:00:00Z",
        [
            _item("1", "x-bad-date"),
            _item("2", "2026-02-20T10:00:00+0300"),
            _item("3", "2026-02-20T10:00:00+0300"),
        ],
        quarantined={"3"},
    )
    assert build_history([run])["id"].tolist() == ["2"]


def test_demo_runs_track_the_market(tmp_path):
    store = LocalStore(tmp_path)
    for _ in range(2):
        collect(make_source("demo", demo_size=30), store)
    h = rebuild_history(store)
    market = Market(daily_new=30)
    open_day_61 = {v.id for v in market.snapshot(61)}  # one day per run
    closed = h[h["closed_reason"] == "absent_from_complete_run"]
    assert len(closed) > 0 and not (set(closed["id"]) & open_day_61)
    assert set(h.loc[h["closed_at"].isna(), "id"]) == open_day_61
    assert read_history(store).equals(h)
    assert not store.exists("history/vacancies.parquet")  # folded now: state, open and settled files


def test_counts_of_runs_read_as_english():
    """`1 runs folded`, `the 1 raw runs`."""
    from hhpulse.data.history_store import VerifyResult, describe_window

    one = VerifyResult(ok=True, stored_rows=5, rebuilt_rows=5, runs=1, differences=[])
    assert "a rebuild from the one raw run (5 vacancies" in one.message()
    bad = VerifyResult(ok=False, stored_rows=5, rebuilt_rows=4, runs=3, differences=["x"])
    assert "a rebuild from the 3 raw runs:" in bad.message()
    assert describe_window({"window_days": None, "runs_folded": 1}) == "all of history (1 run folded)"
    assert describe_window({"window_days": None, "runs_folded": 2}) == "all of history (2 runs folded)"
