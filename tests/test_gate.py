"""The gate's evidence: the paired bootstrap, its vectorised metrics, and the verdict it drives."""

from __future__ import annotations

import numpy as np
import pytest

from hhpulse.flows.workflow import compare, gate_verdict
from hhpulse.model.evaluate import PRIMARY_METRICS, classification_metrics
from hhpulse.model.gate import (
    GateEvidenceError,
    TaskPredictions,
    fitted_mask,
    metric_samples,
    paired_bootstrap,
    paired_evidence,
    stratified_counts,
)

CLASSES = ["high", "low", "medium"]


def _data(n: int, seed: int, skill: float = 1.0, k: int = 3) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [CLASSES[i] for i in y], np.round(p, 2)  # rounding makes ties, as real scores have


@pytest.mark.parametrize("metric", PRIMARY_METRICS)
@pytest.mark.parametrize("k", [2, 3])
def test_vectorised_metrics_equal_sklearns_on_the_rows_and_on_a_resample(metric, k):
    labels, p = _data(300, 1, k=k)
    classes = CLASSES[:k]
    yi = np.array([classes.index(v) for v in labels])
    counts = stratified_counts(yi, 3, seed=5)
    got = metric_samples(metric, yi, p, np.vstack([np.ones(len(yi)), counts]))
    assert got[0] == pytest.approx(classification_metrics(labels, p, classes)[metric], abs=1e-12)
    for r in range(3):  # a resample with counts is the same as its rows repeated
        rows = np.repeat(np.arange(len(yi)), counts[r].astype(int))
        want = classification_metrics([labels[i] for i in rows], p[rows], classes)[metric]
        assert got[r + 1] == pytest.approx(want, abs=1e-12)


def test_stratified_resamples_keep_every_cohorts_count_and_are_seeded():
    y = np.array([0] * 5 + [1] * 40 + [2] * 100)
    c = stratified_counts(y, 200, seed=3)
    assert (c[:, y == 0].sum(axis=1) == 5).all() and (c[:, y == 2].sum(axis=1) == 100).all()
    assert (c == stratified_counts(y, 200, seed=3)).all() and not (
        c == stratified_counts(y, 200, seed=4)
    ).all()


def test_a_noise_gain_has_an_interval_across_zero_and_a_real_gain_clears_it():
    labels, champ = _data(400, 2, skill=1.0)
    rng = np.random.default_rng(9)
    noisy = np.clip(champ + rng.normal(0, 0.01, champ.shape), 0, None)
    noisy /= noisy.sum(axis=1, keepdims=True)
    same = paired_bootstrap(labels, noisy, champ, CLASSES)
    assert same.low < 0 < same.high and abs(same.delta) < 0.01
    assert same.rows == 400 and same.resamples == 1000 and same.confidence == 0.95
    assert paired_bootstrap(labels, noisy, champ, CLASSES).to_dict() == same.to_dict()  # seeded
    yi = np.array([CLASSES.index(v) for v in labels])
    better = champ.copy()
    better[np.arange(len(yi)), yi] += 0.3
    better /= better.sum(axis=1, keepdims=True)
    gain = paired_bootstrap(labels, better, champ, CLASSES)
    assert gain.low > 0.02 and gain.delta > gain.low
    # identical models: a tie, exactly zero
    tie = paired_bootstrap(labels, champ, champ, CLASSES)
    assert tie.delta == tie.low == tie.high == 0.0


def test_bad_inputs_are_clear_errors():
    labels, p = _data(50, 3)
    with pytest.raises(GateEvidenceError, match="fewer than two cohorts"):
        paired_bootstrap(["high"] * 50, p, p, CLASSES)
    with pytest.raises(GateEvidenceError, match="not among the cohorts"):
        paired_bootstrap(["nope"] * 50, p, p, CLASSES)
    with pytest.raises(GateEvidenceError, match="shape"):
        paired_bootstrap(labels, p[:10], p, CLASSES)
    with pytest.raises(GateEvidenceError, match="no bootstrap"):
        paired_bootstrap(labels, p, p, CLASSES, "r2")


