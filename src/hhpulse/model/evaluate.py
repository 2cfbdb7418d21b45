"""Metrics for the cohort classifiers, and drift between two data sets.

``classification_metrics`` gives macro ROC AUC one-vs-one (the primary metric) and
one-vs-rest, macro-F1, accuracy, log loss, per-class precision and recall, the confusion
matrix and a reliability (calibration) table. Classes missing from ``y_true`` do not
crash anything: the AUCs are computed over the classes present, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

PRIMARY_METRICS = ("roc_auc_ovo", "roc_auc_ovr", "f1_macro", "accuracy", "neg_log_loss")


def _safe(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def classification_metrics(
    y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], bins: int = 10
) -> dict[str, Any]:
    """Every metric for one task; ``proba`` columns follow ``classes``."""
    y = np.asarray([str(v) for v in y_true])
    classes = list(classes)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (len(y), len(classes)):
        raise ValueError(f"proba has shape {proba.shape}, expected {(len(y), len(classes))}")
    idx = {c: i for i, c in enumerate(classes)}
    unknown = set(y) - set(classes)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {classes}")
    yi = np.array([idx[v] for v in y])
    pred = proba.argmax(axis=1)
    present = sorted(set(yi.tolist()))
    notes = []
    out: dict[str, Any] = {"n": int(len(y)), "classes": classes}
    if len(present) >= 2:
        sub = proba[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        remap = {c: i for i, c in enumerate(present)}
        ys = np.array([remap[v] for v in yi])
        if len(present) == 2:
            auc = roc_auc_score(ys, sub[:, 1])
            out["roc_auc_ovo"] = out["roc_auc_ovr"] = float(auc)
        else:
            out["roc_auc_ovo"] = float(
                roc_auc_score(ys, sub, multi_class="ovo", average="macro", labels=list(range(len(present))))
            )
            out["roc_auc_ovr"] = float(
                roc_auc_score(ys, sub, multi_class="ovr", average="macro", labels=list(range(len(present))))
            )
        if len(present) < len(classes):
            notes.append(
                f"AUC over the {len(present)} classes present in y_true; absent: {[classes[i] for i in range(len(classes)) if i not in present]}"
            )
    else:
        out["roc_auc_ovo"] = out["roc_auc_ovr"] = None
        notes.append("AUC undefined: fewer than two classes in y_true")
    labels = list(range(len(classes)))
    out["f1_macro"] = float(f1_score(yi, pred, labels=present or labels, average="macro", zero_division=0))
    out["accuracy"] = float(accuracy_score(yi, pred))
    clipped = np.clip(proba, 1e-12, 1)
    out["log_loss"] = float(log_loss(yi, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
    out["neg_log_loss"] = -out["log_loss"]
    p, r, f, s = precision_recall_fscore_support(yi, pred, labels=labels, zero_division=0)
    out["per_class"] = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    }
    out["confusion_matrix"] = confusion_matrix(yi, pred, labels=labels).tolist()
    out["calibration"] = reliability_table(yi, proba, bins)
    out.update(calibration_metrics(yi, proba, classes, bins))
    out["notes"] = notes
    return out


def stratified_auc(
    y_true: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    groups: Sequence[str],
    metric: str = "roc_auc_ovo",
) -> dict[str, Any]:
    """``metric`` within each group of rows (e.g. the model version that served them), and their
    mean weighted by each group's rows: the **stratified** figure. A ranking metric pooled over
    groups scored by different models (each with its own probability scale) or over periods whose
    label mix moves ranks rows against each other that no model ever compared; within a group it
    does not. Groups whose metric is undefined (one cohort) are left out of the mean and counted
    in ``rows_left_out``. Returns ``{"value", "rows", "rows_left_out", "groups": {g: {"n", "value"}}}``."""
    y = [str(v) for v in y_true]
    proba = np.asarray(proba, dtype=np.float64)
    g = [str(v) for v in groups]
    out: dict[str, Any] = {"value": None, "rows": 0, "rows_left_out": 0, "groups": {}}
    total = weighted = 0.0
    for name in sorted(set(g)):
        sel = [i for i, x in enumerate(g) if x == name]
        v = classification_metrics([y[i] for i in sel], proba[sel], classes).get(metric)
        out["groups"][name] = {"n": len(sel), "value": v}
        if v is None:
            out["rows_left_out"] += len(sel)
            continue
        total += len(sel)
        weighted += len(sel) * float(v)
    out["rows"] = int(total)
    out["value"] = weighted / total if total else None
    return out


def reliability_table(yi: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Confidence of the top class vs. its accuracy, in equal-width bins."""
    conf = proba.max(axis=1)
    hit = proba.argmax(axis=1) == yi
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        if m.any():
            rows.append(
                {
                    "bin": [float(lo), float(hi)],
                    "count": int(m.sum()),
                    "confidence": float(conf[m].mean()),
                    "accuracy": float(hit[m].mean()),
                }
            )
    return rows


def expected_calibration_error(table: Sequence[Mapping[str, Any]]) -> float:
    n = sum(r["count"] for r in table)
    return (
        float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in table) / n)
        if n
        else float("nan")
    )


