"""Calibrated probabilities: a small map fitted on a held-out, time-ordered slice.

A model trained with balanced class weights ranks well but its probabilities do not mean
what they say (small cohorts get too much mass, the top label is over-confident). A
:class:`Calibrator` maps a model's probabilities ``p`` to

    softmax(log(p) / T + b)

with a temperature ``T > 0`` and one bias per cohort ``b``. ``T`` fixes the confidence,
``b`` the cohort mix; ``method`` says which were fitted (``none``, ``temperature``, or
``bias_temperature``, also known as bias-corrected temperature scaling). The map keeps
the ranking of cohorts within a row for ``temperature`` and moves the mix for the other.

:func:`fit_calibrator` fits on the validation slice (newer than training, older than
test, never the test split) and picks the method by the evidence: the log loss of each
method under 5-fold cross-fitting within the slice; the best is refitted on the whole
slice. (Fitting on the older half and scoring on the newer one was tried on the shared
dump: the slice's own drift made it pick "none" where the bias-corrected map helped the
test split in every configuration measured.) The result is stored as JSON in the bundle
(``<task>/calibration.json``), covered by MANIFEST.json like every other file, and
applied by :meth:`hhpulse.model.bundle.ModelBundle.predict_proba`: ``hhpulse predict``, the
server and evaluation all see calibrated probabilities.

Priors move with the market: :func:`shift_priors` re-weights probabilities from the
calibration mix to a mix the user gives, and :func:`em_priors` estimates the new mix
from unlabelled predictions (Saerens, Latinne and Decaestecker, 2002, the EM adjustment).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhpulse.data.store import atomic_write_bytes

FORMAT = "hhpulse-calibration/1"
FILE = "calibration.json"
METHODS = ("none", "temperature", "bias_temperature")
_EPS = 1e-12


class CalibrationError(ValueError):
    """A calibrator cannot be fitted or loaded (bad JSON, wrong cohorts, non-finite values)."""


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(proba, dtype=np.float64), _EPS))  # clip from below, as np.clip


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Calibrator:
    """``softmax(log(p) / temperature + bias)``; columns follow ``classes``."""

    classes: list[str]
    method: str = "none"
    temperature: float = 1.0
    bias: list[float] = field(default_factory=list)
    # the mean calibrated probability per cohort on the calibration slice: the priors
    # the calibrated model assumes, the starting point of a prior shift
    priors: dict[str, float] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bias:
            self.bias = [0.0] * len(self.classes)
        self.validate()

    def validate(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"unknown calibration method {self.method!r}; known: {list(METHODS)}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)):
            raise CalibrationError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.temperature <= 0:
            raise CalibrationError(f"temperature must be positive, got {self.temperature}")
        if len(self.bias) != len(self.classes) or not all(
            isinstance(b, (int, float)) and math.isfinite(b) for b in self.bias
        ):
            raise CalibrationError(f"bias must be {len(self.classes)} finite numbers, got {self.bias!r}")

    @property
    def identity(self) -> bool:
        return self.temperature == 1.0 and not any(self.bias)

    def logits(self, proba: np.ndarray) -> np.ndarray:
        """The calibrated logits (softmax of them gives :meth:`apply`)."""
        return _log(proba) / self.temperature + np.asarray(self.bias)

    def apply(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape[0] == 0 or self.identity:
            return proba
        return softmax(self.logits(proba))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": list(self.classes),
            "method": self.method,
            "temperature": float(self.temperature),
            "bias": [float(b) for b in self.bias],
            "priors": {c: float(v) for c, v in self.priors.items()},
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibrator:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise CalibrationError(f"not a calibrator: format {got!r}, expected {FORMAT}")
        try:
            return cls(
                classes=[str(c) for c in data["classes"]],
                method=str(data["method"]),
                temperature=data["temperature"],
                bias=list(data["bias"]),
                priors={str(k): float(v) for k, v in dict(data.get("priors") or {}).items()},
                fitted_on=dict(data.get("fitted_on") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CalibrationError):
                raise
            raise CalibrationError(f"calibrator JSON is incomplete or malformed: {exc!r}") from exc

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        atomic_write_bytes(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=2).encode())
        return path

    @classmethod
    def load(cls, folder: str | Path, classes: Sequence[str]) -> Calibrator:
        """The calibrator in ``folder``, or the identity when the bundle predates calibration."""
        path = Path(folder) / FILE
        if not path.is_file():
            return cls(list(classes))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path}: {exc}") from exc
        cal = cls.from_dict(data)
        if cal.classes != list(classes):
            raise CalibrationError(f"{path}: cohorts {cal.classes} != the model's {list(classes)}")
        return cal


# -- fitting ------------------------------------------------------------------------------
def _nll(logp: np.ndarray, yi: np.ndarray, t: float, b: np.ndarray) -> float:
    z = logp / t + b
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(yi)), yi]))


def _fit_params(logp: np.ndarray, yi: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    """Minimise the mean log loss over log T (and the biases); a light ridge keeps biases
    finite for cohorts the slice lacks."""
    from scipy.optimize import minimize

    k = logp.shape[1]
    if method == "none":
        return 1.0, np.zeros(k)
    ridge = 1e-3
    onehot = np.eye(k)[yi]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = math.exp(theta[0])
        b = theta[1:] if method == "bias_temperature" else np.zeros(k)
        z = logp / t + b
        p = softmax(z)
        nll = _nll(logp, yi, t, b) + ridge * float(b @ b)
        g = (p - onehot) / len(yi)  # d nll / d z
        d_logt = float(np.sum(g * (-logp / t)))
        grad = [d_logt]
        if method == "bias_temperature":
            grad.extend(g.sum(axis=0) + 2 * ridge * b)
        return nll, np.asarray(grad)

    x0 = np.zeros(1 + (k if method == "bias_temperature" else 0))
    res = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=[(-5.0, 5.0)] + [(-20.0, 20.0)] * (len(x0) - 1))
    t = math.exp(float(res.x[0]))
    b = np.asarray(res.x[1:]) if method == "bias_temperature" else np.zeros(k)
    return t, b - b.mean() if b.any() else b


def fit_calibrator(
    y: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    method: str = "auto",
    folds: int = 5,
    fitted_on: Mapping[str, Any] | None = None,
) -> Calibrator:
    """Fit on a calibration slice (labels ``y``, the model's probabilities ``proba``).

    ``method="auto"`` scores every method by its log loss under ``folds``-fold
    cross-fitting (rows dealt to folds in turn), and refits the best on the whole slice.
    The scores are kept in ``fitted_on["selection"]``.
    """
    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(map(str, y)) - set(classes))
    if unknown:
        raise CalibrationError(f"labels {unknown} are not among the cohorts {classes}")
    yi = np.array([idx[str(v)] for v in y], dtype=int)
    logp = _log(proba)
    if logp.shape != (len(yi), len(classes)):
        raise CalibrationError(f"proba has shape {logp.shape}, expected {(len(yi), len(classes))}")
    info: dict[str, Any] = {"rows": len(yi), **dict(fitted_on or {})}
    if len(yi) < 20:
        info["note"] = "fewer than 20 calibration rows: left uncalibrated"
        return Calibrator(classes, "none", fitted_on=info)
    if method == "auto":
        fold = np.arange(len(yi)) % max(2, folds)
        scores = {}
        for m in METHODS:
            total = 0.0
            for f in np.unique(fold):
                t, b = _fit_params(logp[fold != f], yi[fold != f], m)
                total += _nll(logp[fold == f], yi[fold == f], t, b) * int((fold == f).sum())
            scores[m] = total / len(yi)
        method = min(METHODS, key=lambda m: (round(scores[m], 6), METHODS.index(m)))
        info["selection"] = {
            "by": f"log loss under {max(2, folds)}-fold cross-fitting on the calibration slice",
            "log_loss": {m: round(s, 6) for m, s in scores.items()},
        }
    elif method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; known: auto, {', '.join(METHODS)}")
    t, b = _fit_params(logp, yi, method)
    cal = Calibrator(classes, method, float(t), [float(v) for v in b], fitted_on=info)
    after = cal.apply(proba)
    cal.priors = {c: float(v) for c, v in zip(classes, after.mean(axis=0), strict=True)}
    return cal


# -- prior shift --------------------------------------------------------------------------
def _normalised(mix: Mapping[str, float] | Sequence[float], classes: Sequence[str]) -> np.ndarray:
    if isinstance(mix, Mapping):
        unknown = sorted(set(mix) - set(classes))
        if unknown:
            raise CalibrationError(f"priors name unknown cohorts {unknown}; cohorts: {list(classes)}")
        v = np.array([float(mix.get(c, 0.0)) for c in classes])
    else:
        v = np.asarray(mix, dtype=np.float64)
    if v.shape != (len(classes),) or not np.all(np.isfinite(v)) or np.any(v < 0) or v.sum() <= 0:
        raise CalibrationError(f"priors must be {len(classes)} non-negative shares with a positive sum")
    return v / v.sum()


def shift_priors(
    proba: np.ndarray,
    old: Mapping[str, float] | Sequence[float],
    new: Mapping[str, float] | Sequence[float],
    classes: Sequence[str],
) -> np.ndarray:
    """Bayes' rule for a change of priors: ``p'(c|x) ∝ p(c|x) · new_c / old_c``."""
    w = _normalised(new, classes) / np.clip(_normalised(old, classes), _EPS, None)
    q = np.asarray(proba, dtype=np.float64) * w
    return q / np.clip(q.sum(axis=1, keepdims=True), _EPS, None)


def em_priors(
    proba: np.ndarray,
    old: Mapping[str, float] | Sequence[float],
    classes: Sequence[str],
    *,
    strength: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> tuple[np.ndarray, dict[str, float]]:
    """Saerens et al. (2002): estimate the priors of unlabelled data by EM, and re-weight.

    Returns the adjusted probabilities and the estimated mix. ``old`` is the mix the model
    assumes (the calibrator's ``priors``). ``strength`` > 0 makes it a MAP estimate with a
    Dirichlet prior worth ``strength`` x n rows at ``old`` (0: the plain maximum-likelihood
    EM). Plain EM trusts the posteriors fully; with a weak classifier it runs to a corner
    of the simplex (measured on the shared dump: 100 iterations took the demand mix to
    0.70 off), which the prior keeps in check.
    """
    p = np.asarray(proba, dtype=np.float64)
    base = _normalised(old, classes)
    if strength < 0 or not math.isfinite(strength):
        raise CalibrationError(f"strength must be a non-negative number, got {strength}")
    if p.shape[0] == 0:
        return p, dict(zip(classes, base.tolist(), strict=True))
    pi = base.copy()
    for _ in range(max_iter):
        q = shift_priors(p, base, pi, classes)
        nxt = (q.sum(axis=0) + strength * len(p) * base) / (len(p) * (1.0 + strength))
        done = float(np.max(np.abs(nxt - pi))) < tol
        pi = nxt
        if done:
            break
    return shift_priors(p, base, pi, classes), {c: float(v) for c, v in zip(classes, pi, strict=True)}


# -- training-time use ---------------------------------------------------------------------
SUMMARY_KEYS = ("roc_auc_ovo", "ece", "mean_confidence", "accuracy", "brier", "log_loss", "mix")


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The calibration-relevant part of :func:`hhpulse.model.evaluate.classification_metrics`,
    with its reliability table (for the diagram) and the rows per predicted cohort."""
    from hhpulse.model.evaluate import predicted_counts

    return {
        **{k: metrics.get(k) for k in SUMMARY_KEYS},
        "reliability": metrics.get("calibration"),
        "predicted": predicted_counts(metrics.get("confusion_matrix") or [], metrics.get("classes") or []),
    }


def calibrate_winners(
    dataset: Any, vectorizer: Any, winners: Mapping[str, Any], method: str = "auto"
) -> tuple[dict[str, Calibrator], dict[str, Any]]:
    """A calibrator per task, fitted on the task's validation slice (time-ordered: newer than
    training, older than test), and the test metrics before and after it.

    ``dataset`` is a :class:`hhpulse.model.dataset.Dataset`, ``winners`` maps task -> a trained
    model with ``predict_proba(X)`` over ``vectorizer.transform`` features.
    """
    from hhpulse.model.dataset import instance_frame
    from hhpulse.model.evaluate import classification_metrics

    fields = ["responsibility", "name", "requirement"]
    calibrators: dict[str, Calibrator] = {}
    report: dict[str, Any] = {}
    for task, model in winners.items():
        td = dataset.tasks[task]
        val, test = td.part("val"), td.part("test")
        pv = model.predict_proba(vectorizer.transform(val[fields].to_dict("records")), instance_frame(val))
        published = val["published_at"].dropna()
        cal = fit_calibrator(
            val["label"].tolist(),
            pv,
            td.classes,
            method=method,
            fitted_on={
                "part": "val",
                "published_at": [str(published.min()), str(published.max())] if len(published) else None,
            },
        )
        calibrators[task] = cal
        entry: dict[str, Any] = {
            "method": cal.method,
            "temperature": cal.temperature,
            "bias": dict(zip(td.classes, cal.bias, strict=True)),
            "fitted_on": cal.fitted_on,
        }
        if len(test):
            pt = model.predict_proba(
                vectorizer.transform(test[fields].to_dict("records")), instance_frame(test)
            )
            labels = test["label"].tolist()
            entry["test"] = {
                "before": summary(classification_metrics(labels, pt, td.classes)),
                "after": summary(classification_metrics(labels, cal.apply(pt), td.classes)),
            }
        report[task] = entry
    return calibrators, report


def bundle_calibration(bundle: Any, dataset: Any, part: str | None = None) -> dict[str, Any]:
    """A loaded bundle's calibration on a dataset's rows (``part=None``: all of them), in the
    shape of :func:`calibrate_winners`' report: the raw model ("before") against the bundle's
    calibrated probabilities ("after")."""
    from hhpulse.model.dataset import instances
    from hhpulse.model.evaluate import classification_metrics

    out: dict[str, Any] = {}
    for task, td in dataset.tasks.items():
        rows = td.frame if part is None else td.part(part)
        if rows.empty or task not in bundle.calibrators:
            continue
        inst = instances(rows)
        raw = bundle.predict_proba(inst, calibrated=False)[task]
        cal = bundle.calibrators[task]
        labels = rows["label"].tolist()
        classes = bundle.cohorts[task]
        out[task] = {
            "method": cal.method,
            "temperature": cal.temperature,
            "bias": dict(zip(classes, cal.bias, strict=True)),
            "test": {
                "before": summary(classification_metrics(labels, raw, classes)),
                "after": summary(classification_metrics(labels, cal.apply(raw), classes)),
            },
        }
    return out