def test_paired_evidence_leaves_out_the_rows_the_champion_was_fitted_on(tmp_path):
    from hhpulse.model.bundle import write_training_ids

    labels, champ = _data(200, 4)
    ids = [str(1000 + i) for i in range(200)]
    write_training_ids(tmp_path, ids[:50])
    mask = fitted_mask(tmp_path, ids)
    assert mask is not None and mask[:50].all() and not mask[50:].any()
    assert fitted_mask(tmp_path / "none", ids) is None  # an old bundle without training ids
    chal = {"demand": TaskPredictions(ids, labels, champ, CLASSES)}
    ev = paired_evidence(
        chal, {"demand": TaskPredictions(ids, labels, champ, CLASSES)}, {"demand": mask}, "roc_auc_ovo"
    )
    assert ev["demand"].rows == 150 and ev["demand"].left_out == 50
    assert "50 the champion was fitted on left out" in ev["demand"].line()
    ev = paired_evidence(chal, chal, {"demand": np.ones(200, dtype=bool)}, "roc_auc_ovo")
    assert ev["demand"] == "all 200 test rows were in the champion's fit"


def _evidence(delta: float, low: float, high: float):
    labels, p = _data(100, 6)
    iv = paired_bootstrap(labels, p, p, CLASSES)
    iv.delta, iv.low, iv.high = delta, low, high
    iv.samples = np.linspace(low, high, iv.resamples)
    return iv


def test_the_gate_replaces_only_when_the_lower_bound_clears_the_margin():
    champ = {"salary": {"roc_auc_ovo": 0.70}, "demand": {"roc_auc_ovo": 0.60}}
    chal = {"salary": {"roc_auc_ovo": 0.7015}, "demand": {"roc_auc_ovo": 0.6015}}
    noise = {"salary": _evidence(0.0015, -0.01, 0.013), "demand": _evidence(0.0015, -0.02, 0.023)}
    v = compare(chal, champ, evidence=noise)
    assert not v["challenger_wins"] and v["rule"] == "paired bootstrap"
    assert v["reason"].startswith("champion stays: mean roc_auc_ovo change +0.0015 [95% CI")
    assert "a tie keeps the champion" in v["reason"]
    assert v["tasks"]["salary"]["interval"]["low"] == -0.01
    assert all(len(line) < 160 for line in v["lines"]) and len(v["lines"]) == 3
    clear = {"salary": _evidence(0.03, 0.01, 0.05), "demand": _evidence(0.02, 0.005, 0.035)}
    v = compare(chal, champ, evidence=clear)
    assert v["challenger_wins"] and "lower bound above the margin 0" in v["reason"]
    assert not compare(chal, champ, margin=0.02, evidence=clear)["challenger_wins"]
    # clearly worse on one task: the other's gain does not carry it
    mixed = {"salary": _evidence(0.08, 0.06, 0.1), "demand": _evidence(-0.02, -0.03, -0.01)}
    v = compare(chal, champ, evidence=mixed)
    assert not v["challenger_wins"] and "clearly worse on demand" in v["reason"]
    # a task the champion was measured on, without a paired comparison now, blocks
    v = compare(
        chal,
        champ,
        evidence={"salary": clear["salary"], "demand": "all 80 test rows were in the champion's fit"},
        champion_was_measured={"demand": True},
    )
    assert not v["challenger_wins"] and v["tasks"]["demand"]["status"] == "blocks"
    # calibration still refuses; the verdict says both on short lines
    cal = {t: {**m, "ece": 0.2} for t, m in chal.items()}
    v = gate_verdict(cal, {t: {**m, "ece": 0.01} for t, m in champ.items()}, evidence=clear)
    assert not v["challenger_wins"] and v["lines"][1].startswith("ranking alone: challenger wins")


def test_fitted_rows_are_per_task(tmp_path):
    """A vacancy the champion fitted as a salary row, whose demand label resolved later, is a
    fair demand row: only the task's own fitted rows are left out of that task's comparison."""
    from hhpulse.model.bundle import write_training_ids
    from hhpulse.model.gate import fitted_mask

    write_training_ids(tmp_path, {"salary": ["a", "b"], "demand": ["b"]})
    ids = ["a", "b", "c"]
    assert fitted_mask(tmp_path, ids, "salary").tolist() == [True, True, False]
    assert fitted_mask(tmp_path, ids, "demand").tolist() == [False, True, False]
    assert fitted_mask(tmp_path, ids).tolist() == [True, True, False]  # every task's rows
    # a bundle from before per-task ids: every task's rows, whatever the task
    write_training_ids(tmp_path, ["a"])
    assert fitted_mask(tmp_path, ids, "demand").tolist() == [True, False, False]