def brier_score(yi: np.ndarray, proba: np.ndarray) -> float:
    """Multiclass Brier score: the mean over rows of sum_c (p_c - [y == c])^2 (0 is perfect, 2 worst)."""
    onehot = np.zeros_like(proba, dtype=np.float64)
    onehot[np.arange(len(yi)), yi] = 1.0
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1))) if len(yi) else float("nan")


def cohort_mix(yi: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The predicted mix (mean probability per cohort) against the true mix (label shares)."""
    n = len(yi)
    pred = proba.mean(axis=0) if n else np.zeros(len(classes))
    true = np.bincount(yi, minlength=len(classes)) / max(1, n)
    return {
        "predicted": {c: float(pred[i]) for i, c in enumerate(classes)},
        "true": {c: float(true[i]) for i, c in enumerate(classes)},
        "max_abs_error": float(np.max(np.abs(pred - true))) if len(classes) else 0.0,
    }


def calibration_metrics(
    yi: np.ndarray, proba: np.ndarray, classes: Sequence[str], bins: int = 10
) -> dict[str, Any]:
    """Top-label ECE (``bins`` equal-width bins), mean confidence, the multiclass Brier score and the mix."""
    return {
        "ece": expected_calibration_error(reliability_table(yi, proba, bins)),
        "mean_confidence": float(proba.max(axis=1).mean()) if len(yi) else float("nan"),
        "brier": brier_score(yi, proba),
        "mix": cohort_mix(yi, proba, classes),
    }


def roc_curves(
    y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """One-vs-rest ROC curve per class (for the KFP UI)."""
    y = np.asarray([str(v) for v in y_true])
    out = {}
    for i, c in enumerate(classes):
        pos = y == c
        if pos.any() and (~pos).any():
            fpr, tpr, thr = roc_curve(pos.astype(int), proba[:, i])
            out[c] = {
                "fpr": fpr.tolist(),
                "tpr": tpr.tolist(),
                "thresholds": np.nan_to_num(thr, posinf=1.0).tolist(),
            }
    return out


DOMINANT_SHARE = 0.95  # one cohort predicted for this share of the rows or more is said plainly
DOMINANT_MIN_ROWS = 30  # ... on at least this many rows: on fewer, a share says little
CHANCE_AUC = 0.55  # a test macro ROC AUC (OvO) below this is called no better than chance (0.5)


def dominant_prediction(
    task: str,
    predicted: Mapping[str, int],
    share: float = DOMINANT_SHARE,
    min_rows: int = DOMINANT_MIN_ROWS,
) -> str | None:
    """A plain sentence when one cohort is the prediction for almost every row (``predicted``:
    rows per predicted cohort), else None: accuracy then only restates that cohort's share.
    Fewer than ``min_rows`` rows say nothing either way (None)."""
    total = sum(predicted.values())
    if total < max(1, min_rows):
        return None
    top, n = max(predicted.items(), key=lambda kv: kv[1])
    if n / total < share:
        return None
    return (
        f"{task}: {top!r} is the predicted cohort for {n} of {total} rows ({100 * n / total:.1f}%): the "
        f"predictions barely separate the rows, so accuracy only restates the share of {top!r}; "
        "compare rows by their probabilities instead"
    )


def served_counts(task_metrics: Mapping[str, Any], calibration: Mapping[str, Any] | None) -> dict[str, int]:
    """Test rows per predicted cohort, of the probabilities served (after calibration) when
    known (``calibration``: the task's entry of ``metrics.json``'s ``calibration``), else of
    the winner's raw model (``task_metrics``: the task's entry of ``metrics.json``)."""
    after = ((calibration or {}).get("test") or {}).get("after") or {}
    if after.get("predicted"):
        return dict(after["predicted"])
    win = (task_metrics.get("candidates") or {}).get(task_metrics.get("winner")) or {}
    test = (win.get("metrics") or {}).get("test") or {}
    return predicted_counts(test.get("confusion_matrix") or [], test.get("classes") or [])


def served_auc(
    task_metrics: Mapping[str, Any], calibration: Mapping[str, Any] | None
) -> tuple[float | None, str]:
    """The winner's test ROC AUC (OvO) of the probabilities it serves, and which they are:
    ``(auc, "after calibration")`` when the task has a calibrator, else ``(auc, "uncalibrated")``.
    Calibration moves each cohort's scores by its own bias, so the two AUCs differ a little:
    every place that prints one names which."""
    after = ((calibration or {}).get("test") or {}).get("after") or {}
    if after:
        return _safe(after.get("roc_auc_ovo")), "after calibration"
    win = (task_metrics.get("candidates") or {}).get(task_metrics.get("winner")) or {}
    return _safe(((win.get("metrics") or {}).get("test") or {}).get("roc_auc_ovo")), "uncalibrated"


def at_chance(auc: float | None) -> bool:
    """Whether a macro ROC AUC is no better than chance (below :data:`CHANCE_AUC`)."""
    return auc is not None and auc < CHANCE_AUC


def task_caveats(
    task: str,
    task_metrics: Mapping[str, Any],
    calibration: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Whether a task's predictions can be relied on, and why not, in plain sentences: the one
    judgement that the run summary, the report, the model card and the predictor's metadata
    all show. ``{"reliable": bool, "caveats": [sentence, ...]}``.

    Unreliable: a served test ROC AUC below :data:`CHANCE_AUC` (no better than chance), or
    demand learned from the age proxy. One cohort predicted for almost every test row
    (:func:`dominant_prediction`) is a caveat of its own."""
    caveats: list[str] = []
    reliable = True
    auc, which = served_auc(task_metrics, calibration)
    if at_chance(auc):
        reliable = False
        caveats.append(
            f"{task} is no better than chance: test ROC AUC (OvO) {auc:.3f} {which}, where 0.5 is a coin toss"
        )
    counts = served_counts(task_metrics, calibration)
    total = sum(counts.values())
    if dominant_prediction(task, counts) is not None:
        top, n = max(counts.items(), key=lambda kv: kv[1])
        caveats.append(
            f"{top!r} is the predicted {task} cohort for {n} of {total} test rows ({100 * n / total:.1f}%)"
        )
    if task == "demand" and (summary or {}).get("demand_proxy"):
        reliable = False
        caveats.append(
            "demand was learned from the age proxy (how long ago a vacancy was published), not from time-to-close"
        )
    return {"reliable": reliable, "caveats": caveats}


