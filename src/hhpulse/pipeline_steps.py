"""The core of the pipeline's later steps, as plain functions (no kfp).

Components call these with artifact paths; tests and the benchmark call them directly.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hhpulse.config import baseline_candidate
from hhpulse.dataset import Dataset, label_sources
from hhpulse.evaluate import data_profile, drift_report
from hhpulse.features import TextVectorizer
from hhpulse.registry import champion, load_champion
from hhpulse.report import comparison_html
from hhpulse.store import open_store
from hhpulse.train import FeatureSet, TaskResult, evaluate_candidate, load_candidate, select_winner
from hhpulse.workflow import (
    DEFAULT_ECE_MARGIN,
    bundle_from_results,
    champion_measured,
    evaluate_bundle,
    gate_verdict,
)

log = logging.getLogger(__name__)


def _candidates(model_paths: Sequence[str]):  # type: ignore[no-untyped-def]
    return [load_candidate(p) for p in model_paths]


def evaluate_all(
    store: str,
    s3_endpoint: str,
    dataset: Dataset,
    features_dir: str,
    model_paths: Sequence[str],
    primary: str,
) -> dict[str, Any]:
    """Every candidate's metrics, each task's winner, the winners' curves, the winners'
    calibration (before/after on the test split), the strongest salary terms (Markdown),
    and the HTML report."""
    from hhpulse.calibration import calibrate_winners
    from hhpulse.explain import top_terms, top_terms_markdown

    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    winners: dict[str, Any] = {}
    cands = _candidates(model_paths)
    for task in dataset.tasks:
        fs = FeatureSet.load(Path(features_dir) / task)
        mine = {c.config.name: c for c in cands if c.config.task == task}
        scored = {
            n: {"kind": c.config.kind, "info": c.info, "metrics": evaluate_candidate(c, fs)}
            for n, c in mine.items()
        }
        res = select_winner(task, scored, primary, baseline=baseline_candidate(task).name)
        results[task] = {
            "winner": res.winner,
            "primary": res.primary,
            "candidates": res.candidates,
            "baseline": res.baseline,
        }
        win = mine[res.winner]
        winners[task] = win
        test = res.candidates[res.winner]["metrics"].get("test", {})
        proba = win.predict_proba(fs.X["test"])
        curves[task] = {
            "classes": fs.classes,
            "confusion_matrix": test.get("confusion_matrix", []),
            "roc": _micro_roc(fs.y["test"], proba, fs.classes),
        }
    vec = TextVectorizer.load(Path(features_dir) / "vectorizer")
    calibrators, calibration = calibrate_winners(dataset, vec, winners)
    terms_md = ""
    if "salary" in winners:
        test_rows = dataset.tasks["salary"].part("test")[["responsibility", "name", "requirement"]]
        terms = top_terms(vec, winners["salary"], calibrators["salary"], test_rows.to_dict("records"))
        terms_md = top_terms_markdown(terms, "salary")
    drift = None
    st = open_store(store, endpoint_url=s3_endpoint or None)
    if champion(st) is not None:
        with tempfile.TemporaryDirectory() as tmp:
            champ = load_champion(st, tmp)
            terms = TextVectorizer.load(Path(features_dir) / "vectorizer").common_terms("responsibility", 300)
            current = data_profile({t: td.part("train") for t, td in dataset.tasks.items()}, terms)
            drift = drift_report(champ.metadata.get("profile", {}), current)
            drift["champion_version"] = champ.version
    from hhpulse.monitor import latest_report, monitor_html

    html = comparison_html(
        results,
        drift,
        demand_proxy=bool(dataset.summary.get("demand_proxy")),
        calibration=calibration,
        sections=[monitor_html(latest_report(st))],
    )
    return {
        "results": results,
        "winner_curves": curves,
        "html": html,
        "drift": drift,
        "calibration": calibration,
        "top_terms_md": terms_md,
    }


def _micro_roc(y: Sequence[str], proba: Any, classes: Sequence[str]) -> dict[str, list[float]] | None:
    """One ROC curve for the UI: the winner's per-class one-vs-rest curves pooled (micro-average)."""
    import numpy as np
    from sklearn.metrics import roc_curve

    idx = {c: i for i, c in enumerate(classes)}
    onehot = np.zeros_like(proba)
    for r, v in enumerate(y):
        onehot[r, idx[v]] = 1
    if onehot.sum() in (0, onehot.size):
        return None
    fpr, tpr, thr = roc_curve(onehot.ravel(), proba.ravel())
    step = max(1, len(fpr) // 200)  # keep the artifact small
    return {
        "fpr": fpr[::step].tolist(),
        "tpr": tpr[::step].tolist(),
        "thresholds": np.clip(thr[::step], 0, 1).tolist(),
    }


def build_and_gate(
    store: str,
    s3_endpoint: str,
    dataset: Dataset,
    features_dir: str,
    results: dict[str, Any],
    model_paths: Sequence[str],
    bundle_dir: str,
    margin: float,
    primary: str,
    ece_margin: float = DEFAULT_ECE_MARGIN,
) -> dict[str, Any]:
    """Build the challenger bundle from the winners and compare it with the champion on the new
    test set: the primary metric, then calibration (ECE no worse than the champion's by more
    than ``ece_margin``)."""
    from hhpulse.bundle import load_bundle
    from hhpulse.config import LabelConfig

    cands = {c.config.name: c for c in _candidates(model_paths)}
    winners = {t: cands[r["winner"]] for t, r in results.items()}
    task_results = {
        t: TaskResult(t, r["winner"], r["primary"], r["candidates"], r.get("baseline"))
        for t, r in results.items()
    }
    vec = TextVectorizer.load(Path(features_dir) / "vectorizer")
    synthetic = _store_is_synthetic(store, s3_endpoint, dataset)
    path = bundle_from_results(
        bundle_dir, dataset, vec, winners, task_results, label_config=LabelConfig(), synthetic=synthetic
    )
    challenger = load_bundle(path)
    challenger_metrics = evaluate_bundle(challenger, dataset, "test")
    st = open_store(store, endpoint_url=s3_endpoint or None)
    champion_metrics = None
    champ_version = None
    was_measured: dict[str, bool] = {}
    if champion(st) is not None:
        with tempfile.TemporaryDirectory() as tmp:
            champ = load_champion(st, tmp)
            champ_version = champ.version
            champion_metrics = evaluate_bundle(champ, dataset, "test")
            was_measured = champion_measured(champ.metadata.get("metrics", {}), primary)
    verdict = gate_verdict(
        challenger_metrics, champion_metrics, primary, margin, ece_margin, champion_was_measured=was_measured
    )
    log.info(
        "challenger %s vs champion %s: %s", challenger.version, champ_version or "none", verdict["reason"]
    )
    out = {
        "version": challenger.version,
        "challenger_wins": bool(verdict["challenger_wins"]),
        "reason": verdict["reason"],
        "champion_version": champ_version or "",
        "deltas": verdict["deltas"],
        "ece_deltas": verdict["calibration"]["ece_deltas"],
        "ece_margin": ece_margin,
        "challenger_test": {t: m.get(primary) for t, m in challenger_metrics.items()},
        "champion_test": {t: m.get(primary) for t, m in (champion_metrics or {}).items()},
        "challenger_ece": {t: m.get("ece") for t, m in challenger_metrics.items()},
        "champion_ece": {t: m.get("ece") for t, m in (champion_metrics or {}).items()},
        "tasks": verdict.get("tasks", {}),
        "primary": primary,
        "winners": {t: r["winner"] for t, r in results.items()},
        "labels": label_sources(dataset.summary),
    }
    st.put_json(f"gates/{challenger.version}.json", out)  # the verdict, for people and `hhpulse run`
    return out


def _store_is_synthetic(store: str, s3_endpoint: str, dataset: Dataset) -> bool:
    st = open_store(store, endpoint_url=s3_endpoint or None)
    for run in dataset.summary.get("runs", []):
        key = f"raw/{run}/meta.json"
        if st.exists(key) and st.get_json(key).get("synthetic"):
            return True
    return False