# -- the live rule: what the champion served, and its age ----------------------------------------
def test_live_evidence_scores_the_challenger_on_what_the_champion_served_and_leaves_out_its_own_fit(tmp_path):
    from hhpulse.model.bundle import write_training_ids
    from hhpulse.model.gate import ServedOutcomes, live_evidence

    labels, served = _data(300, 7, skill=0.5)
    _, better = _data(300, 7, skill=2.0)  # same labels (same seed), sharper scores
    ids = [f"v{i}" for i in range(300)]
    outcomes = ServedOutcomes(
        "champ-1", {"demand": TaskPredictions(ids, labels, served, CLASSES)}, {"demand": []}
    )
    write_training_ids(tmp_path, {"demand": ids[:60]})
    fitted = {"demand": fitted_mask(tmp_path, ids, "demand")}
    ev = live_evidence(outcomes, {"demand": better}, fitted, "roc_auc_ovo")["demand"]
    assert ev.rows == 240 and ev.left_out == 60 and ev.low > 0  # the rows it was fitted on are left out
    assert ev.champion == pytest.approx(
        classification_metrics([labels[i] for i in range(60, 300)], served[60:], CLASSES)["roc_auc_ovo"]
    )
    few = live_evidence(outcomes, {"demand": better}, fitted, "roc_auc_ovo", min_rows=241)["demand"]
    assert few == "240 resolved served rows of champ-1 not fitted on (fewer than 241)"


def test_the_live_rule_replaces_a_champion_whose_live_figure_falls_below_the_challengers():
    from hhpulse.flows.workflow import LiveRule

    champ = {"salary": {"roc_auc_ovo": 0.70}, "demand": {"roc_auc_ovo": 0.60}}
    chal = {"salary": {"roc_auc_ovo": 0.7015}, "demand": {"roc_auc_ovo": 0.6015}}
    tie = {"salary": _evidence(0.0015, -0.01, 0.013), "demand": _evidence(0.0015, -0.02, 0.023)}
    # the test rows cannot tell; what the champion served can
    live = {"demand": _evidence(0.03, 0.012, 0.05)}
    v = compare(chal, champ, evidence=tie, live=live, young={"champion": None, "challenger": None})
    assert v["challenger_wins"] and v["reason"].startswith(
        "challenger wins on live evidence: on 100 resolved rows"
    )
    assert v["rule"] == "paired bootstrap and live evidence" and v["live"]["demand"]["low"] == 0.012
    assert any(line.startswith("demand live: +0.0300") for line in v["lines"])
    # a live gain on too few rows is not weighed
    v = compare(chal, champ, evidence=tie, live=live, live_rule=LiveRule(min_rows=101))
    assert not v["challenger_wins"] and "a tie keeps the champion" in v["reason"]
    # clearly worse on what the champion served: it stays, whatever the test rows say
    clear = {"salary": _evidence(0.03, 0.01, 0.05), "demand": _evidence(0.02, 0.005, 0.035)}
    v = compare(chal, champ, evidence=clear, live={"demand": _evidence(-0.03, -0.05, -0.01)})
    assert (
        not v["challenger_wins"] and "clearly worse on what the champion served (demand live)" in v["reason"]
    )
    # without live evidence the rule is the bootstrap's
    v = compare(chal, champ, evidence=tie, live={"demand": "no resolved served rows of the champion"})
    assert not v["challenger_wins"] and "demand live: not weighed (no resolved served rows" in "\n".join(
        v["lines"]
    )


