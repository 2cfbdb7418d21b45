"""Calibration: metrics on hand-made cases, fitting, prior shift, and the calibrator in the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hhpulse.config import CandidateConfig
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import train_from_history
from hhpulse.model.bundle import BundleError, load_bundle, write_manifest
from hhpulse.model.calibration import (
    CalibrationError,
    Calibrator,
    em_priors,
    fit_calibrator,
    shift_priors,
    softmax,
)
from hhpulse.model.evaluate import brier_score, classification_metrics, cohort_mix

CLASSES = ["a", "b", "c"]


# -- metrics on hand-made cases -----------------------------------------------------------
def test_top_label_ece_by_hand():
    # four rows at confidence 0.8 (3 right) and two at 0.4 (1 right):
    # ECE = 4/6 * |0.8 - 0.75| + 2/6 * |0.4 - 0.5| = 0.0333... + 0.0333...
    p = np.array([[0.8, 0.1, 0.1]] * 4 + [[0.4, 0.3, 0.3]] * 2)
    y = ["a", "a", "a", "b", "a", "c"]
    m = classification_metrics(y, p, CLASSES)
    assert m["ece"] == pytest.approx(4 / 6 * 0.05 + 2 / 6 * 0.1)
    assert m["mean_confidence"] == pytest.approx((4 * 0.8 + 2 * 0.4) / 6)
    perfect = classification_metrics(["a", "b"], np.array([[1.0, 0, 0], [0, 1.0, 0]]), CLASSES)
    assert perfect["ece"] == pytest.approx(0.0) and perfect["brier"] == pytest.approx(0.0)


def test_brier_and_mix_by_hand():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    yi = np.array([0, 2])
    # row 1: 0.25 + 0.25 + 0; row 2: 0.04 + 0.04 + 0.16
    assert brier_score(yi, p) == pytest.approx((0.5 + 0.24) / 2)
    mix = cohort_mix(yi, p, CLASSES)
    assert mix["predicted"] == pytest.approx({"a": 0.35, "b": 0.35, "c": 0.3})
    assert mix["true"] == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.5})
    assert mix["max_abs_error"] == pytest.approx(0.35)


# -- fitting --------------------------------------------------------------------------------
def _sample(n, z, rng):
    true = softmax(z)
    return [CLASSES[rng.choice(3, p=row)] for row in true]


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 1.5
    y = _sample(4000, z, rng)
    over = softmax(2.5 * z)  # the model is 2.5x too sure of itself
    cal = fit_calibrator(y[:2000], over[:2000], CLASSES, method="temperature")
    assert cal.temperature == pytest.approx(2.5, rel=0.1)
    before = classification_metrics(y[2000:], over[2000:], CLASSES)
    after = classification_metrics(y[2000:], cal.apply(over[2000:]), CLASSES)
    assert after["ece"] < 0.03 < before["ece"]
    assert after["log_loss"] < before["log_loss"] and after["brier"] < before["brier"]
    # temperature alone never changes which cohort wins a row
    assert (cal.apply(over).argmax(1) == over.argmax(1)).all()


def test_auto_picks_the_bias_when_the_mix_is_off():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 3)) + np.array([1.5, 0.0, -1.0])  # true mix leans to "a"
    y = _sample(3000, z, rng)
    flat = softmax(z - np.array([1.5, 0.0, -1.0]))  # a model trained with balanced weights
    cal = fit_calibrator(y[:1500], flat[:1500], CLASSES)
    assert cal.method == "bias_temperature"
    assert set(cal.fitted_on["selection"]["log_loss"]) == {"none", "temperature", "bias_temperature"}
    before = classification_metrics(y[1500:], flat[1500:], CLASSES)["mix"]["max_abs_error"]
    after = classification_metrics(y[1500:], cal.apply(flat[1500:]), CLASSES)["mix"]["max_abs_error"]
    assert after < 0.03 < before
    assert sum(cal.priors.values()) == pytest.approx(1.0)


def test_a_calibrated_model_is_left_alone():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3000, 3))
    y = _sample(3000, z, rng)
    cal = fit_calibrator(y, softmax(z), CLASSES)
    assert cal.temperature == pytest.approx(1.0, abs=0.1)
    assert max(abs(b) for b in cal.bias) < 0.15


def test_unknown_labels_and_tiny_slices():
    with pytest.raises(CalibrationError, match="not among the cohorts"):
        fit_calibrator(["z"] * 30, np.full((30, 3), 1 / 3), CLASSES)
    cal = fit_calibrator(["a"] * 5, np.full((5, 3), 1 / 3), CLASSES)
    assert cal.method == "none" and cal.identity and "fewer than 20" in cal.fitted_on["note"]


# -- prior shift ---------------------------------------------------------------------------
def test_shift_priors_is_bayes_rule():
    p = np.array([[0.5, 0.25, 0.25]])
    q = shift_priors(p, [1 / 3, 1 / 3, 1 / 3], {"a": 0.2, "b": 0.4, "c": 0.4}, CLASSES)
    assert q[0] == pytest.approx(np.array([0.1, 0.1, 0.1]) / 0.3)
    with pytest.raises(CalibrationError, match="unknown cohorts"):
        shift_priors(p, [1, 1, 1], {"x": 1.0}, CLASSES)


def test_em_recovers_a_label_shift():
    """Calibrated posteriors on training priors (0.6, 0.3, 0.1), data drawn at (0.2, 0.3, 0.5)."""
    rng = np.random.default_rng(3)
    means = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    old, new = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.3, 0.5])
    yi = rng.choice(3, size=5000, p=new)
    x = means[yi] + rng.normal(size=(5000, 3))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    post = softmax(loglik + np.log(old))  # exact posteriors under the old priors
    adjusted, mix = em_priors(post, old, CLASSES, strength=0.0)
    assert [mix[c] for c in CLASSES] == pytest.approx(new, abs=0.03)
    assert np.abs(adjusted.mean(0) - new).max() < np.abs(post.mean(0) - new).max()
    # the Dirichlet prior pulls the estimate toward the old mix
    _, held = em_priors(post, old, CLASSES, strength=1.0)
    assert abs(held["a"] - 0.6) < abs(mix["a"] - 0.6)


# -- the calibrator as JSON and in the bundle ---------------------------------------------
def test_json_round_trip_and_refusals(tmp_path):
    cal = Calibrator(CLASSES, "bias_temperature", 1.7, [0.1, -0.2, 0.1], {"a": 0.5, "b": 0.3, "c": 0.2})
    cal.save(tmp_path)
    back = Calibrator.load(tmp_path, CLASSES)
    assert back.to_dict() == cal.to_dict()
    p = np.array([[0.7, 0.2, 0.1]])
    assert back.apply(p) == pytest.approx(cal.apply(p))
    with pytest.raises(CalibrationError, match="cohorts"):
        Calibrator.load(tmp_path, ["a", "b", "x"])
    for bad, msg in [
        ({"temperature": -1.0}, "positive"),
        ({"temperature": float("nan")}, "finite"),
        ({"bias": [0.0]}, "3 finite numbers"),
        ({"method": "magic"}, "unknown calibration method"),
        ({"format": "pickle"}, "not a calibrator"),
    ]:
        doc = {**cal.to_dict(), **bad}
        with pytest.raises(CalibrationError, match=msg):
            Calibrator.from_dict(json.loads(json.dumps(doc)))
    assert Calibrator.load(tmp_path / "none", CLASSES).identity  # bundles from before calibration


FAST = [
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig(
        "demand-xgb", "demand", "xgboost", {"max_depth": 3, "n_estimators": 20, "learning_rate": 0.3}
    ),
]


@pytest.fixture(scope="module")
def store(demo_store):
    return demo_store


@pytest.fixture(scope="module")
def bundle_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    train_from_history(load_history(store), rates_by_run(store), out, candidates=FAST, device="cpu")
    return out


def test_bundle_round_trip_uses_the_calibrator(bundle_dir):
    manifest = json.loads((bundle_dir / "MANIFEST.json").read_text())
    assert {"salary/calibration.json", "demand/calibration.json"} <= set(manifest["files"])
    b = load_bundle(bundle_dir)
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    for task in ("salary", "demand"):
        on_disk = Calibrator.load(bundle_dir / task, b.cohorts[task])
        assert b.calibrators[task].to_dict() == on_disk.to_dict()
        c = metrics["calibration"][task]  # the held-out fit's calibrator, measured on test
        assert c["fitted_on"]["part"] == "val"
        # the bundle holds the published refit, calibrated on time-ordered out-of-fold predictions
        pub = metrics["published_calibration"][task]
        assert pub["method"] == on_disk.method and on_disk.fitted_on["prior_rule"] == pub["prior_rule"]
        assert {"ece", "brier", "log_loss", "mix", "roc_auc_ovo"} <= set(c["test"]["after"])
    texts = ["Доставка заказов клиентам", "Руководство командой разработки"]
    raw = b.predict_proba(texts, calibrated=False)
    cal = b.predict_proba(texts)
    for task in ("salary", "demand"):
        assert cal[task] == pytest.approx(b.calibrators[task].apply(raw[task]))
    served = b.predict(texts)
    assert served[0]["salary"]["probabilities"] == pytest.approx(
        dict(zip(b.cohorts["salary"], cal["salary"][0], strict=True)), abs=1e-6
    )
    assert "calibrated" in (bundle_dir / "model_card.md").read_text()


def test_a_tampered_calibrator_is_refused(bundle_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    doc = json.loads((bad / "salary" / "calibration.json").read_text())
    doc["temperature"] = 0.01  # would make every answer near-certain
    (bad / "salary" / "calibration.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"salary/calibration.json does not match its sha256"):
        load_bundle(bad)
    doc["temperature"] = -1.0  # a consistent manifest does not make a bad calibrator load
    (bad / "salary" / "calibration.json").write_text(json.dumps(doc))
    write_manifest(bad, "v-bad")
    with pytest.raises(BundleError, match="bad calibrator.*positive"):
        load_bundle(bad)


# -- the gate ---------------------------------------------------------------------------------
def test_gate_refuses_a_worse_calibrated_challenger():
    from hhpulse.flows.workflow import calibration_gate, gate_verdict

    champ = {"salary": {"roc_auc_ovo": 0.70, "ece": 0.03}, "demand": {"roc_auc_ovo": 0.60, "ece": 0.02}}
    sharper = {"salary": {"roc_auc_ovo": 0.74, "ece": 0.09}, "demand": {"roc_auc_ovo": 0.62, "ece": 0.02}}
    v = gate_verdict(sharper, champ, margin=0.0, ece_margin=0.02)
    assert v["challenger_wins"] is False
    assert v["reason"].startswith("champion stays: ECE worse than the champion's by more than 0.02: salary")
    assert "ranking alone: challenger wins" in v["reason"]
    assert v["calibration"]["ece_deltas"]["salary"] == pytest.approx(0.06)
    # a looser margin lets it through, and the verdict says how calibration moved
    v = gate_verdict(sharper, champ, ece_margin=0.1)
    assert v["challenger_wins"] is True and "calibration: ECE within the margin" in v["reason"]
    # a better-calibrated challenger that does not rank better still loses on ranking
    v = gate_verdict({t: {**m, "ece": 0.0, "roc_auc_ovo": 0.5} for t, m in champ.items()}, champ)
    assert v["challenger_wins"] is False and v["calibration"]["passes"]
    assert gate_verdict(sharper, None)["challenger_wins"] is True
    assert calibration_gate({"salary": {"ece": float("nan")}}, champ)["passes"]


def test_prior_shift_in_predict_and_the_cli(bundle_dir, tmp_path):
    import subprocess
    import sys

    b = load_bundle(bundle_dir)
    texts = ["Доставка заказов клиентам", "Руководство командой разработки", "Продажи и переговоры"]
    cohorts = b.cohorts["salary"]
    target = {c: (0.97 if i == 0 else 0.01) for i, c in enumerate(cohorts)}
    plain = b.predict(texts)
    shifted = b.predict(texts, priors={"salary": target})
    for p, s in zip(plain, shifted, strict=True):
        assert s["salary"]["probabilities"][cohorts[0]] > p["salary"]["probabilities"][cohorts[0]]
        assert s["demand"] == p["demand"]  # only the task given moves
    mix = b.estimate_priors(texts)
    assert set(mix) == {"salary", "demand"} and sum(mix["salary"].values()) == pytest.approx(1.0)
    with pytest.raises(BundleError, match="unknown cohorts"):
        b.predict(texts, priors={"salary": {"nope": 1.0}})

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"responsibility": t}, ensure_ascii=False) for t in texts))
    run = [sys.executable, "-m", "hhpulse.cli", "predict", "--model", str(bundle_dir), "--input", str(src)]
    out = tmp_path / "out.jsonl"
    p = subprocess.run(
        [*run, "--output", str(out), "--priors", "em"], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0 and "priors estimated by EM" in p.stderr, p.stderr
    pri = tmp_path / "priors.json"
    pri.write_text(json.dumps({"salary": target}))
    p = subprocess.run(
        [*run, "--output", str(out), "--priors", str(pri)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    got = [json.loads(line)["salary"]["probabilities"] for line in out.read_text().splitlines()]
    assert got == [s["salary"]["probabilities"] for s in shifted]
    pri.write_text(json.dumps({"salary": {"nope": 1}}))
    p = subprocess.run(
        [*run, "--output", str(tmp_path / "x.jsonl"), "--priors", str(pri)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "unknown cohorts" in p.stderr and not (tmp_path / "x.jsonl").exists()


def test_evaluate_reports_calibration(bundle_dir, store, tmp_path):
    import re
    import subprocess
    import sys
    import xml.dom.minidom

    report = tmp_path / "r.html"
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "evaluate", "--model", str(bundle_dir), "--data", str(store.root),
         "--report", str(report)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "top-label ECE" in p.stdout and "Brier" in p.stdout and "mix (predicted/true)" in p.stdout
    page = report.read_text()
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2  # a reliability diagram per task
    for svg in svgs:
        xml.dom.minidom.parseString(svg)
        assert "<polyline" in svg and "before" in svg and "after" in svg
    assert "predicted before" in page and "largest mix error" in page


def test_a_bundle_from_before_calibration_still_loads(bundle_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    for task in ("salary", "demand"):
        (old / task / "calibration.json").unlink()
    write_manifest(old, "v-old")
    b = load_bundle(old)
    assert all(c.identity for c in b.calibrators.values())
    texts = ["Доставка заказов клиентам"]
    raw = b.predict_proba(texts, calibrated=False)
    assert b.predict_proba(texts)["salary"] == pytest.approx(raw["salary"])
    assert b.explain(texts)[0]["salary"]["cohort"] == b.predict(texts)[0]["salary"]["cohort"]
    with pytest.raises(BundleError, match="no calibration priors"):
        b.predict(texts, priors={"salary": {b.cohorts["salary"][0]: 1.0}})
