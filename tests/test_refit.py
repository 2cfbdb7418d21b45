"""The published fit: the winners refitted on every labelled row, the held-out fit's
figures kept for the metrics and the gate, the out-of-fold calibrator and its prior backtest,
and the selection score that counts both ways the model is called."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import CandidateConfig, FeatureConfig
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import evaluate_bundle, train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.model.calibration import Calibrator
from hhpulse.model.dataset import TaskData, build_dataset
from hhpulse.model.evaluate import classification_metrics
from hhpulse.model.refit import PRIOR_RULES, published_calibrator, refit_rounds, window_ids, with_prior
from hhpulse.model.train import fit_candidate, select_winner, selection_score

LINEAR = [
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig("demand-lr", "demand", "logreg", {"C": 1.0}),
]


# -- the selection score -------------------------------------------------------------------
def _cand(val: float, resp: float | None) -> dict:
    metrics = {"val": {"roc_auc_ovo": val}}
    if resp is not None:
        metrics["val_resp"] = {"roc_auc_ovo": resp}
    return {"kind": "logreg", "info": {}, "metrics": metrics}


def test_the_selection_score_is_the_mean_of_both_ways_the_model_is_called():
    assert selection_score(_cand(0.70, 0.60)["metrics"]) == pytest.approx(0.65)
    assert selection_score(_cand(0.70, 0.60)["metrics"], selection="all_fields") == pytest.approx(0.70)
    # features built before val_resp existed: the all-fields figure alone
    assert selection_score(_cand(0.70, None)["metrics"]) == pytest.approx(0.70)
    with pytest.raises(ValueError, match="selection must be one of"):
        selection_score(_cand(0.7, 0.6)["metrics"], selection="resp")


def test_a_candidate_good_at_both_beats_one_good_with_all_fields_only():
    results = {"all-only": _cand(0.72, 0.58), "both": _cand(0.70, 0.64), "salary-baseline": _cand(0.71, 0.60)}
    res = select_winner("salary", results, baseline="salary-baseline")
    assert res.winner == "both" and res.selection == "both"
    assert res.candidates["both"]["selection_score"] == pytest.approx(0.67)
    assert "responsibility alone" in res.selection_rule()
    # the old rule picks the other one
    assert (
        select_winner("salary", results, baseline="salary-baseline", selection="all_fields").winner
        == "all-only"
    )


# -- fitting without held-out rows ------------------------------------------------------------
def test_an_xgboost_refit_trains_the_given_rounds_without_validation_rows():
    rng = np.random.default_rng(0)
    X = rng.random((200, 5))
    y = ["a" if v > 0.5 else "b" for v in X[:, 0]]
    cfg = CandidateConfig("x", "salary", "xgboost", {"max_depth": 2, "n_estimators": 50})
    m = fit_candidate(cfg, X, y, None, None, ["a", "b"], device="cpu", rounds=7)
    assert m.model.num_boosted_rounds() == 7 and refit_rounds(m) == 7
    with pytest.raises(ValueError, match="validation rows"):
        fit_candidate(cfg, X, y, None, None, ["a", "b"], device="cpu")


# -- the calibrator's prior ------------------------------------------------------------------
def test_with_prior_moves_the_mean_probability_to_the_target_and_keeps_the_temperature():
    rng = np.random.default_rng(1)
    p = rng.dirichlet([2, 1, 1], size=400)
    cal = Calibrator(["a", "b", "c"], "temperature", 1.7)
    out = with_prior(cal, p, np.array([0.2, 0.3, 0.5]), "window")
    assert out.temperature == 1.7 and out.fitted_on["prior_rule"] == "window"
    assert out.apply(p).mean(axis=0) == pytest.approx([0.2, 0.3, 0.5], abs=1e-5)
    assert list(out.priors.values()) == pytest.approx([0.2, 0.3, 0.5], abs=1e-5)


def _drifting_task(shares: dict[str, float], n: int = 900, seed: int = 0) -> TaskData:
    """A salary-like task whose 'hi' share moves between the slices (train/val/test): the words
    carry the signal; the newest slices shift the mix."""
    rng = np.random.default_rng(seed)
    rows = []
    cuts = {"train": int(n * 0.7), "val": int(n * 0.85), "test": n}
    for i in range(n):
        part = next(p for p, c in cuts.items() if i < c)
        label = "hi" if rng.random() < shares[part] else "lo"
        words = ["python", "lead", "senior"] if label == "hi" else ["курьер", "склад", "продажи"]
        noise = ["работа", "офис", "команда", "опыт"]
        text = " ".join(rng.choice(words + noise, size=6))
        rows.append(
            {
                "id": str(i),
                "responsibility": text,
                "name": None,
                "requirement": None,
                "label": label,
                "part": part,
                "collected_at": pd.Timestamp("2026-01-01", tz="UTC"),
                "published_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i),
            }
        )
    return TaskData("salary", ["lo", "hi"], pd.DataFrame(rows), {})


def test_calibration_weeks_follow_the_first_sighting_and_fall_back_to_publication():
    from hhpulse.model.refit import weekly_calibration

    utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    rows = pd.DataFrame(
        {
            "label": ["lo", "hi", "lo", "hi", "lo"],
            # first seen on a Wednesday and the next Monday; then no sighting
            "first_seen": [utc("2026-01-07"), utc("2026-01-12"), pd.NaT, pd.NaT, pd.NaT],
            "collected_at": [utc("2026-01-20"), utc("2026-01-20"), utc("2026-01-21"), pd.NaT, pd.NaT],
            # a record that is not an API item has no published_at; the week is the sighting's
            "published_at": [pd.NaT, utc("2025-06-01"), pd.NaT, utc("2026-02-05"), pd.NaT],
        }
    )
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]])
    weeks = weekly_calibration(rows, proba, ["lo", "hi"])
    assert [(w["week"], w["rows"]) for w in weeks] == [
        ("unknown", 1),
        ("2026-01-05", 1),
        ("2026-01-12", 1),
        ("2026-01-19", 1),
        ("2026-02-02", 1),
    ]
    assert weeks[1]["ece"] == pytest.approx(0.2)  # confident 0.8 on a right answer


def test_the_published_calibrator_is_fitted_out_of_fold_and_its_prior_chosen_by_a_backtest():
    from hhpulse.model.features import TextVectorizer

    td = _drifting_task({"train": 0.2, "val": 0.4, "test": 0.4})
    fcfg = FeatureConfig(fields=("responsibility",), min_df=1)
    vec = TextVectorizer(fcfg).fit(td.frame)
    cfg = CandidateConfig("lr", "salary", "logreg", {"C": 1.0})
    cal, rep = published_calibrator(cfg, vec, td, fcfg, rounds=None, device="cpu")
    assert "out-of-fold" in rep["fitted_on"] and set(rep["slices"]) == {"val", "test"}
    bt = rep["backtest"]["rules"]
    assert set(bt) == set(PRIOR_RULES)
    best = min(bt, key=lambda r: max(bt[r]["ece"], bt[r]["mix_error"]))
    assert rep["prior_rule"] == best == cal.fitted_on["prior_rule"]
    # the mix moved up to 0.4 and stayed: the newest slice's prior wins the backtest over the window's
    assert bt["window"]["mix_error"] > bt["newest"]["mix_error"]
    assert rep["prior_rule"] != "window"
    # ECE and mix error per week of first sighting of the out-of-fold rows (here all in one week)
    assert [w["week"] for w in rep["weeks"]] == ["2025-12-29"]  # 2026-01-01 is a Thursday
    assert rep["weeks"][0]["rows"] == len(td.part("val")) + len(td.part("test"))
    assert rep["weeks"][0]["ece"] == pytest.approx(rep["slices"]["val"]["after"]["ece"], abs=0.2)


def test_the_class_balanced_prior_is_a_rule_of_the_backtest():
    """ "none": the model's own probabilities, the class-balanced prior its balanced class weights
    give it; when its mix is the mix that comes, it wins the backtest."""
    from hhpulse.model.features import TextVectorizer
    from hhpulse.model.refit import rule_calibrator

    p = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    cal = rule_calibrator("none", [(["lo", "hi", "lo"], p)], ["lo", "hi", "lo"], ["lo", "hi"])
    assert cal.method == "none" and cal.identity and cal.apply(p) is p
    assert cal.priors == pytest.approx({"lo": 0.5, "hi": 0.5}) and cal.fitted_on["prior_rule"] == "none"
    # balanced classes in every slice: nothing to correct, so the uncalibrated model is as good as any
    td = _drifting_task({"train": 0.5, "val": 0.5, "test": 0.5}, seed=3)
    fcfg = FeatureConfig(fields=("responsibility",), min_df=1)
    vec = TextVectorizer(fcfg).fit(td.frame)
    cfg = CandidateConfig("lr", "salary", "logreg", {"C": 1.0, "class_weight": "balanced"})
    _, rep = published_calibrator(cfg, vec, td, fcfg, rounds=None, device="cpu")
    bt = rep["backtest"]["rules"]
    assert "none" in bt and list(PRIOR_RULES)[0] == "none"
    score = {r: max(m["ece"], m["mix_error"]) for r, m in bt.items()}
    assert score[rep["prior_rule"]] == min(score.values())


# -- the refit bundle -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(demo_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    hist, rates = load_history(demo_store), rates_by_run(demo_store)
    report = train_from_history(
        hist, rates, root / "published", candidates=LINEAR, device="cpu", keep_heldout=root / "heldout"
    )
    return report, build_dataset(hist, rates)


def test_the_published_bundle_is_fitted_on_every_labelled_row(trained):
    report, ds = trained
    pub, held = load_bundle(report.bundle_dir), load_bundle(report.heldout_dir)
    assert report.refit and pub.version == held.version
    fits = pub.metadata["metrics"]["fits"]
    for task in ("salary", "demand"):
        td = ds.tasks[task]
        sizes = {p: int((td.frame["part"] == p).sum()) for p in ("train", "val", "test")}
        f = fits[task]
        assert f["published"]["rows"] == sum(sizes.values())
        assert {p: f["measured"]["parts"][p]["rows"] for p in sizes} == sizes
        # the models themselves: the held-out one saw the training split, the published one all three
        dropout = 2 if pub.models[task].config.field_dropout else 1
        assert pub.models[task].info["train_rows"] == dropout * sum(sizes.values())
        assert held.models[task].info["train_rows"] == dropout * sizes["train"]
    card = (report.bundle_dir / "model_card.md").read_text()
    assert "## Fits" in card and "measured (held-out fit)" in card and "published (this bundle)" in card
    assert f"refitted on train+val+test, {fits['salary']['published']['rows']} rows" in card
    assert "prior rule" in card


def test_training_ids_hold_every_row_the_published_fit_saw(trained):
    report, ds = trained
    pub, held = load_bundle(report.bundle_dir), load_bundle(report.heldout_dir)
    test_ids = set(ds.tasks["salary"].part("test")["id"].astype(str))
    assert pub.training_overlap(test_ids) == (len(test_ids), len(test_ids))
    # the held-out fit saw the salary test rows only where the demand task trains on them
    from hhpulse.flows.workflow import fitted_ids

    held_ids, window = set().union(*fitted_ids(ds).values()), set().union(*window_ids(ds).values())
    assert held.training_overlap(test_ids)[0] == len(test_ids & held_ids) < len(test_ids)
    assert pub.training_overlap(window) == (len(window), len(window))


def test_the_metrics_keep_the_held_out_figures(trained):
    report, ds = trained
    pub = json.loads((report.bundle_dir / "metrics.json").read_text())
    held = json.loads((report.heldout_dir / "metrics.json").read_text())
    for task in ("salary", "demand"):
        assert pub[task] == held[task]  # every candidate's figures: the held-out fit's
        assert pub["calibration"][task] == held["calibration"][task]
        for name, c in pub[task]["candidates"].items():
            assert {"val", "val_resp", "test", "test_resp"} <= set(c["metrics"]), name
            assert c["selection_score"] is not None
        assert pub[task]["selection"]["rule"] == "both"
    assert set(pub["published_calibration"]) == {"salary", "demand"}
    # the held-out bundle's test figures are what evaluate_bundle measures again (the gate's view)
    measured = evaluate_bundle(load_bundle(report.heldout_dir), ds, "test")
    win = held["salary"]["winner"]
    assert measured["salary"]["roc_auc_ovo"] == pytest.approx(
        held["salary"]["candidates"][win]["metrics"]["test"]["roc_auc_ovo"], abs=0.02
    )


def test_the_held_out_fit_predicts_the_published_calibrator_s_validation_slice(trained):
    """The validation rows are predicted by the held-out fit (the fit on train, with its own
    vectorizer) instead of a second fit on the same rows; the test rows by a fit on train + val."""
    from hhpulse.model.calibration import summary

    report, ds = trained
    pub, held = load_bundle(report.bundle_dir), load_bundle(report.heldout_dir)
    for task in ("salary", "demand"):
        rep = pub.metadata["metrics"]["published_calibration"][task]
        assert "val (" in rep["fitted_on"] and "by the held-out fit" in rep["fitted_on"]
        assert "by a fit on every older row" in rep["fitted_on"].split("test (", 1)[1]
        va = ds.tasks[task].part("val")
        raw = held.predict_proba(va.to_dict("records"), calibrated=False)[task]
        before = summary(classification_metrics(va["label"].tolist(), raw, held.cohorts[task]))
        assert rep["slices"]["val"]["before"] == before


def test_no_refit_writes_the_held_out_fit(demo_store, tmp_path):
    report = train_from_history(
        load_history(demo_store),
        rates_by_run(demo_store),
        tmp_path / "b",
        candidates=LINEAR,
        device="cpu",
        refit=False,
    )
    metrics = json.loads((report.bundle_dir / "metrics.json").read_text())
    assert not report.refit and "fits" not in metrics
    assert "holds the held-out fit" in (report.bundle_dir / "model_card.md").read_text()


def test_the_gate_scores_the_held_out_bundle_and_the_refit_is_published_after_it(demo_store, tmp_path):
    """pipeline_steps: build_and_gate measures the held-out fit on the test rows; refit_published
    then writes the bundle to publish, with the same version and every row in training_ids."""
    from hhpulse.flows.pipeline_steps import build_and_gate, evaluate_all, refit_published
    from hhpulse.model.features import TextVectorizer
    from hhpulse.model.train import featurize, fit_on

    hist, rates = load_history(demo_store), rates_by_run(demo_store)
    ds = build_dataset(hist, rates)
    vec, sets = featurize(ds)
    feats = tmp_path / "features"
    vec.save(feats / "vectorizer")
    paths = []
    from hhpulse.config import baseline_candidate

    for task, fs in sets.items():
        fs.save(feats / task)
        for cfg in [c for c in LINEAR if c.task == task] + [baseline_candidate(task)]:
            p = tmp_path / "models" / cfg.name
            fit_on(fs, cfg, device="cpu").save(p)
            paths.append(str(p))
    store = str(tmp_path / "store")
    ev = evaluate_all(store, "", ds, str(feats), paths, "roc_auc_ovo")
    assert ev["results"]["salary"]["selection"]["rule"] == "both"
    out = build_and_gate(
        store, "", ds, str(feats), ev["results"], paths, str(tmp_path / "heldout"), 0.0, "roc_auc_ovo"
    )
    held = load_bundle(tmp_path / "heldout")
    assert out["challenger_test"]["salary"] == pytest.approx(
        evaluate_bundle(held, ds, "test")["salary"]["roc_auc_ovo"]
    )
    test_ids = ds.tasks["salary"].part("test")["id"].astype(str)
    assert held.training_overlap(test_ids)[0] < len(set(test_ids))  # the gate scored the held-out fit
    refit = refit_published(store, "", ds, str(tmp_path / "heldout"), str(tmp_path / "published"), "cpu")
    pub = load_bundle(tmp_path / "published")
    assert refit["version"] == out["version"] == pub.version
    assert refit["rows"]["salary"] == len(
        ds.tasks["salary"].frame[ds.tasks["salary"].frame["part"] != "pending"]
    )
    assert pub.training_overlap(test_ids)[0] == len(set(test_ids))
    assert isinstance(TextVectorizer.load(tmp_path / "published" / "vectorizer"), TextVectorizer)

    # the next gate weighs what the champion served: its served log's rows whose demand outcome
    # the dataset holds, less the rows either model was fitted on (here the held-out fit is the
    # champion, fitted on train and validation, as the new challenger is)
    from hhpulse.data.store import LocalStore
    from hhpulse.flows.pipeline_steps import publish_gated
    from hhpulse.model.evaluate import classification_metrics
    from hhpulse.watch.served import ServedLogWriter, make_record

    publish_gated(store, "", str(tmp_path / "heldout"))
    demand = ds.tasks["demand"].frame
    inst = [
        {"responsibility": r, "id": str(i)}
        for i, r in zip(demand["id"], demand["responsibility"], strict=True)
    ]
    served = held.predict(inst)
    with ServedLogWriter(LocalStore(store)) as w:
        w.add(
            [
                make_record(
                    time="2026-03-01T10:00:00Z",
                    model_version=held.version,
                    request_id="r",
                    instance=i,
                    prediction=p,
                )
                for i, p in zip(inst, served, strict=True)
            ]
        )
    ds.summary["demand_proxy"] = False  # the labels stand in for resolved outcomes
    again = build_and_gate(
        store, "", ds, str(feats), ev["results"], paths, str(tmp_path / "heldout2"), 0.0, "roc_auc_ovo"
    )
    fresh = demand["part"].isin(["test", "pending"]).to_numpy()
    live = again["live"]["demand"]
    assert live["rows"] == fresh.sum() >= 100 and live["left_out"] == (~fresh).sum()
    classes = held.cohorts["demand"]
    proba = np.array([[p["demand"]["probabilities"][c] for c in classes] for p in served])[fresh]
    assert live["champion"] == pytest.approx(
        classification_metrics(demand["label"][fresh].tolist(), proba, classes)["roc_auc_ovo"], abs=1e-6
    )
    assert again["young"]["champion_labels"] == 0  # the champion learned demand from the age proxy
    stored = LocalStore(store).get_json(f"gates/{again['version']}.json")
    assert stored["live"] == again["live"] and any(
        line.startswith("demand live:") for line in stored["lines"]
    )


def test_a_dataset_without_old_enough_rows_leaves_the_published_fit_uncalibrated():
    from hhpulse.model.features import TextVectorizer

    td = _drifting_task({"train": 0.0, "val": 0.5, "test": 0.5}, n=60)
    fcfg = FeatureConfig(fields=("responsibility",), min_df=1)
    vec = TextVectorizer(fcfg).fit(td.frame)
    cal, rep = published_calibrator(
        CandidateConfig("lr", "salary", "logreg", {}), vec, td, fcfg, rounds=None, device="cpu"
    )
    # the training slice holds one cohort: the validation slice cannot be predicted out of fold
    assert set(rep["slices"]) == {"test"} and "backtest" not in rep