def test_a_young_champions_tie_keeps_it_unless_the_rule_hands_ties_to_a_less_young_mature_or_any_challenger():
    from hhpulse.flows.workflow import LiveRule

    champ = {"salary": {"roc_auc_ovo": 0.70}, "demand": {"roc_auc_ovo": 0.90}}
    chal = {"salary": {"roc_auc_ovo": 0.7015}, "demand": {"roc_auc_ovo": 0.6015}}
    tie = {"salary": _evidence(0.0015, -0.01, 0.013), "demand": _evidence(0.0015, -0.02, 0.023)}
    young = {"champion": "the settled window did not hold every demand cohort", "challenger": None}
    both = {**young, "challenger": "the settled window did not hold every demand cohort"}
    # the default ("champion"): a tie keeps it, young or not; only evidence replaces it
    assert LiveRule().young_tie == "champion"
    v = compare(chal, champ, evidence=tie, live={}, young=young)
    assert not v["challenger_wins"] and "a tie keeps the champion" in v["reason"]
    assert "the champion was published on a young history: the settled window" in v["lines"][-1]
    # "mature": a challenger trained on a history that is not young takes over on a tie
    mature = LiveRule(young_tie="mature")
    v = compare(chal, champ, evidence=tie, live={}, young=young, live_rule=mature)
    assert v["challenger_wins"] and "the champion was published on a young history" in v["reason"]
    assert "goes to the challenger trained on a history that is not young" in v["reason"]
    assert not compare(chal, champ, evidence=tie, live={}, young=both, live_rule=mature)["challenger_wins"]
    # a tie only: a negative mean point change keeps it, and so does a clearly worse task
    down = {"salary": _evidence(-0.002, -0.01, 0.01), "demand": _evidence(-0.001, -0.02, 0.02)}
    assert not compare(chal, champ, evidence=down, live={}, young=young, live_rule=mature)["challenger_wins"]
    worse = {"salary": _evidence(0.02, 0.01, 0.03), "demand": _evidence(-0.03, -0.05, -0.01)}
    assert not compare(chal, champ, evidence=worse, live={}, young=young, live_rule=mature)["challenger_wins"]
    # and a negative live point change on what the champion served
    dim = {"demand": _evidence(-0.01, -0.04, 0.02)}
    assert not compare(chal, champ, evidence=tie, live=dim, young=young, live_rule=mature)["challenger_wins"]
    # "challenger": any fresher challenger takes a young champion's tie
    fresh = LiveRule(young_tie="challenger")
    v = compare(chal, champ, evidence=tie, live={}, young=both, live_rule=fresh)
    assert v["challenger_wins"] and "goes to the challenger trained on newer data" in v["reason"]
    # a mature champion keeps the bootstrap's tie rule
    assert not compare(chal, champ, evidence=tie, live={}, young={"champion": None})["challenger_wins"]
    # "less-young": a tie goes to a challenger whose history is less young (young_level), so an
    # age-proxy champion gives way to a challenger trained on resolved closes, young or not
    less = LiveRule(young_tie="less-young")
    proxy = {"champion": "demand on the age proxy", "champion_level": 2}
    v = compare(
        chal, champ, evidence=tie, live={}, young={**both, **proxy, "challenger_level": 1}, live_rule=less
    )
    assert v["challenger_wins"] and "goes to the challenger trained on a less young history" in v["reason"]
    v = compare(
        chal, champ, evidence=tie, live={}, young={**young, **proxy, "challenger_level": 0}, live_rule=less
    )
    assert v["challenger_wins"] and "on a history that is not young" in v["reason"]
    # as young as the champion (or no level known): the tie keeps it
    same = {**both, "champion_level": 1, "challenger_level": 1}
    assert not compare(chal, champ, evidence=tie, live={}, young=same, live_rule=less)["challenger_wins"]
    assert not compare(chal, champ, evidence=tie, live={}, young=both, live_rule=less)["challenger_wins"]
    # and a tie only: a negative mean point change keeps the age-proxy champion
    down_young = {**both, **proxy, "challenger_level": 1}
    assert not compare(chal, champ, evidence=down, live={}, young=down_young, live_rule=less)[
        "challenger_wins"
    ]
    with pytest.raises(ValueError, match="young_tie"):
        LiveRule(young_tie="sometimes")


def test_metric_interval_brackets_the_figure_and_narrows_with_rows():
    from hhpulse.model.gate import metric_interval

    small = metric_interval(*_data(80, 3), CLASSES)
    big = metric_interval(*_data(2000, 3), CLASSES)
    for iv in (small, big):
        assert iv["low"] <= iv["value"] <= iv["high"] and iv["confidence"] == 0.95
    assert big["high"] - big["low"] < (small["high"] - small["low"]) / 2
    assert metric_interval(["high"] * 10, np.full((10, 3), 1 / 3), CLASSES) is None  # one cohort