def bundle_caveats(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """:func:`task_caveats` of every task in a bundle's ``metrics.json``."""
    calibration = metrics.get("calibration") or {}
    summary = metrics.get("dataset") or {}
    return {
        task: task_caveats(task, doc, calibration.get(task), summary)
        for task, doc in metrics.items()
        if isinstance(doc, Mapping) and "winner" in doc and "candidates" in doc
    }


def predicted_counts(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> dict[str, int]:
    """Rows per predicted cohort from a confusion matrix (rows: true, columns: predicted)."""
    if not len(confusion) or len(confusion) != len(classes):
        return {}
    cm = np.asarray(confusion, dtype=np.int64).reshape(len(classes), len(classes))
    return {c: int(cm[:, i].sum()) for i, c in enumerate(classes)}


def score(metrics: Mapping[str, Any], primary: str) -> float:
    """The value to maximise for ``primary`` (missing values rank last)."""
    v = metrics.get(primary)
    return -math.inf if v is None else float(v)


def psi(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = 1e-4
) -> float:
    """Population stability index between two distributions (shares that sum to 1)."""
    e = np.clip(np.asarray(expected, dtype=float), eps, None)
    a = np.clip(np.asarray(actual, dtype=float), eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def shares(values: Sequence[str], categories: Sequence[str]) -> list[float]:
    vals = list(values)
    n = len(vals) or 1
    return [sum(1 for v in vals if v == c) / n for c in categories]


def drift_report(reference: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Drift between two data profiles (see :func:`data_profile`): PSI per distribution and vocabulary overlap."""
    out: dict[str, Any] = {}
    for task in ("salary", "demand"):
        ref, cur = reference.get(f"{task}_shares"), current.get(f"{task}_shares")
        if ref and cur:
            cats = sorted(set(ref) | set(cur))
            out[f"{task}_cohort_psi"] = psi([ref.get(c, 0) for c in cats], [cur.get(c, 0) for c in cats])
    ref_q, cur_q = reference.get("salary_log_hist"), current.get("salary_log_hist")
    if ref_q and cur_q and len(ref_q) == len(cur_q):
        out["salary_value_psi"] = psi(ref_q, cur_q)
    rv, cv = set(reference.get("top_terms") or []), set(current.get("top_terms") or [])
    if rv and cv:
        out["vocabulary_jaccard"] = len(rv & cv) / len(rv | cv)
        out["new_top_terms"] = sorted(cv - rv)[:25]
    out["level"] = _drift_level(out)
    return out


def _drift_level(d: Mapping[str, Any]) -> str:
    worst = max((v for k, v in d.items() if k.endswith("_psi") and v is not None), default=0.0)
    return "major" if worst >= 0.25 else "moderate" if worst >= 0.1 else "minor"


SALARY_LOG_EDGES = np.linspace(np.log(10_000), np.log(3_000_000), 21)


def data_profile(frames: Mapping[str, Any], top_terms: Sequence[str] = ()) -> dict[str, Any]:
    """A small, JSON-able profile of a dataset, kept with each model for drift checks.

    ``frames`` maps task -> DataFrame with ``label`` (and ``salary_rub`` for salary).
    """
    prof: dict[str, Any] = {"top_terms": list(top_terms)}
    for task, df in frames.items():
        counts = df["label"].value_counts(normalize=True)
        prof[f"{task}_shares"] = {str(k): float(v) for k, v in counts.items()}
        if task == "salary" and "salary_rub" in df:
            vals = np.log(np.clip(df["salary_rub"].dropna().to_numpy(dtype=float), 10_000, 3_000_000))
            hist, _ = np.histogram(vals, bins=SALARY_LOG_EDGES)
            prof["salary_log_hist"] = (hist / max(1, hist.sum())).tolist()
    return prof
