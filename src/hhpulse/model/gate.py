"""The gate's evidence: a paired, stratified bootstrap of each task's metric.

The challenger and the champion are scored on the SAME new test rows, and only on rows the
champion was not fitted on (its bundle's ``training_ids.npz``): a champion scored on rows it
learned from would look better than it is. Each resample draws, within each true cohort, as
many rows as the cohort has (with replacement), and scores BOTH models on that same resample,
so the difference between them is measured without the noise the two share.

* resamples: :data:`DEFAULT_RESAMPLES` (1000), seeded (:data:`DEFAULT_SEED`): the same rows
  give the same interval every time;
* interval: the two-sided percentile interval at :data:`DEFAULT_CONFIDENCE` (95%) of the
  resampled differences (challenger minus champion);
* the challenger replaces the champion only when the interval's LOWER bound is above the
  margin (see :func:`hhpulse.flows.workflow.compare`): a tie, or a gain the test set cannot tell
  from zero, keeps the champion.

Stratifying by cohort keeps every resample's cohort counts equal to the test set's, so the
metric is defined on every resample (no resample without a cohort). Every metric of
:data:`hhpulse.model.evaluate.PRIMARY_METRICS` is computed for all resamples at once as weighted
sums (a resample is a vector of row counts); ROC AUC from one sort of each score column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 20240917


class GateEvidenceError(ValueError):
    """The bootstrap cannot run on these inputs (shapes, unknown cohorts, a metric it lacks)."""


@dataclass
class PairedInterval:
    """One task's paired bootstrap: the difference challenger minus champion and its interval."""

    metric: str
    rows: int  # test rows compared
    left_out: int  # test rows left out because the champion was fitted on them
    challenger: float
    champion: float
    delta: float
    low: float
    high: float
    resamples: int
    confidence: float
    seed: int
    samples: np.ndarray = field(repr=False, compare=False)  # the resampled differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "rows": self.rows,
            "left_out": self.left_out,
            "challenger": round(self.challenger, 6),
            "champion": round(self.champion, 6),
            "delta": round(self.delta, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "resamples": self.resamples,
            "confidence": self.confidence,
            "seed": self.seed,
        }

    def line(self) -> str:
        """``+0.0018 [95% CI -0.0050, +0.0085], roc_auc_ovo 0.7312 -> 0.7330, 412 rows``."""
        left = f"; {self.left_out} the champion was fitted on left out" if self.left_out else ""
        return (
            f"{self.delta:+.4f} [{self.confidence:.0%} CI {self.low:+.4f}, {self.high:+.4f}], "
            f"{self.metric} {self.champion:.4f} -> {self.challenger:.4f}, {self.rows} rows{left}"
        )


def stratified_counts(y: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, rows) counts: each resample draws, within each class of ``y``, as many rows
    as the class has, uniformly with replacement."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, len(y)), dtype=np.float64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        counts[:, rows] = rng.multinomial(len(rows), np.full(len(rows), 1.0 / len(rows)), size=resamples)
    return counts


