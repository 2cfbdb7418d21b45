"""Demand over recurring runs: the daily demo cadence, the market's oracle, the gate that
counts demand once it is measurable, and ``hhpulse replay`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import LabelConfig
from hhpulse.data.collect import collect
from hhpulse.data.history import load_raw_runs
from hhpulse.data.history_store import rebuild_history
from hhpulse.data.sources import DEMO_START_DAY, make_source
from hhpulse.data.store import LocalStore
from hhpulse.flows.workflow import champion_measured, compare
from hhpulse.hh.market import Market
from hhpulse.model.labels import resolve_demand

LOGREG_ONLY = """candidates:
  - {name: salary-lr, task: salary, kind: logreg, params: {C: 1.0}}
  - {name: demand-lr, task: demand, kind: logreg, params: {C: 1.0}}
"""


# -- cadence and the oracle ----------------------------------------------------------------
def test_the_demo_moves_one_day_per_run_by_default_and_a_longer_step_is_an_option(tmp_path):
    store = LocalStore(tmp_path / "daily")
    days = [collect(make_source("demo", demo_size=10), store).meta["source"]["day"] for _ in range(2)]
    assert days == [DEMO_START_DAY, DEMO_START_DAY + 1]
    weekly = LocalStore(tmp_path / "weekly")
    days = [
        collect(make_source("demo", demo_size=10, demo_step_days=7), weekly).meta["source"]["day"]
        for _ in range(2)
    ]
    assert days == [DEMO_START_DAY, DEMO_START_DAY + 7]


def test_the_oracle_is_the_markets_own_lifetime_law():
    m = Market(daily_new=200)
    vs = [v for d in range(20) for v in m._opened_on(d)]
    proba = np.array([m.cohort_probabilities(v.id, (10, 20)) for v in vs])
    assert np.allclose(proba.sum(axis=1), 1.0)
    life = np.array([m.true_lifetime_days(v.id) for v in vs])
    observed = [(life < 10).mean(), ((life >= 10) & (life < 20)).mean(), (life >= 20).mean()]
    assert np.allclose(proba.mean(axis=0), observed, atol=0.03)
    # couriers close fast, lead data scientists slowly
    fast = next(v for v in vs if v.role.key == "courier" and v.seniority.key == "intern")
    slow = next(v for v in vs if v.role.key == "data" and v.seniority.key == "lead")
    assert m.cohort_probabilities(fast.id, (10, 20))[0] > 0.9 > m.cohort_probabilities(slow.id, (10, 20))[2]
    assert m.cohort_probabilities("not-an-id", (10, 20)) is None


# -- the gate counts demand once it is measurable ------------------------------------------
CHAMP = {"salary": {"roc_auc_ovo": 0.80}, "demand": {"roc_auc_ovo": 0.70}}


def test_gate_compares_both_tasks_when_demand_is_measurable():
    v = compare({"salary": {"roc_auc_ovo": 0.81}, "demand": {"roc_auc_ovo": 0.66}}, CHAMP)
    assert not v["challenger_wins"]  # +0.01 salary, -0.04 demand: demand counts
    assert {t: d["status"] for t, d in v["tasks"].items()} == {"salary": "compared", "demand": "compared"}
    assert v["tasks"]["demand"]["delta"] == pytest.approx(-0.04)
    assert "demand compared: roc_auc_ovo 0.7000 -> 0.6600 (-0.0400)" in v["reason"]


def test_gate_refuses_to_replace_a_champion_measured_on_a_task_it_cannot_measure_now():
    one_cohort = {"roc_auc_ovo": None, "notes": ["AUC undefined: fewer than two classes in y_true"]}
    chal = {"salary": {"roc_auc_ovo": 0.90}, "demand": one_cohort}
    champ = {"salary": {"roc_auc_ovo": 0.80}, "demand": dict(one_cohort)}  # the same new test set
    v = compare(chal, champ, champion_was_measured={"salary": True, "demand": True})
    assert not v["challenger_wins"] and v["tasks"]["demand"]["status"] == "blocks"
    assert v["reason"].startswith("champion stays: demand blocks the replacement")
    assert "fewer than two classes" in v["tasks"]["demand"]["reason"]
    # a champion never measured on demand (e.g. one cohort then too): demand is left out, said so
    v = compare(chal, champ, champion_was_measured={"salary": True, "demand": False})
    assert v["challenger_wins"] and v["tasks"]["demand"]["status"] == "excluded"
    assert v["deltas"] == {"salary": pytest.approx(0.10)} and "demand excluded: left out" in v["reason"]


def test_gate_takes_more_checks_per_task():
    def calibration(task, mine, theirs):
        if task != "demand":
            return None
        return {"name": "ece", "passed": False, "blocks": True, "detail": "ECE 0.30 > 0.10"}

    v = compare({"salary": {"roc_auc_ovo": 0.9}, "demand": {"roc_auc_ovo": 0.9}}, CHAMP, checks=[calibration])
    assert not v["challenger_wins"] and v["tasks"]["demand"]["status"] == "blocks"
    assert [c["name"] for c in v["tasks"]["demand"]["checks"]] == ["roc_auc_ovo", "ece"]
    assert [c["name"] for c in v["tasks"]["salary"]["checks"]] == ["roc_auc_ovo"]


def test_champion_measured_reads_a_bundles_metrics():
    doc = {
        "salary": {"winner": "a", "candidates": {"a": {"metrics": {"test": {"roc_auc_ovo": 0.8}}}}},
        "demand": {"winner": "b", "candidates": {"b": {"metrics": {"test": {"roc_auc_ovo": None}}}}},
        "dataset": {"rows": 3},
    }
    assert champion_measured(doc) == {"salary": True, "demand": False}


# -- hhpulse replay ------------------------------------------------------------------------
# 10 replayed days with a challenger, three gate rules and a refit per adopted champion each
# day: about a minute of CPU, which a loaded 2-core machine stretches past the default timeout
REPLAY_TIMEOUT = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """10 daily demo runs through the real CLI, kept in a store."""
    root = tmp_path_factory.mktemp("replay")
    cands = root / "candidates.yaml"
    cands.write_text(LOGREG_ONLY, encoding="utf-8")
    store = root / "store"
    env = {**os.environ, "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "replay", "--days", "10", "--demo-size", "40"]
        + ["--candidates", str(cands), "--gate-candidates", str(cands), "--out", str(store), "--json"],
        capture_output=True,
        text=True,
        timeout=1100,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout), store, cands


@REPLAY_TIMEOUT
def test_replay_measures_both_tasks_and_the_oracle(replayed):
    report, _, _ = replayed
    assert report["source"] == "demo" and report["days"] == 10 and report["runs"] == 10
    for task in ("salary", "demand"):
        assert report[task]["test_auc"] is not None, report[task]
        assert sum(report[task]["test_mix"].values()) == report[task]["test_rows"] > 0
        assert report[task]["missing_test_cohorts"] == []
    dem = report["demand"]
    assert dem["proxy"] is False and set(dem["label_sources"]) <= {"closed", "censored_low"}
    assert 0.5 < dem["oracle_auc"] <= 1.0 and dem["ratio_to_oracle"] == pytest.approx(
        dem["test_auc"] / dem["oracle_auc"]
    )
    # every cohort the labels hold is in the test set; after 10 days nothing has closed
    # between 10 and 20 days after an observed start, so medium is absent, and said so
    held = [c for c in ("high", "medium", "low") if c not in dem["missing_cohorts"]]
    assert all(dem["test_mix"][c] > 0 for c in held) and len(held) >= 2
    assert dem["label_accuracy"]["censored_low"] == 1.0 and dem["label_accuracy"]["closed"] >= 0.95
    assert report["seconds"] > 0 and "collect" in report["seconds_by_step"]


@REPLAY_TIMEOUT
def test_replay_labels_follow_the_resolution_rules(replayed):
    _, store_dir, _ = replayed
    store = LocalStore(store_dir)
    hist = rebuild_history(store)
    market = Market(daily_new=40)
    dem = resolve_demand(hist, LabelConfig())
    last = hist["last_seen"].max()
    young_open = hist["closed_at"].isna() & ((last - dem["demand_start"]) < pd.Timedelta(days=20))
    assert young_open.any() and dem.loc[young_open, "demand_cohort"].isna().all()  # never counted as low
    assert (dem.loc[young_open, "demand_status"] == "open_young").all()
    first_run = hist["observed_since"].isna()  # seen by the first run: start not observed
    labelled = dem["demand_cohort"].notna()
    assert (dem.loc[first_run & labelled, "demand_cohort"] == "low").all()
    # resolved labels of observed starts agree with the market's truth within the close-time bounds
    exact = labelled & dem["demand_start_known"] & (dem["demand_source"] == "closed")
    assert exact.sum() > 10
    truth = np.array([market.true_lifetime_days(i) for i in hist.loc[exact, "id"]])
    lo, hi = dem.loc[exact, "lifetime_min_days"].to_numpy(), dem.loc[exact, "lifetime_max_days"].to_numpy()
    assert ((truth >= lo - 1e-6) & (truth <= hi + 1e-6)).all()
    assert (hi - lo <= 1.0 + 1e-6).all()  # a daily cadence knows each close to a day


@REPLAY_TIMEOUT
def test_replay_of_stored_runs_shows_labels_day_by_day(replayed):
    from hhpulse.config import load_candidates
    from hhpulse.flows.replay import ReplaySettings, replay_store

    _, store_dir, cands = replayed
    store = LocalStore(store_dir)
    report = replay_store(store, settings=ReplaySettings(candidates=load_candidates(cands)))
    assert report["source"] == "store" and report["runs"] == len(load_raw_runs(store)) == 10
    days = report["timeline"]
    # one run: nothing has closed yet; only vacancies already open 20+ days are resolved (low)
    assert len(days) == 10 and "closed" not in days[0]["sources"] and set(days[0]["cohorts"]) == {"low"}
    assert days[-1]["sources"]["closed"] > 0
    assert sum(days[-1]["cohorts"].values()) == sum(report["demand"]["label_sources"].values())
    assert "oracle_auc" in report["demand"]  # demo runs in a store still have their market


@REPLAY_TIMEOUT
def test_replay_live_logs_and_scores_each_days_new_vacancies(replayed):
    """The live hook: the champion serving each day (the daily gate's, under the new rule)
    predicted that day's new vacancies, logged as the sink logs them; the summary scores them
    against the labels the final history resolved, which this test works out again from the store
    on its own."""
    from hhpulse.watch.monitor import live_demand, resolved_demand
    from hhpulse.watch.served import read_served

    report, store_dir, _ = replayed
    live = report["live"]
    assert live["days"] == 10 and live["champion"] == "the gate hook's" and "stand_in" not in live
    store = LocalStore(store_dir)
    records = list(read_served(store))
    assert len(records) == live["served"] > 0 and all(r["id"] for r in records)
    runs = sorted(load_raw_runs(store), key=lambda r: r.meta["collected_at"])
    first_ids = {str(i["id"]) for i in runs[0].items}
    assert not first_ids & {r["id"] for r in records}  # the first run's market is not "new"
    # each record was served by a champion the gate left in place under the new rule
    served_by = {d["champions"]["live"] for d in report["gate"]["days"] if d.get("champions")}
    assert {r["model_version"] for r in records} <= served_by
    by_day = [d for d in live["days_detail"] if d["served"]]
    assert all(d["model_version"] in served_by for d in by_day)
    again = live_demand(records, resolved_demand(rebuild_history(store)))
    dem = live["demand"]
    assert dem["n"] == again["n"] > 0 and dem["auc"] == again["auc"]
    assert dem["auc_pooled"] == again["auc_pooled"] and dem["stratified_by"] == "model_version"
    assert dem["first"] <= dem["last"] and set(dem) >= {"auc", "n", "first", "last", "by_version", "by_week"}
    # the oracle on the same rows, stratified the same way; each champion's offline figure by its live one
    assert dem["oracle_rows"] == dem["n"] and set(dem["by_version"]) == {
        c["version"] for c in live["champions"]
    }
    assert all("oracle_auc" in v for v in dem["by_version"].values())
    assert all(
        c["offline_auc"] is not None and c["live_n"] == dem["by_version"][c["version"]]["n"]
        for c in live["champions"]
    )
    assert sum(w["n"] for w in dem["by_week"]) == dem["n"]
    # the gate's summary scores the same served rows of its live rule the same way
    assert (
        report["gate"]["live"]["live"]["n"] == dem["n"]
        and report["gate"]["live"]["live"]["auc"] == dem["auc"]
    )


@REPLAY_TIMEOUT
def test_replay_live_serves_the_gate_hooks_champion(replayed, tmp_path, demo_store):
    """With a gate hook before it, the live hook serves day.shared["champion"] and trains nothing."""
    import shutil

    from hhpulse.config import load_candidates
    from hhpulse.data.history_store import load_history, rates_by_run
    from hhpulse.flows.replay import ReplaySettings, replay_store
    from hhpulse.flows.replay_live import LiveHook
    from hhpulse.flows.workflow import train_from_history
    from hhpulse.model.bundle import load_bundle
    from hhpulse.watch.served import read_served

    _, store_dir, cands = replayed
    shutil.copytree(store_dir / "raw", tmp_path / "store" / "raw")
    hist = load_history(demo_store)
    linear = [c for c in load_candidates() if c.kind != "xgboost"]  # a small, quick champion
    trained = train_from_history(hist, rates_by_run(demo_store), tmp_path / "b", candidates=linear)
    bundle = load_bundle(trained.bundle_dir)

    class Gate:
        key = "gate"

        def on_day(self, day):
            day.shared["champion"] = bundle

        def summary(self):
            return {"days": "all"}

    live = LiveHook()
    store = LocalStore(tmp_path / "store")
    report = replay_store(
        store, settings=ReplaySettings(candidates=load_candidates(cands)), hooks=[Gate(), live]
    )
    assert report["gate"] == {"days": "all"} and report["live"]["champion"] == "the gate hook's"
    assert live.trained == [] and "stand_in" not in report["live"]
    # replay_store only reads the user's store: the runs fold, and the log is written, in a scratch copy
    assert list(read_served(store)) == []
    detail = [d for d in report["live"]["days_detail"] if d["served"]]
    assert detail and {d["model_version"] for d in detail} == {bundle.version}
    assert report["live"]["served"] == sum(d["served"] for d in detail) > 0
    assert any(k.startswith("hook") for k in report["seconds_by_step"])


def test_replay_refuses_a_store_without_runs(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "replay", "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "at least 2 finished runs, found 0" in p.stderr


def test_model_card_reports_unresolved_and_straddling_demand_labels_and_the_proxy_reason():
    from hhpulse.config import CandidateConfig
    from hhpulse.model.bundle import model_card
    from hhpulse.model.train import TrainedCandidate

    models = {
        t: TrainedCandidate(CandidateConfig(f"{t}-lr", t, "logreg"), ["a", "b"], None)
        for t in ("salary", "demand")
    }
    summary = {
        "demand_resolution": {"unresolved": {"open_young": 7}, "uncertain": 3, "uncertain_share": 0.03},
        "demand_proxy": True,
        "demand_proxy_reason": "resolved labels hold one cohort only (low)",
    }
    card = model_card("v1", models, {"salary": ["a"], "demand": ["a"]}, {}, {"summary": summary})
    assert "- demand unresolved (no label yet, left out): open_young 7" in card
    assert "3 labels (3.0%) have a close time whose uncertainty straddles a cohort edge" in card
    assert "> Why: resolved labels hold one cohort only (low)." in card
    # the report shows the same lines (one source: hhpulse.model.dataset.label_lines), no raw dicts
    import html

    from hhpulse.model.dataset import label_lines
    from hhpulse.model.report import labels_html

    lines = label_lines(summary)
    assert (
        "AGE PROXY" in lines["demand"][1]
        and "resolved labels hold one cohort only (low)" in lines["demand"][1]
    )
    page = labels_html(lines)
    assert all(html.escape(line) in page for line in lines["demand"]) and "{" not in page


class _Recorder:
    """A day hook that records what each day looked like."""

    key = "recorder"

    def __init__(self) -> None:
        self.days: list[dict] = []

    def on_day(self, day) -> None:
        from hhpulse.data.history import build_history

        hist = day.history()
        assert hist is day.history()  # cached per day
        runs = load_raw_runs(day.store)
        # the history the day sees is the fold of the runs so far, as build_history gives it
        pd.testing.assert_frame_equal(hist, build_history(runs))
        day.shared["seen"] = True
        self.days.append(
            {
                "index": day.index,
                "day": day.day,
                "run_id": day.run_id,
                "runs": len(runs),
                "new": len(day.new_ids),
                "rates": sorted(day.rates),
                "vacancies": len(hist),
            }
        )

    def summary(self) -> dict:
        return {"days": len(self.days)}


class _Second:
    key = "second"

    def __init__(self) -> None:
        self.saw = []

    def on_day(self, day) -> None:
        self.saw.append(day.shared.get("seen"))  # hooks run in order and share the day's scratch space

    def summary(self) -> dict:
        return {"saw": self.saw}


def test_replay_folds_day_by_day_and_calls_the_hooks_after_each_fold(tmp_path):
    from hhpulse.config import CandidateConfig
    from hhpulse.data.history_store import load_state
    from hhpulse.flows.replay import ReplaySettings, replay_demo

    cands = [
        CandidateConfig(name="salary-lr", task="salary", kind="logreg", params={"C": 1.0}),
        CandidateConfig(name="demand-lr", task="demand", kind="logreg", params={"C": 1.0}),
    ]
    rec, second = _Recorder(), _Second()
    store = LocalStore(tmp_path)
    report = replay_demo(
        store, days=3, daily_new=20, settings=ReplaySettings(candidates=cands), hooks=[rec, second]
    )
    assert [d["index"] for d in rec.days] == [0, 1, 2] and [d["runs"] for d in rec.days] == [1, 2, 3]
    assert [d["day"] for d in rec.days] == [DEMO_START_DAY, DEMO_START_DAY + 1, DEMO_START_DAY + 2]
    assert rec.days[0]["new"] == rec.days[0]["vacancies"] and 0 < rec.days[1]["new"] < rec.days[0]["new"]
    assert rec.days[-1]["rates"] == sorted(r["run_id"] for r in load_state(store)[0]["runs"])
    assert report["recorder"] == {"days": 3} and report["second"] == {"saw": [True, True, True]}
    assert report["vacancies"] == rec.days[-1]["vacancies"] and "fold" in report["seconds_by_step"]
    assert report["window_days"] == 180


# -- the daily gate in the replay (hhpulse.flows.replay_gate) ------------------------------------
@REPLAY_TIMEOUT
def test_replay_json_carries_the_gate_rules_side_by_side(replayed):
    report, _, _ = replayed
    g = report["gate"]
    # the three named rules, and three variants of the live rule (what a young champion's tie does)
    rules = {"margin", "bootstrap", "live", "live-less-young", "live-mature", "live-challenger"}
    assert (
        set(g["replacements"]) == set(g["served_auc"]) == set(g["live"]) == rules and g["gate_rule"] == "live"
    )
    assert "a young history: a tie keeps it" in g["rules"]["live"]
    assert "a tie goes to a challenger trained on a history that is not young" in g["rules"]["live-mature"]
    assert "a tie goes to the challenger" in g["rules"]["live-challenger"]
    assert "a tie goes to a challenger whose history is less young" in g["rules"]["live-less-young"]
    assert all(isinstance(n, int) and n >= 0 for n in g["replacements"].values())
    for rule in rules:
        assert set(g["served_auc"][rule]) == {"salary", "demand"}
        assert g["served_auc"][rule]["salary"] is None or 0.5 < g["served_auc"][rule]["salary"] <= 1
        # what each rule's champions served, scored as the monitor scores it, against the oracle
        assert g["live"][rule]["stratified_by"] == "model_version" and "oracle_auc" in g["live"][rule]
    assert len(g["days"]) == 10 and g["days_with_a_challenger"] >= 5
    decided = [d for d in g["days"] if "decisions" in d]
    assert all(set(d["decisions"]) == rules for d in decided)
    assert not any(d["decisions"][r]["replaced"] for r in rules for d in decided[:1])
    assert g["goal"]["gate_met"] in (True, False) and "bootstrap" in g["rules"]["bootstrap"]
    # every goal judged: the gate's pair, and the live figure and the champions where judged
    assert g["goal"]["met"] == (
        g["goal"]["gate_met"]
        and g["goal"]["live_ratio_met"] is not False
        and g["goal"]["champions_met"] is not False
    )
    assert (
        "1000 resamples" in g["rules"]["live"] and "resolved rows the champion served" in g["rules"]["live"]
    )
    assert g["published"].startswith("the refit")
    # every champion a rule adopted is a refit, with its offline figure at publication
    for rule in rules:
        assert all(c["offline_auc"] is not None or c["young_history"] for c in g["live"][rule]["champions"])
        # a young history's figure is shown but is not a forecast: never judged against the live one
        assert all(c["within"] is None for c in g["live"][rule]["champions"] if c["young_history"])
    assert set(g["goal"]["champions_young"]) <= {c["version"] for c in g["live"]["live"]["champions"]}
    # the demand goal is not claimed on a cohort that has no labels yet
    dem = report["demand"]
    if dem["missing_cohorts"] or dem["missing_test_cohorts"]:
        assert dem["meets_goal"] is None and "not in the test set" in dem["goal_not_judged"]


@REPLAY_TIMEOUT
def test_replay_hooks_see_every_run_and_the_gate_shares_its_champion(replayed):
    from hhpulse.config import load_candidates
    from hhpulse.flows.replay import ReplaySettings, replay_store
    from hhpulse.flows.replay_gate import GateHook
    from hhpulse.model.bundle import ModelBundle

    _, store_dir, cands = replayed

    class Recorder:
        key = "recorder"

        def __init__(self) -> None:
            self.seen: list[tuple[int, int, str | None]] = []

        def on_day(self, day) -> None:
            champ = day.shared.get("champion")
            assert champ is None or isinstance(champ, ModelBundle)
            assert len(day.history()) >= len(day.new_ids) and day.run_id in day.rates
            self.seen.append((day.index, len(day.new_ids), champ.version if champ else None))

        def summary(self) -> dict:
            return {"days": len(self.seen)}

    gate = GateHook(candidates=load_candidates(cands))
    rec = Recorder()
    try:
        report = replay_store(
            LocalStore(store_dir),
            settings=ReplaySettings(candidates=load_candidates(cands)),
            hooks=[gate, rec],
        )
    finally:
        gate.close()
    assert report["recorder"] == {"days": 10} and [i for i, _, _ in rec.seen] == list(range(10))
    assert rec.seen[0][1] > 0 and all(n >= 0 for _, n, _ in rec.seen)
    served = [v for _, _, v in rec.seen if v]
    assert served and served[-1] == report["gate"]["days"][-1]["champions"]["live"]


def test_replay_text_output_is_plain_and_its_progress_goes_to_stderr(tmp_path):
    env = {**os.environ, "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    cands = tmp_path / "c.yaml"
    cands.write_text(LOGREG_ONLY, encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "replay", "--days", "3", "--demo-size", "20", "--no-gate"]
        + ["--candidates", str(cands)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "replay: day 1/3" in p.stderr and "replay: day" not in p.stdout
    assert " INFO " not in p.stderr  # the steps' log lines need -v
    assert "{" not in p.stdout and "'" not in p.stdout.replace("'s", "")  # no raw Python dict
    for task in ("salary", "demand"):
        assert (p.stdout + p.stderr).count(f"{task}: winner") == 1
    assert "gate, applied" not in p.stdout
    # 40 of 84 stderr lines were the same WARNINGs, once a day: each is said once now
    warnings = [line for line in p.stderr.splitlines() if "WARNING" in line]
    assert warnings and len(warnings) == len(set(warnings)), p.stderr
    assert sum("DEMAND PROXY" in line for line in warnings) == 1
    assert "repeats of the warnings above were left out" in p.stderr
    assert "prototype" not in p.stdout + p.stderr  # plain words, no history of the project
    assert p.stdout.rstrip().splitlines()[-1].startswith("In short: after 3 runs")


def test_the_replay_ends_with_a_sentence_a_user_can_act_on():
    """Not a goal's formula (`goal (live < 0.333 x margin ...): NOT met`): a sentence."""
    from hhpulse.commands.replay import closing_line

    def gate(old, new, fewer, auc_ok):
        met = bool(fewer) and all(v is not False for v in auc_ok.values())
        goal = {"fewer_replacements": fewer, "served_auc_no_lower": auc_ok, "gate_met": met, "met": met}
        return {
            "days": 20,
            "gate": {
                "replacements": {"margin": old, "bootstrap": 1, "live": new},
                "gate_rule": "live",
                "goal": goal,
            },
        }

    assert "raise `hhpulse run --margin`" in closing_line(gate(5, 3, False, {"salary": True, "demand": True}))
    assert "nothing to change" in closing_line(gate(9, 2, True, {"salary": True, "demand": True}))
    lower = closing_line(gate(9, 2, True, {"salary": True, "demand": False}))
    assert "lower demand ROC AUC" in lower and "lower `hhpulse run --margin`" in lower
    assert "replay more days" in closing_line(gate(0, 0, None, {"salary": None, "demand": None}))
    for line in (closing_line(gate(5, 3, False, {"salary": True, "demand": True})),):
        assert line.startswith("In short: ") and "x margin" not in line


def test_a_young_historys_offline_figure_is_shown_beside_the_live_one_but_not_judged():
    from hhpulse.flows.replay_live import GOAL_CHAMPION_ROWS, champions_offline_live

    live = {
        "by_version": {
            "young": {"n": GOAL_CHAMPION_ROWS, "auc": 0.65},
            "mature": {"n": GOAL_CHAMPION_ROWS, "auc": 0.66},
            "off": {"n": GOAL_CHAMPION_ROWS + 50, "auc": 0.60},
            "short": {"n": GOAL_CHAMPION_ROWS - 1, "auc": 0.70},
        }
    }
    offline = {
        "young": {
            "offline_auc": 0.95,
            "offline_interval": None,
            "young_history": "the settled window did not ...",
        },
        "mature": {"offline_auc": 0.68, "offline_interval": None, "young_history": None},
        "off": {"offline_auc": 0.68, "offline_interval": None, "young_history": None},
        "short": {"offline_auc": 0.60, "offline_interval": None, "young_history": None},
    }
    got = {c["version"]: c for c in champions_offline_live(live, offline)}
    assert got["young"]["gap"] == pytest.approx(0.65 - 0.95) and not got["young"]["forecast"]
    assert got["young"]["within"] is None  # marked, its gap shown, not judged
    assert got["mature"]["forecast"] and got["mature"]["within"] is True
    assert got["off"]["within"] is False  # a mature figure 0.08 off is judged, and fails
    assert got["short"]["forecast"] and got["short"]["within"] is None  # too few resolved rows yet
