"""The dataset: labels from history, time-ordered split per task, save/load for the pipeline."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from itertools import islice

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import LabelConfig, SplitConfig
from hhpulse.data.history import RawRun, build_history
from hhpulse.model.dataset import TASK_COLUMNS, Dataset, DatasetError, build_dataset, time_split

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RATES = {"RUR": 1.0, "USD": 0.01}


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S+0000")


def _item(i: int, published: datetime, collected: datetime, salary: int | None) -> dict:
    return {
        "id": str(1000 + i),
        "name": f"Вакансия {i}",
        "snippet": {
            "responsibility": f"Обязанности номер {i % 7} и <highlighttext>Python</highlighttext>...",
            "requirement": f"Опыт {i % 3} года",
        },
        "salary": None if salary is None else {"from": salary, "to": None, "currency": "RUR", "gross": True},
        "published_at": _iso(published),
        "created_at": _iso(published),
        "archived": False,
        "collected_at": _iso(collected),
    }


def _run(run_id: str, collected: datetime, items: list[dict]) -> RawRun:
    meta = {
        "collected_at": _iso(collected),
        "complete": True,
        "coverage": {"complete": True, "queries": ["python"], "area": "1", "truncated": False},
        "currency_rates": RATES,
    }
    return RawRun(run_id, meta, items)


def _two_runs() -> pd.DataFrame:
    """40 vacancies published after an empty run on day -10 and seen on day 0; on day 30 a
    complete run sees only the even ones."""
    day = timedelta(days=1)
    salaries = [60_000, 120_000, 170_000, 250_000, None]
    first = [_item(i, T0 - (i % 5) * day, T0, salaries[i % 5]) for i in range(40)]
    second = [_item(i, T0 - (i % 5) * day, T0 + 30 * day, salaries[i % 5]) for i in range(0, 40, 2)]
    return build_history(
        [
            _run("20251222T000000Z-00000000", T0 - 10 * day, []),
            _run("20260101T000000Z-aaaaaaaa", T0, first),
            _run("20260131T000000Z-bbbbbbbb", T0 + 30 * day, second),
        ]
    )


# -- time_split ----------------------------------------------------------------------------
def test_time_split_puts_the_newest_last():
    t = pd.date_range("2026-01-01", periods=20, freq="D", tz="UTC")
    df = pd.DataFrame({"collected_at": t[::-1], "published_at": t[::-1]})
    s = time_split(df, SplitConfig(val_fraction=0.2, test_fraction=0.2))
    assert len(s.train) == 12 and len(s.val) == 4 and len(s.test) == 4
    assert df["collected_at"].iloc[s.train].max() < df["collected_at"].iloc[s.val].min()
    assert df["collected_at"].iloc[s.val].max() < df["collected_at"].iloc[s.test].min()
    assert s.boundaries["method"] == "time (collected_at, then published_at)" and s.boundaries["sizes"] == {
        "train": 12,
        "val": 4,
        "test": 4,
    }
    assert s.boundaries["test_collected_at"] == [str(t[16]), str(t[19])]


def test_time_split_breaks_ties_on_published_at():
    pub = pd.date_range("2026-01-01", periods=10, freq="h", tz="UTC")
    df = pd.DataFrame({"collected_at": [pub[-1]] * 10, "published_at": pub[::-1]})  # one dump
    s = time_split(df, SplitConfig(val_fraction=0.2, test_fraction=0.2))
    assert df["published_at"].iloc[s.test].min() > df["published_at"].iloc[s.train].max()


def test_proxy_demand_split_does_not_follow_published_at():
    # the age proxy is collected_at - published_at: ordering a dump by published_at would
    # make the test set the youngest vacancies, all one cohort
    pub = pd.date_range("2026-01-01", periods=60, freq="h", tz="UTC")
    df = pd.DataFrame(
        {"id": [str(i) for i in range(60)], "collected_at": [pub[-1]] * 60, "published_at": pub}
    )
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.2)
    s = time_split(df, cfg, then_by="id_hash")
    assert s.boundaries["method"] == "time (collected_at, then id_hash)"
    test_pub = df["published_at"].iloc[s.test]
    assert test_pub.min() < df["published_at"].iloc[s.train].max()  # interleaved, not the newest block
    assert np.array_equal(s.test, time_split(df, cfg, then_by="id_hash").test)  # and fixed


def test_random_split_is_seeded_and_complete():
    t = pd.date_range("2026-01-01", periods=50, freq="D", tz="UTC")
    df = pd.DataFrame({"collected_at": t, "published_at": t})
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.2, random=True, seed=7)
    a, b = time_split(df, cfg), time_split(df, cfg)
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(50))
    assert np.array_equal(a.test, b.test) and a.boundaries["method"] == "random"
    assert not np.array_equal(a.test, np.arange(40, 50))


def test_time_split_needs_three_rows():
    t = pd.date_range("2026-01-01", periods=2, freq="D", tz="UTC")
    with pytest.raises(DatasetError, match="at least 3"):
        time_split(pd.DataFrame({"collected_at": t, "published_at": t}), SplitConfig())


# -- build_dataset -------------------------------------------------------------------------
def test_build_dataset_from_a_real_two_run_history():
    hist = _two_runs()
    runs = {r: RATES for r in hist["last_run_id"].unique()}
    ds = build_dataset(
        hist, runs, LabelConfig(min_closed=1), SplitConfig(val_fraction=0.2, test_fraction=0.2)
    )
    sal, dem = ds.tasks["salary"], ds.tasks["demand"]
    # salary: 4 of every 5 vacancies state one; hidden salaries get no label
    assert len(sal.frame) == 32 and set(sal.frame["label"]) == set(LabelConfig().salary_cohorts)
    assert sal.classes == list(LabelConfig().salary_cohorts)
    assert set(TASK_COLUMNS) <= set(sal.frame.columns) and "salary_rub" in sal.frame
    # demand: the odd ones closed between day 0 and day 30 (closed_at = day 15, so lifetime 15..19
    # days: medium); the even ones are open and at least 30 days old: censored low
    assert ds.summary["demand_proxy"] is False
    assert ds.summary["demand_sources"] == {"closed": 20, "censored_low": 20}
    by_id = dem.frame.set_index("id")["label"]
    assert set(by_id[[str(1000 + i) for i in range(1, 40, 2)]]) == {"medium"}
    assert set(by_id[[str(1000 + i) for i in range(0, 40, 2)]]) == {"low"}
    # every row in exactly one part, the newest in test
    for td in (sal, dem):
        assert td.frame["part"].value_counts().to_dict() == {
            "train": len(td.frame) - 2 * round(0.2 * len(td.frame)),
            "val": round(0.2 * len(td.frame)),
            "test": round(0.2 * len(td.frame)),
        }
    # salary: by first sighting (all on day 0 here), then first publication
    assert sal.boundaries["method"] == "time (first seen, then first published)"
    assert sal.part("train")["published_at"].max() <= sal.part("test")["published_at"].min()
    # demand: by the vacancy's start (publication), every row settled 20+ days before day 30
    start = dem.frame["demand_start"]
    assert start[dem.frame["part"] == "train"].max() <= start[dem.frame["part"] == "test"].min()
    assert dem.boundaries["method"] == "time (demand start: publication), settled rows only"
    assert dem.boundaries["missing_test_cohorts"] == [] and dem.boundaries["missing_cohorts"] == ["high"]
    # a close seen between day 0 and day 30 spans 0..34 days: it straddles both edges
    assert dem.frame.loc[dem.frame["label"] == "medium", "demand_uncertain"].all()
    assert ds.summary["demand_resolution"]["uncertain"] == 20
    assert ds.summary["runs"] == sorted(runs)


def test_rows_without_text_are_left_out():
    hist = _two_runs()
    hist.loc[hist["id"] == "1001", "responsibility"] = "  "
    hist.loc[hist["id"] == "1002", "responsibility"] = None
    ds = build_dataset(hist, {}, LabelConfig(min_closed=1))
    assert not {"1001", "1002"} & set(ds.tasks["salary"].frame["id"])
    assert not {"1001", "1002"} & set(ds.tasks["demand"].frame["id"])


def test_too_few_labels_is_an_exact_error():
    hist = _two_runs()
    hist["salary_from"] = np.nan
    with pytest.raises(DatasetError, match=r"only 0 rows have text and a salary label.*no_salary"):
        build_dataset(hist, {}, LabelConfig(min_closed=1))


def test_save_load_round_trip(tmp_path):
    hist = _two_runs()
    ds = build_dataset(hist, {}, LabelConfig(min_closed=1))
    ds.save(tmp_path / "ds")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "dataset.json",
        "demand.parquet",
        "salary.parquet",
    ]
    back = Dataset.load(tmp_path / "ds")
    assert back.summary["demand_sources"] == ds.summary["demand_sources"]
    for task, td in ds.tasks.items():
        pd.testing.assert_frame_equal(back.tasks[task].frame, td.frame)
        assert back.tasks[task].classes == td.classes
        assert back.tasks[task].boundaries == json.loads(json.dumps(td.boundaries, default=str))
        assert len(back.tasks[task].part("test")) == len(td.part("test"))


def test_load_reports_a_missing_or_broken_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a saved dataset"):
        Dataset.load(tmp_path)
    ds = build_dataset(_two_runs(), {}, LabelConfig(min_closed=1))
    ds.save(tmp_path)
    (tmp_path / "demand.parquet").unlink()
    with pytest.raises(DatasetError, match="demand.parquet"):
        Dataset.load(tmp_path)


@pytest.mark.shared_data
def test_real_dump_gives_both_tasks_with_the_proxy_flagged(shared_hh):
    """A single real dump: salary labels in every band, demand only through the flagged age proxy."""
    with gzip.open(shared_hh / "vacancies_dev.api.jsonl.gz", "rt", encoding="utf-8") as fh:
        items = [json.loads(line) for line in islice(fh, 6000)]
    doc = json.loads((shared_hh / "api_samples" / "dictionaries_2024-12.json").read_text(encoding="utf-8"))
    rates = {c["code"]: float(c["rate"]) for c in doc["currency"]}
    hist = build_history([RawRun("20260101T000000Z-00000000", {}, items)])
    ds = build_dataset(hist, {"20260101T000000Z-00000000": rates})
    s = ds.summary
    assert set(s["salary_counts"]) == set(LabelConfig().salary_cohorts)
    assert s["salary_left_out"]["no_salary"] > 0
    assert s["demand_proxy"] is True and set(s["demand_sources"]) == {"proxy_age"}
    sal = ds.tasks["salary"]
    assert sal.frame["salary_rub"].between(10_000, 3_000_000).all()
    test_start = pd.Timestamp(sal.boundaries["test_collected_at"][0])
    assert (sal.part("train")["collected_at"] <= test_start).all()
    # the proxy is age at collection: its test set must not be just the youngest vacancies
    dem = ds.tasks["demand"]
    assert dem.boundaries["method"] == "time (collected_at, then id_hash)"
    assert dem.part("test")["label"].nunique() == len(LabelConfig().demand_cohorts)


# -- the demand split: time and resolution -------------------------------------------------
def _demand_rows(days_and_labels, *, step_hours=0):
    t = pd.Timestamp("2026-03-01", tz="UTC")
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(len(days_and_labels))],
            "demand_start": [
                t + pd.Timedelta(days=d, hours=step_hours * i) for i, (d, _) in enumerate(days_and_labels)
            ],
            "label": [lab for _, lab in days_and_labels],
        }
    )


def test_demand_split_tests_on_the_newest_settled_rows_with_every_cohort():
    from hhpulse.model.dataset import demand_split

    # 60 days observed; vacancies of days 0..39 are settled, and hold every cohort; the
    # newest rows (days 41..60) are labelled only when they closed fast: all high/medium.
    # A split on "the newest labelled rows" would test on high and medium only.
    rows = [(d, ("high", "medium", "low")[d % 3]) for d in range(40)]
    rows += [(d, ("high", "medium")[d % 2]) for d in range(41, 61)]
    df = _demand_rows(rows)
    until = pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(days=60)
    split, pending = demand_split(
        df, SplitConfig(val_fraction=0.2, test_fraction=0.2), observed_until=until, low_days=20
    )
    assert set(df["label"].iloc[split.test]) == {"high", "medium", "low"}
    assert sorted(pending.tolist()) == list(range(40, 60))  # too young to test on without bias
    starts = df["demand_start"]
    assert starts.iloc[split.train].max() < starts.iloc[split.test].min()
    assert starts.iloc[split.val].max() < starts.iloc[split.test].min()
    assert len(split.test) == 8 and len(split.val) == 8 and len(split.train) == 24


def test_demand_split_fails_over_when_the_newest_rows_are_all_censored():
    from hhpulse.model.dataset import demand_split

    # early in a schedule: the only settled rows are old, censored low; fast closes are new.
    # The settled window lacks high and medium, so each cohort's newest rows are tested on.
    rows = [(d, "low") for d in range(10)] + [(d, ("high", "medium")[d % 2]) for d in range(30, 40)]
    df = _demand_rows(rows)
    until = pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(days=40)
    split, pending = demand_split(
        df, SplitConfig(val_fraction=0.2, test_fraction=0.2), observed_until=until, low_days=20
    )
    assert set(df["label"].iloc[split.test]) == {"high", "medium", "low"}
    assert len(pending) == 0 and split.boundaries["method"].startswith("time per cohort")
    for cohort in ("high", "medium", "low"):
        mine = df["label"] == cohort
        test = np.zeros(len(df), dtype=bool)
        test[split.test] = True
        assert df.loc[mine & ~test, "demand_start"].max() < df.loc[mine & test, "demand_start"].min()


def test_a_time_split_of_all_censored_newest_rows_would_miss_cohorts():
    # the failure the demand split exists for: order by collection time, and the newest rows
    # are the ones still open (censored low), so a plain time split tests on one cohort
    t = pd.date_range("2026-03-01", periods=30, freq="D", tz="UTC")
    df = pd.DataFrame(
        {
            "collected_at": list(t[:20]) + [t[-1]] * 10,
            "published_at": t,
            "label": ["high", "medium"] * 10 + ["low"] * 10,
        }
    )
    s = time_split(df, SplitConfig(val_fraction=0.2, test_fraction=0.2))
    assert set(df["label"].iloc[s.test]) == {"low"}


def test_missing_test_cohort_is_recorded_and_logged(caplog):
    hist = _two_runs()
    ds = build_dataset(hist, {}, LabelConfig(min_closed=1), SplitConfig(val_fraction=0.2, test_fraction=0.2))
    mix = ds.tasks["demand"].boundaries["cohorts"]
    assert mix["test"]["high"] == 0 and "high" in ds.tasks["demand"].boundaries["missing_cohorts"]
    assert "labels hold no high" in caplog.text


def test_salary_test_set_holds_no_vacancy_yesterdays_champion_trained_on():
    # a vacancy still open is re-collected every day (and may be re-published): a split on its
    # latest sighting moved it into the newest rows, so the gate scored the champion on rows it
    # was trained on. By first sighting, the new test set holds only yesterday's newest and today's
    day = timedelta(days=1)
    old = [_item(i, T0 - (40 - i) * day, T0, 100_000 + 1000 * i) for i in range(40)]
    again = [_item(i, T0 + day, T0 + day, 100_000 + 1000 * i) for i in range(0, 40, 2)]  # re-published
    new = [_item(100 + i, T0 + day - i * pd.Timedelta(hours=1), T0 + day, 150_000) for i in range(10)]
    runs = [_run("r1", T0, old), _run("r2", T0 + day, again + new)]
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.2)
    yesterday = build_dataset(build_history(runs[:1]), {"r1": RATES}, LabelConfig(min_closed=1), cfg)
    today = build_dataset(build_history(runs), {"r1": RATES, "r2": RATES}, LabelConfig(min_closed=1), cfg)
    trained = set(yesterday.tasks["salary"].part("train")["id"])
    tested = set(today.tasks["salary"].part("test")["id"])
    assert tested and not (tested & trained)
