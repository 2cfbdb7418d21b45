"""The TF-IDF + logistic regression baseline every task trains: it wins when no candidate
ranks at least as well on validation, and the winner never ranks below it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from hhpulse.config import CandidateConfig, ConfigError, baseline_candidate, load_candidates
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.model.train import FeatureSet, select_winner, train_task

CLASSES = ["a", "b", "c"]
# one boosting round of depth-1 stumps: it can read one term per cohort, where the signal is
# spread thin over many terms, so it ranks worse than a logistic regression over all of them
# one split on one TF-IDF term: weaker than the baseline by construction (on the dense input, a
# single split on the text model's score is not)
STUMP = {
    "max_depth": 1,
    "n_estimators": 1,
    "learning_rate": 0.3,
    "early_stopping_rounds": 1,
    "input": "tfidf",
}


def _rows(rng: np.random.Generator, n: int) -> tuple[sp.csr_matrix, list[str]]:
    """n rows over 60 terms; every cohort raises the rate of its own 20 terms a little."""
    y = rng.integers(0, 3, n)
    rates = np.full((n, 60), 0.10)
    for k in range(3):
        rates[y == k, 20 * k : 20 * (k + 1)] = 0.16
    X = (rng.random((n, 60)) < rates).astype(float)
    return sp.csr_matrix(X), [CLASSES[k] for k in y]


def _feature_set(seed: int = 0, n_train: int = 600, dropout: bool = True) -> FeatureSet:
    """A task's matrices as featurize() lays them out; with ``dropout``, the training rows are
    followed by copies of them that lost half their terms (as responsibility-only rows do)."""
    rng = np.random.default_rng(seed)
    X_tr, y_tr = _rows(rng, n_train)
    rows = None
    if dropout:
        rows = n_train
        X_tr = sp.csr_matrix(sp.vstack([X_tr, X_tr.multiply(rng.random(X_tr.shape) < 0.5)]))
        y_tr = y_tr + y_tr
    parts = {"val": _rows(rng, 400), "test": _rows(rng, 400)}
    parts["test_resp"] = parts["test"]
    return FeatureSet(
        "salary",
        CLASSES,
        {"train": X_tr, **{p: x for p, (x, _) in parts.items()}},
        {"train": y_tr, **{p: y for p, (_, y) in parts.items()}},
        rows,
    )


def _val(res, name: str) -> float:
    return res.candidates[name]["metrics"]["val"]["roc_auc_ovo"]


def test_the_baseline_is_trained_and_wins_when_the_candidates_rank_worse():
    fs = _feature_set()
    res, trained = train_task(fs, [CandidateConfig("salary-stump", "salary", "xgboost", STUMP)], device="cpu")
    base = baseline_candidate("salary").name
    assert res.baseline == base and set(res.candidates) == {"salary-stump", base}
    assert _val(res, base) > _val(res, "salary-stump") + 0.05  # the construction holds
    assert res.winner == base
    # plain TF-IDF + logistic regression on the rows as they are: no field-dropout copies, no class weights
    assert trained[base].info["train_rows"] == 600 and trained["salary-stump"].info["train_rows"] == 1200
    assert trained[base].config.kind == "logreg" and trained[base].config.params["class_weight"] == "none"
    assert trained[base].predict_proba(fs.X["test"]).shape == (400, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "candidates",
    [
        [CandidateConfig("salary-stump", "salary", "xgboost", STUMP)],
        [CandidateConfig("salary-lr", "salary", "logreg", {"C": 1.0})],
        [
            CandidateConfig("salary-lr-weak", "salary", "logreg", {"C": 0.01}),
            CandidateConfig("salary-xgb", "salary", "xgboost", {"max_depth": 2, "n_estimators": 30}),
        ],
    ],
    ids=["stump", "logreg", "two"],
)
def test_the_winner_never_ranks_below_the_baseline_on_validation(seed, candidates):
    res, _ = train_task(_feature_set(seed), candidates, device="cpu")
    assert res.baseline in res.candidates
    assert _val(res, res.winner) >= _val(res, res.baseline)
    assert _val(res, res.winner) == max(_val(res, n) for n in res.candidates)


def test_a_candidate_that_ties_the_baseline_keeps_the_win():
    """Same model as the baseline, so the same validation AUC: the configured candidate wins."""
    twin = CandidateConfig(
        "salary-twin", "salary", "logreg", dict(baseline_candidate("salary").params), field_dropout=False
    )
    res, _ = train_task(_feature_set(), [twin], device="cpu")
    assert _val(res, "salary-twin") == _val(res, res.baseline)
    assert res.winner == "salary-twin"


def test_select_winner_ranks_the_baseline_last_on_ties_and_needs_it():
    def m(v):
        return {"kind": "logreg", "info": {}, "metrics": {"val": {"roc_auc_ovo": v}}}

    assert (
        select_winner("salary", {"a": m(0.7), "salary-baseline": m(0.7)}, baseline="salary-baseline").winner
        == "a"
    )
    assert (
        select_winner("salary", {"z": m(0.7), "salary-baseline": m(0.7)}, baseline="salary-baseline").winner
        == "z"
    )
    res = select_winner("salary", {"a": m(0.69), "salary-baseline": m(0.7)}, baseline="salary-baseline")
    assert res.winner == "salary-baseline" and res.baseline == "salary-baseline"
    with pytest.raises(ValueError, match="baseline 'salary-baseline' was not trained"):
        select_winner("salary", {"a": m(0.7)}, baseline="salary-baseline")


def test_training_rows_without_the_dropout_copies_survive_save_and_load(tmp_path):
    fs = _feature_set(n_train=50)
    fs.save(tmp_path / "fs")
    back = FeatureSet.load(tmp_path / "fs")
    X, y = back.training(field_dropout=False)
    assert back.train_rows == 50 and X.shape[0] == 50 and y == fs.y["train"][:50]
    assert abs(X - fs.X["train"][:50]).sum() == 0
    X_all, y_all = back.training()
    assert X_all.shape[0] == 100 and len(y_all) == 100
    plain = _feature_set(n_train=50, dropout=False)
    assert plain.training(field_dropout=False)[0].shape[0] == 50  # no copies: every row


def test_candidate_config_round_trip_and_reserved_names(tmp_path):
    c = baseline_candidate("demand")
    assert CandidateConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c and not c.field_dropout
    assert CandidateConfig.from_dict({"name": "x", "task": "salary", "kind": "logreg"}).field_dropout is True
    with pytest.raises(ConfigError, match="field_dropout"):
        CandidateConfig("x", "salary", "logreg", field_dropout="no")  # type: ignore[arg-type]
    p = tmp_path / "c.json"
    p.write_text(
        json.dumps({"candidates": [{"name": "salary-baseline", "task": "salary", "kind": "logreg"}]})
    )
    with pytest.raises(ConfigError, match="reserved for the TF-IDF"):
        load_candidates(p)


@pytest.fixture(scope="module")
def baseline_bundle(demo_store, tmp_path_factory):
    """A bundle whose winners are the baselines: the only candidates are single stumps."""
    store = demo_store
    out = tmp_path_factory.mktemp("b") / "bundle"
    stumps = [CandidateConfig(f"{t}-stump", t, "xgboost", STUMP) for t in ("salary", "demand")]
    report = train_from_history(
        load_history(store), rates_by_run(store), out, candidates=stumps, device="cpu"
    )
    return out, report, load_history(store)


def test_a_baseline_winner_goes_through_the_bundle_calibration_and_explain(baseline_bundle):
    out, report, hist = baseline_bundle
    res = report.results["salary"]
    assert res.winner == "salary-baseline", {n: _val(res, n) for n in res.candidates}
    b = load_bundle(out)
    assert b.models["salary"].config == baseline_candidate("salary")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["salary"]["baseline"] == "salary-baseline"
        and metrics["salary"]["winner"] == "salary-baseline"
    )
    assert "salary" in metrics["calibration"]
    assert (out / "salary" / "calibration.json").is_file()
    card = (out / "model_card.md").read_text()
    assert "baseline salary-baseline (TF-IDF + logistic regression" in card
    assert "no candidate had a selection score at least as high, so the baseline is the winner" in card
    texts = [
        {"responsibility": r, "name": n, "requirement": q}
        for r, n, q in hist[["responsibility", "name", "requirement"]].head(10).itertuples(index=False)
        if r
    ]
    served = b.predict_proba(texts)["salary"]
    for i, ex in enumerate(b.explain(texts, top=3)):
        e = ex["salary"]
        assert e["method"].startswith("coefficient x TF-IDF value")
        parts = e["bias"] + sum(t["contribution"] for t in e["toward"] + e["away"]) + e["rest"]
        assert parts == pytest.approx(e["logit"], abs=1e-4)
        assert e["cohort"] == b.cohorts["salary"][int(np.argmax(served[i]))]
