"""The monitor on a hand-made served log and history: every number worked out by hand below."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from hhpulse.cli import main
from hhpulse.config import Thresholds
from hhpulse.data.store import LocalStore
from hhpulse.watch.monitor import (
    LENGTH_EDGES,
    Reference,
    input_drift,
    latest_report,
    length_shares,
    live_demand,
    metrics_of,
    monitor_html,
    read_state,
    resolved_demand,
    run_monitor,
    served_mix,
    summary_lines,
    volume,
    window_report,
)
from hhpulse.watch.served import ServedLogWriter, make_record

T0 = pd.Timestamp("2026-03-01T00:00:00Z")
SALARY = {"cohort": "mid", "probabilities": {"low": 0.2, "mid": 0.5, "high": 0.3}}


def day(n: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


def hand_history() -> pd.DataFrame:
    """Six vacancies, every start known (initial_created_at = T0):
    A closes at day 5 (high), G at day 5 (high), B at 15 (medium), C open, seen at day 25
    (censored low), D open, seen at day 3 (open_young: unresolved), E closes at 30 (low, never served)."""
    rows = []
    for vid, closed, last in (
        ("A", 5, 4.5),
        ("G", 5, 4.5),
        ("B", 15, 14.5),
        ("C", None, 25),
        ("D", None, 3),
        ("E", 30, 29.5),
    ):
        rows.append(
            {
                "id": vid,
                "responsibility": "x",
                "initial_created_at": T0,
                "first_published_at": T0,
                "observed_since": pd.NaT,
                "last_seen": day(last),
                "closed_at": day(closed) if closed else pd.NaT,
                "closed_after": day(closed - 0.5) if closed else pd.NaT,
                "closed_by": day(closed + 0.5) if closed else pd.NaT,
            }
        )
    df = pd.DataFrame(rows)
    for c in (
        "initial_created_at",
        "first_published_at",
        "observed_since",
        "last_seen",
        "closed_at",
        "closed_after",
        "closed_by",
    ):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def rec(vid, demand, *, t="2026-03-01T10:00:00Z", text="писать код", version="v1", req="r1"):
    probs = dict(zip(("high", "medium", "low"), demand, strict=True))
    cohort = max(probs, key=probs.__getitem__)
    inst = {"responsibility": text} | ({"id": vid} if vid else {})
    return make_record(
        time=t,
        model_version=version,
        request_id=req,
        instance=inst,
        prediction={"salary": SALARY, "demand": {"cohort": cohort, "probabilities": probs}},
    )


def hand_log() -> list[dict]:
    return [
        rec("A", (0.6, 0.3, 0.1), t="2026-03-01T10:00:00Z", req="r1"),
        rec("A", (0.1, 0.1, 0.8), t="2026-03-02T10:00:00Z", req="r2"),  # a later call: not scored
        rec("G", (0.15, 0.45, 0.4), t="2026-03-01T11:00:00Z", req="r1"),
        rec("B", (0.2, 0.5, 0.3), t="2026-03-01T12:00:00Z", req="r3", text=""),
        rec("C", (0.1, 0.3, 0.6), t="2026-03-01T13:00:00Z", req="r3", version="v2", text="вести учёт " * 10),
        rec("D", (0.3, 0.3, 0.4), t="2026-03-01T14:00:00Z", req="r4"),  # unresolved
        rec("F", (0.3, 0.3, 0.4), t="2026-03-01T15:00:00Z", req="r4"),  # not in history
        rec(None, (0.3, 0.3, 0.4), t="2026-03-01T16:00:00Z", req="r5"),  # no id
    ]


def hand_reference() -> Reference:
    return Reference(
        version="v1",
        train_mix={
            "salary": {"low": 0.2, "mid": 0.5, "high": 0.3},
            "demand": {"high": 0.5, "medium": 0.25, "low": 0.25},
        },
        test_auc={"salary": 0.8, "demand": 0.99},
        length=length_shares([5, 60, 60, 160]),
        unseen_share=0.25,
        rows=4,
        rows_from="training ids",
        vocabulary={"писать", "код"},
    )


def test_resolved_labels_from_the_hand_history():
    res = resolved_demand(hand_history()).set_index("id")
    assert res["demand_cohort"].to_dict() == {"A": "high", "G": "high", "B": "medium", "C": "low", "E": "low"}
    assert res.loc["C", "demand_source"] == "censored_low" and res.loc["A", "demand_source"] == "closed"


def test_live_demand_by_hand():
    live = live_demand(hand_log(), resolved_demand(hand_history()))
    # served ids A G B C D F; resolved among them: A G B C
    assert (live["served_ids"], live["n"], live["unresolved"]) == (6, 4, 2)
    assert live["labels"] == {"high": 2, "medium": 1, "low": 1}
    assert live["label_sources"] == {"closed": 3, "censored_low": 1}
    # argmax: A high (right), G medium (wrong: it is high), B medium (right), C low (right)
    assert live["accuracy"] == pytest.approx(3 / 4)
    # OvO (Hand & Till), each pair the mean of both directions:
    #  high|medium: by p_high, A .6 and G .15 vs B .2 -> 1/2; by p_medium, B .5 vs A .3, G .45 -> 1: 0.75
    #  high|low:    by p_high, A .6, G .15 vs C .1 -> 1;     by p_low, C .6 vs A .1, G .4 -> 1:      1
    #  medium|low:  B vs C both ways -> 1
    assert live["auc_pooled"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert (live["first"], live["last"]) == ("2026-03-01T10:00:00.000Z", "2026-03-01T13:00:00.000Z")
    # per version: v1 served A G (high) and B (medium); v2 served C alone (low), one cohort, no AUC.
    # v1 on high|medium, both ways: by p_high A .6/.9 and G .15/.6 vs B .2/.7 -> 1/2; by p_medium
    # B .5/.7 vs A .3/.9 and G .45/.6 -> 1/2. The stratified headline is v1's alone (v2 left out)
    assert live["by_version"]["v1"]["n"] == 3 and live["by_version"]["v1"]["auc"] == pytest.approx(0.5)
    assert live["by_version"]["v2"] == {
        "n": 1,
        "auc": None,
        "accuracy": 1.0,
        "first": "2026-03-01T13:00:00.000Z",
        "last": "2026-03-01T13:00:00.000Z",
        "labels": {"low": 1},
    }
    assert (
        live["auc"] == pytest.approx(0.5)
        and live["auc_rows"] == 3
        and live["stratified_by"] == "model_version"
    )
    assert any("1 rows of versions whose AUC is undefined" in n for n in live["notes"])
    # 2026-03-01 is a Sunday: its week starts on Monday 2026-02-23
    assert live["by_week"] == [
        {"week": "2026-02-23", "n": 4, "auc": pytest.approx(0.5), "versions": {"v1": 3, "v2": 1}}
    ]


def test_the_stratified_live_auc_is_the_row_weighted_mean_of_the_versions_and_the_oracle_is_stratified_alike():
    """Two versions, each ranking its own rows perfectly, on two different probability scales:
    pooled, the rows of one rank against the rows of the other and the AUC drops; stratified it is 1."""
    hist = hand_history()
    log = [
        rec("A", (0.9, 0.05, 0.05), version="v1"),
        rec("C", (0.8, 0.1, 0.1), version="v1"),  # C is low
        rec("G", (0.2, 0.4, 0.4), version="v2", t="2026-03-09T10:00:00Z"),
        rec("B", (0.1, 0.5, 0.4), version="v2", t="2026-03-09T11:00:00Z"),
    ]
    live = live_demand(log, resolved_demand(hist))
    v1, v2 = live["by_version"]["v1"], live["by_version"]["v2"]
    # v1: A high vs C low: p_high .9/.95 > .8/.9, p_low .05/.95 < .1/.9 -> 1. v2: G high vs B medium:
    # p_high .2/.6 > .1/.6, p_medium .5/.6 > .4/.6 -> 1
    assert v1["auc"] == v2["auc"] == 1.0 and live["auc"] == 1.0
    assert live["auc_pooled"] < 1.0  # C (low, from v1) outranks G and B on p_high
    assert [w["week"] for w in live["by_week"]] == ["2026-02-23", "2026-03-09"]
    assert [w["versions"] for w in live["by_week"]] == [{"v1": 2}, {"v2": 2}]
    oracle = {"A": (0.7, 0.2, 0.1), "C": (0.1, 0.2, 0.7), "G": (0.3, 0.6, 0.1), "B": (0.4, 0.5, 0.1)}
    live = live_demand(log, resolved_demand(hist), oracle=oracle.get)
    # the oracle: v1's rows 1 (A above C both ways); v2's rows: G high vs B medium, p_high .3/.9 <
    # .4/.9 and p_medium .6/.9 > .5/.9 -> 0 both ways -> 0; stratified (2 x 1 + 2 x 0) / 4
    assert live["by_version"]["v1"]["oracle_auc"] == 1.0 and live["by_version"]["v2"]["oracle_auc"] == 0.0
    assert live["oracle_auc"] == pytest.approx(0.5) and live["ratio_to_oracle"] == pytest.approx(2.0)
    assert live["oracle_rows"] == 4 and [w["oracle_auc"] for w in live["by_week"]] == [1.0, 0.0]


def test_volume_mix_and_input_by_hand():
    log = hand_log()
    ref = hand_reference()
    vol = volume(log)
    assert vol == {
        "records": 8,
        "requests": 5,
        "with_id": 7,
        "distinct_ids": 6,
        "model_versions": {"v1": 7, "v2": 1},
        "first": "2026-03-01T10:00:00.000Z",
        "last": "2026-03-02T10:00:00.000Z",
    }
    mix = served_mix(log, ref)["demand"]
    # mean p_high = (.6+.1+.15+.2+.1+.3+.3+.3)/8 = 2.05/8; medium (.3+.1+.45+.5+.3+.3+.3+.3)/8 = 2.55/8;
    # low (.1+.8+.4+.3+.6+.4+.4+.4)/8 = 3.4/8
    mean = {"high": 2.05 / 8, "medium": 2.55 / 8, "low": 3.4 / 8}
    assert mix["served_mean"] == pytest.approx(mean)
    # predicted: high A; medium G B; low A(2nd) C D F none-id -> 1/8, 2/8, 5/8
    assert mix["served_predicted"] == pytest.approx({"high": 1 / 8, "medium": 2 / 8, "low": 5 / 8})
    train = {"high": 0.5, "medium": 0.25, "low": 0.25}
    # (.25625-.5) ln(.5125) + (.31875-.25) ln(1.275) + (.425-.25) ln(1.7) = .16294 + .01670 + .09286
    by_hand = sum((mean[c] - train[c]) * math.log(mean[c] / train[c]) for c in train)
    assert mix["psi"] == pytest.approx(by_hand) and by_hand == pytest.approx(0.2725, abs=1e-4)
    assert served_mix(log, ref)["salary"]["psi"] == pytest.approx(0.0, abs=1e-9)  # served as trained

    inp = input_drift(log, ref)
    # lengths: "писать код" 10 chars x6, "" 0 x1, "вести учёт " x10 = 110 x1
    assert inp["length_shares"][LENGTH_EDGES.index(0)] == pytest.approx(1 / 8)
    assert inp["length_shares"][LENGTH_EDGES.index(1)] == pytest.approx(6 / 8)
    assert inp["length_shares"][LENGTH_EDGES.index(100)] == pytest.approx(1 / 8)
    assert ref.length[LENGTH_EDGES.index(1)] == 0.25 and ref.length[LENGTH_EDGES.index(50)] == 0.5
    assert inp["mean_length"] == pytest.approx((6 * 10 + 110) / 8)
    # tokens: 6 x (писать, код) known; "вести учёт" x10 -> 20 tokens unknown: 20 / 32
    assert (inp["unseen_tokens"], inp["tokens"]) == (20, 32)
    assert inp["unseen_share"] == pytest.approx(20 / 32)
    assert inp["unseen_increase"] == pytest.approx(20 / 32 - 0.25)
    assert inp["length_psi"] > 1  # nothing served falls in the training rows' main bins


def test_flags_follow_the_thresholds():
    log, ref, res = hand_log(), hand_reference(), resolved_demand(hand_history())
    rep = window_report(log, ref, res, Thresholds(min_records=8, min_live=3), "total")
    names = {f["name"]: f for f in rep["flags"]}
    assert set(names) == {"demand_cohort_mix", "input_length", "unseen_terms", "live_demand_auc"}
    # the champion (v1)'s own live AUC (0.5 on its 3 resolved rows) against its held-out 0.99
    assert names["live_demand_auc"]["value"] == pytest.approx(0.99 - 0.5, abs=1e-4)
    assert "the champion's live AUC 0.500 on 3" in names["live_demand_auc"]["detail"]
    assert names["demand_cohort_mix"]["value"] == pytest.approx(0.2725, abs=1e-4)
    rep = window_report(log, ref, res, Thresholds(min_records=8, min_live=3, cohort_psi=0.28), "total")
    assert "demand_cohort_mix" not in {f["name"] for f in rep["flags"]}
    # too few records or resolved predictions of the champion: nothing judged
    assert window_report(log, ref, res, Thresholds(min_records=9, min_live=4), "total")["flags"] == []
    # another version's rows say nothing about the champion
    other = Reference(**{**hand_reference().__dict__, "version": "v3"})
    rep = window_report(log, other, res, Thresholds(min_records=8, min_live=1), "total")
    assert "live_demand_auc" not in {f["name"] for f in rep["flags"]}


def test_run_monitor_windows_state_and_outputs(tmp_path, demo_store):
    """End to end on a store: the watermark splits 'since the last run' from 'in total'."""
    from hhpulse.config import load_candidates
    from hhpulse.data.history_store import load_history, rates_by_run
    from hhpulse.flows.workflow import train_from_history
    from hhpulse.model.bundle import load_bundle

    hist = load_history(demo_store)
    linear = [c for c in load_candidates() if c.kind != "xgboost"]  # a small, quick champion
    trained = train_from_history(hist, rates_by_run(demo_store), tmp_path / "b", candidates=linear)
    bundle = load_bundle(trained.bundle_dir)
    store = LocalStore(tmp_path / "store")
    w = ServedLogWriter(store, max_records=3)
    ids = hist["id"].astype(str).tolist()
    w.add([rec(ids[i], (0.5, 0.3, 0.2), t=f"2026-03-01T0{i}:00:00Z") for i in range(5)])
    w.flush()
    look = run_monitor(store, now="2026-03-01T03:00:00Z", bundle=bundle, history=hist)
    assert (
        read_state(store) == {} and not store.list("monitor/") and "key" not in look
    )  # looking is read-only
    first = run_monitor(
        store, now="2026-03-01T03:00:00Z", settle_seconds=0, bundle=bundle, history=hist, save=True
    )
    assert (first["since"], first["until"]) == (None, "2026-03-01T03:00:00.000Z")
    assert first["total"]["volume"]["records"] == first["since_last_run"]["volume"]["records"] == 3
    state = read_state(store)
    assert state == {"until": "2026-03-01T03:00:00.000Z", "report": first["key"], "runs": 1}
    assert store.get_json(first["key"])["until"] == first["until"]
    assert first["champion"]["rows_from"] == "training ids" and 0 < first["champion"]["rows"] <= len(hist)
    second = run_monitor(
        store, now="2026-03-01T10:00:00Z", settle_seconds=3600, bundle=bundle, history=hist, save=True
    )
    assert second["since"] == "2026-03-01T03:00:00.000Z" and second["until"] == "2026-03-01T09:00:00.000Z"
    assert second["since_last_run"]["volume"]["records"] == 2 and second["total"]["volume"]["records"] == 5
    assert latest_report(store)["until"] == second["until"]
    # an older run finishing late never moves the watermark back
    run_monitor(store, now="2026-03-01T04:00:00Z", settle_seconds=0, bundle=bundle, history=hist, save=True)
    assert read_state(store)["until"] == "2026-03-01T09:00:00.000Z" and read_state(store)["runs"] == 2
    m = metrics_of(second)
    assert m["total.records"] == 5 and m["since_last_run.records"] == 2 and "total.input.unseen_share" in m
    page = monitor_html(second)
    assert "Served traffic" in page and "since the last run" in page
    assert summary_lines(second)[0].startswith("served:       2 predictions since the last run, 5 in total")
    json.dumps(second)  # the saved report is plain JSON


def test_cli_monitor_json_and_bad_input(tmp_path, capsys):
    store = LocalStore(tmp_path)
    with ServedLogWriter(store) as w:
        w.add(hand_log())
    assert (
        main(["monitor", "--store", str(tmp_path), "--now", "2026-03-03T00:00:00Z", "--json", "--dry-run"])
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert (
        rep["total"]["volume"]["records"] == 8
        and rep["champion"] is None
        and rep["total"]["live_demand"] is None
    )
    assert read_state(store) == {}  # --dry-run moved nothing
    assert main(["monitor", "--store", str(tmp_path), "--now", "yesterday"]) == 2
    assert "not an ISO-8601" in capsys.readouterr().err
    assert main(["monitor", "--store", str(tmp_path), "--cohort-psi", "-1"]) == 2
    # a plain look changes nothing in the store; --advance (the pipeline step's) saves and moves
    assert main(["monitor", "--store", str(tmp_path), "--now", "2026-03-03T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "in total: 8 predictions in 5 requests, 7 with a vacancy id" in out
    assert "looked only: nothing saved" in out and read_state(store) == {} and not store.list("monitor/")
    assert main(["monitor", "--store", str(tmp_path), "--now", "2026-03-03T00:00:00Z", "--advance"]) == 0
    out = capsys.readouterr().out
    assert "report: monitor/reports/" in out and read_state(store)["runs"] == 1
    # --advance leaves the newest 300 s to the next run (a sink may still hold them)
    assert read_state(store)["until"] == "2026-03-02T23:55:00.000Z"


def test_an_empty_window_says_n_a_and_cohorts_follow_the_labels_order(tmp_path, capsys):
    """`salary mix served 100k_150k 0.00, ...` on 0 records, in alphabetical order, before."""
    ref = hand_reference()
    ref.cohorts = {"salary": ["low", "mid", "high"], "demand": ["high", "medium", "low"]}
    ref.train_mix["demand"] = {"low": 0.25, "high": 0.5, "medium": 0.25}  # as metrics.json sorts it
    empty = served_mix([], ref)
    assert empty["demand"]["served_mean"] == {} and empty["demand"]["psi"] is None
    assert list(empty["demand"]["train"]) == ["high", "medium", "low"]
    assert list(served_mix(hand_log(), ref)["demand"]["served_mean"]) == ["high", "medium", "low"]
    # no champion: the default labels' order, from what the log holds
    assert list(served_mix(hand_log(), None)["demand"]["served_mean"]) == ["high", "medium", "low"]
    LocalStore(tmp_path).put_json("x.json", {})  # a store without any served log
    assert main(["monitor", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 predictions in 0 requests" in out and "no served predictions in the store" in out
    assert "mix served n/a" in out and "0.00" not in out.split("in total:")[1]


def test_live_accuracy_apart_by_the_kind_of_champion():
    from hhpulse.watch.monitor import live_by_champion

    log = hand_log()
    two = rec("E", (0.2, 0.0, 0.8))
    two["demand"]["probabilities"].pop("medium")  # a champion that had seen no medium yet
    parts = live_by_champion([*log, two], resolved_demand(hand_history()), proxy_versions={"v2"})
    assert set(parts) == {"proxy", "missing_cohorts", "full"}
    assert parts["proxy"]["n"] == 1 and parts["proxy"]["labels"] == {"low": 1}  # C, served by v2
    assert parts["missing_cohorts"]["n"] == 1 and parts["missing_cohorts"]["accuracy"] == 1.0  # E: low
    # A G B: argmax right for A and B, wrong for G
    assert parts["full"]["n"] == 3 and parts["full"]["accuracy"] == pytest.approx(2 / 3)


def test_live_hook_follows_a_gate_hook_that_has_no_champion_yet(tmp_path):
    """A gate hook that ran but has no champion yet (None) is obeyed: no stand-in is trained."""
    from hhpulse.flows.replay import ReplayDay, ReplaySettings
    from hhpulse.flows.replay_live import LiveHook

    hook = LiveHook()
    day = ReplayDay(
        index=0,
        day=60,
        run_id="r0",
        collected_at=T0,
        store=LocalStore(tmp_path),
        history=hand_history,
        rates={},
        new_ids=frozenset({"A"}),
        market=None,
        settings=ReplaySettings(),
        shared={"champion": None},
    )
    hook.on_day(day)
    hook.on_day(day)  # nothing serves: nothing is predicted or logged
    assert hook.trained == [] and not hook.stand_in
    summary = hook.summary()
    assert summary["served"] == 0 and summary["champion"] == "the gate hook's"
    assert summary["demand"]["n"] == 0 and LocalStore(tmp_path).list("served/") == []


def test_the_reference_auc_is_the_served_one_the_run_summary_gives():
    """The monitor printed the champion's raw-model AUC (0.359) where the summary said 0.356
    after calibration: the live AUC scores calibrated probabilities, so its reference is too."""
    from hhpulse.watch.monitor import held_out_auc

    doc = {"winner": "w", "candidates": {"w": {"metrics": {"test": {"roc_auc_ovo": 0.359}}}}}
    metrics = {
        "salary": doc,
        "demand": doc,
        "calibration": {"demand": {"test": {"after": {"roc_auc_ovo": 0.356}}}},
    }
    assert held_out_auc(metrics) == {"salary": 0.359, "demand": 0.356}


def test_served_outcomes_are_a_versions_first_served_rows_that_resolved():
    from hhpulse.watch.monitor import served_outcomes

    out = served_outcomes(hand_log(), resolved_demand(hand_history()), "v1")
    p = out.predictions["demand"]
    # v1 served A (first at 10:00; the later call is not its row), G, B resolved; D unresolved; F unknown
    assert out.version == "v1" and p.ids == ["A", "G", "B"] and p.labels == ["high", "high", "medium"]
    assert p.classes == ["high", "medium", "low"] and p.proba.tolist()[0] == [0.6, 0.3, 0.1]
    assert out.instances["demand"][0] == {"responsibility": "писать код"}  # the inputs, without the id
    assert (out.first, out.last) == ("2026-03-01T10:00:00.000Z", "2026-03-01T12:00:00.000Z")
    assert served_outcomes(hand_log(), resolved_demand(hand_history()), "v2").predictions["demand"].ids == [
        "C"
    ]
    none = served_outcomes(hand_log(), resolved_demand(hand_history()), "v9")
    assert none.rows("demand") == 0 and none.predictions["demand"].proba.shape == (0, 3)


def test_each_versions_offline_figure_at_publication_stands_beside_its_live_one(tmp_path):
    from hhpulse.watch.monitor import offline_figures, with_offline

    store = LocalStore(tmp_path)
    metrics = {
        "demand": {"winner": "d", "candidates": {"d": {"metrics": {"test": {"roc_auc_ovo": 0.9}}}}},
        "test_intervals": {
            "demand": {"value": 0.9, "low": 0.8, "high": 0.97, "rows": 40, "confidence": 0.95}
        },
        "dataset": {"demand_proxy": False},
        "boundaries": {
            "demand": {"method": "time per cohort (the settled window does not hold every cohort yet)"}
        },
    }
    store.put_json("models/hhpulse/v1/metrics.json", metrics)
    live = live_demand(hand_log(), resolved_demand(hand_history()))
    off = offline_figures(store, live["by_version"])
    assert set(off) == {"v1"}  # v2 is not in the registry
    with_offline(live, off)
    v1 = live["by_version"]["v1"]
    assert v1["offline_auc"] == 0.9 and v1["offline_interval"]["low"] == 0.8
    assert v1["gap"] == pytest.approx(0.5 - 0.9) and "settled window" in v1["young_history"]
    assert "offline_auc" not in live["by_version"]["v2"]
    page = monitor_html(
        {
            "until": "u",
            "flags": [],
            "champion": None,
            "since_last_run": window_report([], None, None, Thresholds(), "since_last_run"),
            "total": {**window_report(hand_log(), None, None, Thresholds(), "total"), "live_demand": live},
        }
    )
    assert "0.900 [0.800, 0.970] <b>young history: not a forecast</b>" in page and "week of" in page