def weighted_auc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary ROC AUC (ties count one half) of ``score`` for every row of weights ``w``
    (resamples x rows) at once: one sort, then sums over groups of tied scores."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ws = w[:, order]
    pos = positive[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    gp = np.add.reduceat(ws * pos, starts, axis=1)
    gn = np.add.reduceat(ws * ~pos, starts, axis=1)
    below = np.cumsum(gn, axis=1) - gn
    num = (gp * (below + 0.5 * gn)).sum(axis=1)
    den = gp.sum(axis=1) * gn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def metric_samples(metric: str, yi: np.ndarray, proba: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``metric`` (as :func:`hhpulse.model.evaluate.classification_metrics` computes it) for each row
    of weights ``w``. AUCs use the columns of the classes present in ``yi``, renormalised."""
    present = np.unique(yi)
    if metric in ("roc_auc_ovo", "roc_auc_ovr"):
        if len(present) < 2:
            raise GateEvidenceError(f"{metric} is undefined: fewer than two cohorts in the test rows")
        sub = proba[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        ys = np.searchsorted(present, yi)
        k = len(present)
        if metric == "roc_auc_ovr" and k > 2:
            return np.mean([weighted_auc(sub[:, a], ys == a, w) for a in range(k)], axis=0)
        pairs = []
        for a in range(k):
            for b in range(a + 1, k):
                m = (ys == a) | (ys == b)
                wa = w[:, m]
                pairs.append(
                    (weighted_auc(sub[m, a], ys[m] == a, wa) + weighted_auc(sub[m, b], ys[m] == b, wa)) / 2
                )
        return np.mean(pairs, axis=0)
    total = w.sum(axis=1)
    pred = proba.argmax(axis=1)
    if metric == "accuracy":
        return (w * (pred == yi)).sum(axis=1) / total
    if metric == "neg_log_loss":
        p = np.clip(proba, 1e-12, 1)
        p = p / p.sum(axis=1, keepdims=True)
        return (w * np.log(p[np.arange(len(yi)), yi])).sum(axis=1) / total
    if metric == "f1_macro":
        scores = []
        for c in present:
            tp = (w * ((pred == c) & (yi == c))).sum(axis=1)
            fp = (w * ((pred == c) & (yi != c))).sum(axis=1)
            fn = (w * ((pred != c) & (yi == c))).sum(axis=1)
            den = 2 * tp + fp + fn
            scores.append(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0))
        return np.mean(scores, axis=0)
    raise GateEvidenceError(f"no bootstrap for the metric {metric!r}")


def paired_bootstrap(
    labels: Sequence[str],
    challenger: np.ndarray,
    champion: np.ndarray,
    classes: Sequence[str],
    metric: str = "roc_auc_ovo",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    left_out: int = 0,
) -> PairedInterval:
    """The paired bootstrap of ``metric`` (challenger minus champion) on the same rows.

    ``challenger``/``champion``: probabilities, rows follow ``labels``, columns ``classes``.
    Raises :class:`GateEvidenceError` when the metric is undefined on these rows (fewer
    than two cohorts for an AUC)."""
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels} - set(classes))
    if unknown:
        raise GateEvidenceError(f"labels {unknown} are not among the cohorts {classes}")
    yi = np.array([idx[str(v)] for v in labels], dtype=np.int64)
    a, b = np.asarray(challenger, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    if a.shape != (len(yi), len(classes)) or b.shape != a.shape:
        raise GateEvidenceError(
            f"probabilities of shape {a.shape} and {b.shape}, expected {(len(yi), len(classes))}"
        )
    if not 0 < confidence < 1 or resamples < 1:
        raise GateEvidenceError("confidence must be in (0, 1) and resamples >= 1")
    ones = np.ones((1, len(yi)))
    point_a = float(metric_samples(metric, yi, a, ones)[0])
    point_b = float(metric_samples(metric, yi, b, ones)[0])
    w = stratified_counts(yi, resamples, seed)
    diffs = metric_samples(metric, yi, a, w) - metric_samples(metric, yi, b, w)
    low, high = interval(diffs, confidence)
    return PairedInterval(
        metric,
        len(yi),
        left_out,
        point_a,
        point_b,
        point_a - point_b,
        low,
        high,
        resamples,
        confidence,
        seed,
        diffs,
    )


def metric_interval(
    labels: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    metric: str = "roc_auc_ovo",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any] | None:
    """One model's ``metric`` on its rows with the stratified bootstrap's percentile interval
    (the same resamples as :func:`paired_bootstrap`); None when the metric is undefined there."""
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    yi = np.array([idx[str(v)] for v in labels], dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    try:
        point = float(metric_samples(metric, yi, p, np.ones((1, len(yi))))[0])
        low, high = interval(
            metric_samples(metric, yi, p, stratified_counts(yi, resamples, seed)), confidence
        )
    except GateEvidenceError:
        return None
    return {
        "value": round(point, 6),
        "low": round(low, 6),
        "high": round(high, 6),
        "rows": len(yi),
        "confidence": confidence,
        "resamples": resamples,
    }


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of ``samples`` at ``confidence``."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def row_hashes(ids: Iterable[Any]) -> np.ndarray:
    """Each id's 64-bit hash, as ``training_ids.npz`` keeps them (rows follow ``ids``)."""
    return np.array(
        [int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in ids], dtype=np.uint64
    )


def fitted_mask(bundle_path: str | Path, ids: Sequence[Any], task: str | None = None) -> np.ndarray | None:
    """Per row of ``ids``, whether the bundle at ``bundle_path`` was fitted on it (from its
    ``training_ids.npz``: ``task``'s own rows when the bundle keeps them per task, else every
    task's); None for a bundle written before training ids were kept. A vacancy whose demand
    label resolved after the champion was fitted is a fair demand row, even if that champion
    saw it as a salary row."""
    from hhpulse.model.bundle import TRAINING_IDS

    path = Path(bundle_path) / TRAINING_IDS
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        key = f"ids_{task}" if task is not None and f"ids_{task}" in npz.files else "ids"
        fitted = npz[key]
    return np.isin(row_hashes(ids), fitted)


@dataclass
class TaskPredictions:
    """One model's probabilities on one task's test rows (rows follow ``ids``)."""

    ids: list[str]
    labels: list[str]
    proba: np.ndarray
    classes: list[str]


def paired_evidence(
    challenger: Mapping[str, TaskPredictions],
    champion: Mapping[str, TaskPredictions],
    champion_fitted: Mapping[str, np.ndarray | None],
    metric: str,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> dict[str, PairedInterval | str]:
    """Per task, the paired bootstrap on the test rows the champion was not fitted on, or the
    reason there is none (a string)."""
    out: dict[str, PairedInterval | str] = {}
    for task, mine in challenger.items():
        theirs = champion.get(task)
        if theirs is None:
            out[task] = "the champion has no predictions for it"
            continue
        if list(theirs.ids) != list(mine.ids) or list(theirs.classes) != list(mine.classes):
            raise GateEvidenceError(f"{task}: the two models were not scored on the same rows and cohorts")
        fitted = champion_fitted.get(task)
        keep = np.ones(len(mine.ids), dtype=bool) if fitted is None else ~np.asarray(fitted, dtype=bool)
        if not keep.any():
            out[task] = f"all {len(mine.ids)} test rows were in the champion's fit"
            continue
        out[task] = _paired_or_why(
            mine.labels, keep, mine.proba, theirs.proba, mine.classes, metric, resamples, confidence, seed
        )
    return out


def _paired_or_why(
    labels: Sequence[str],
    keep: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    classes: Sequence[str],
    metric: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> PairedInterval | str:
    """The paired bootstrap of ``a`` against ``b`` on the kept rows (the left-out ones counted),
    or why it cannot be taken."""
    try:
        return paired_bootstrap(
            [lab for lab, k in zip(labels, keep, strict=True) if k],
            a[keep],
            b[keep],
            classes,
            metric,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
            left_out=int((~keep).sum()),
        )
    except GateEvidenceError as exc:
        return str(exc)


# -- live evidence: the outcomes of what the champion actually served -------------------------
LIVE_MIN_ROWS = 100  # resolved served rows below which the live evidence is not weighed


@dataclass
class ServedOutcomes:
    """What one champion version served whose outcome has since resolved: per task, the
    probabilities it served (as logged) with the resolved labels, and the inputs it was given
    (rows follow ``predictions[task].ids``)."""

    version: str
    predictions: dict[str, TaskPredictions]
    instances: dict[str, list[dict[str, Any]]]
    first: str | None = None  # the served time of the oldest and the newest row
    last: str | None = None

    def rows(self, task: str) -> int:
        p = self.predictions.get(task)
        return 0 if p is None else len(p.ids)


def live_evidence(
    outcomes: ServedOutcomes,
    challenger_proba: Mapping[str, np.ndarray],
    fitted: Mapping[str, np.ndarray | None],
    metric: str,
    *,
    min_rows: int = LIVE_MIN_ROWS,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> dict[str, PairedInterval | str]:
    """Per task, the paired bootstrap of the challenger against what the champion served, on
    the champion's resolved served rows that were not fitted on (``fitted``: per task, the rows
    the challenger, or either model, was fitted on; a champion serves what is new after its
    publication, so its own fit rarely holds them), or why there is none. ``challenger_proba``:
    the challenger's probabilities on ``outcomes.instances`` (columns follow the served classes)."""
    out: dict[str, PairedInterval | str] = {}
    for task, served in outcomes.predictions.items():
        mine = challenger_proba.get(task)
        if mine is None:
            out[task] = "the challenger has no predictions for it"
            continue
        mask = fitted.get(task)
        keep = np.ones(len(served.ids), dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
        if int(keep.sum()) < min_rows:
            out[task] = (
                f"{int(keep.sum())} resolved served rows of {outcomes.version} not fitted on "
                f"(fewer than {min_rows})"
            )
            continue
        out[task] = _paired_or_why(
            served.labels,
            keep,
            np.asarray(mine),
            served.proba,
            served.classes,
            metric,
            resamples,
            confidence,
            seed,
        )
    return out
