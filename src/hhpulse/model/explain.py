"""Why a vacancy got its cohort: signed term contributions in the logit of that cohort.

For each instance and task, :func:`explain` returns the predicted cohort, its probability,
its logit, and the terms of the text that push toward that cohort and away from it:

* the linear winner (logistic regression): exactly ``coefficient x TF-IDF value`` per term;
* XGBoost on its dense input (:class:`hhpulse.model.features.DenseInput`): its own TreeSHAP
  contributions (``pred_contribs=True``) summed per **input**: a linear score (``text``, a
  text field, ``categories``), a structured field, or a text field's length. Such an entry
  has ``field`` ``score``, ``structured`` or ``length``, ``token`` the input's name and
  ``term`` what the input held (``experience=between3And6``, ``employer: 12 training rows``);
  the inputs the instance lacks are in ``rest``;
* XGBoost on the TF-IDF matrix (bundles trained before the dense input): TreeSHAP per term.

Contributions are on the scale of the probabilities the bundle serves: the calibrated
logit ``z_c / T + b_c`` (see :mod:`hhpulse.model.calibration`), so for every task

    bias + sum(toward) + sum(away) + rest == logit

where ``rest`` holds the terms not listed (for XGBoost also the terms the text lacks:
trees split on a term being absent too), and ``softmax`` over the cohorts' ``logits``
gives the served probabilities. Terms are shown as the user wrote them (the razdel tokens
of the cleaned text, or the n-gram's span), with their field (responsibility, name,
requirement) and the model's own token.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp

from hhpulse.model.inputs import to_instance
from hhpulse.model.text import clean, token_spans

DEFAULT_TOP = 10
_NAMES: weakref.WeakKeyDictionary[Any, list[tuple[str, str]]] = weakref.WeakKeyDictionary()


def feature_terms(vectorizer: Any) -> list[tuple[str, str]]:
    """(field, term) of every feature column, cached per vectorizer."""
    names = _NAMES.get(vectorizer)
    if names is None:
        names = [tuple(n.split(":", 1)) for n in vectorizer.feature_names()]  # type: ignore[misc]
        _NAMES[vectorizer] = names
    return names


def xgb_contributions(model: Any, calibrator: Any, X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's TreeSHAP on the calibrated scale: ``(C, bias)`` with ``C[i, c]`` row ``i``'s
    dense contribution vector (one per feature) to cohort ``c``'s calibrated logit and
    ``bias[i, c]`` the rest of that logit. Dense: call it on small batches."""
    import xgboost as xgb

    t = float(calibrator.temperature)
    dm = xgb.DMatrix(sp.csr_matrix(X, dtype=np.float32), nthread=1)  # all threads cost more for a few rows
    raw = model.model.predict(dm, pred_contribs=True)
    raw = np.asarray(raw, dtype=np.float64).reshape(X.shape[0], len(model.classes), X.shape[1] + 1)
    return raw[:, :, :-1] / t, raw[:, :, -1] / t + np.asarray(calibrator.bias, dtype=np.float64)


def linear_logits(model: Any, calibrator: Any, X: sp.csr_matrix) -> np.ndarray:
    """The calibrated logits of a linear model: ``(X coef' + intercept) / T + b``."""
    z = np.asarray(X @ model.model["coef"].T + model.model["intercept"])
    return z / float(calibrator.temperature) + np.asarray(calibrator.bias)


@lru_cache(maxsize=4096)
def _spans(text: str) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    cleaned = clean(text)
    return cleaned, tuple(token_spans(cleaned))


def _as_written(text: str, term: str) -> str:
    """The first span of ``text`` (cleaned) whose tokens make ``term``, as written."""
    cleaned, spans = _spans(text)
    parts = term.split(" ")
    n = len(parts)
    for i in range(len(spans) - n + 1):
        if spans[i][0] == parts[0] and all(spans[i + j][0] == parts[j] for j in range(1, n)):
            start, stop = spans[i][1], spans[i + n - 1][2]
            return cleaned[start:stop] if start >= 0 else term
    return term


def _terms(
    indices: Sequence[int], values: np.ndarray, names: Sequence[tuple[str, str]], row: Mapping[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for j, v in zip(indices, values, strict=True):
        field, token = names[j]
        out.append(
            {
                "term": _as_written(str(row.get(field) or ""), token),
                "token": token,
                "field": field,
                "contribution": round(float(v), 6),
            }
        )
    return out


def explain(bundle: Any, instances: Sequence[Any], top: int = DEFAULT_TOP) -> list[dict[str, Any]]:
    """Per instance: ``{task: {cohort, probability, logit, logits, bias, toward, away, rest,
    method}, "model_version"}``; ``toward``/``away`` hold up to ``top`` terms each."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    rows = [i.as_dict() for i in instances]
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), _BATCH):  # XGBoost's contributions are dense: small batches
        out.extend(_explain_batch(bundle, rows[start : start + _BATCH], top))
    return out


_BATCH = 32


def dense_contributions(
    model: Any, calibrator: Any, X: sp.csr_matrix, rows: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """TreeSHAP of an XGBoost model on its dense input, summed per input, on the calibrated
    scale: ``(C, bias, D, inputs)`` with ``C[i, c, j]`` row ``i``'s contribution of input
    ``inputs[j]`` to cohort ``c``'s calibrated logit, ``bias`` the rest of that logit and ``D``
    the dense rows."""
    import xgboost as xgb

    D = model.dense.transform(X, rows)
    t = float(calibrator.temperature)
    raw = model.model.predict(xgb.DMatrix(D, nthread=1), pred_contribs=True)
    raw = np.asarray(raw, dtype=np.float64).reshape(D.shape[0], len(model.classes), D.shape[1] + 1)
    names = list(dict.fromkeys(model.dense.inputs()))
    where = np.array([names.index(i) for i in model.dense.inputs()])
    C = np.zeros((D.shape[0], len(model.classes), len(names)))
    for j in range(len(names)):
        C[:, :, j] = raw[:, :, :-1][:, :, where == j].sum(axis=2)
    return C / t, raw[:, :, -1] / t + np.asarray(calibrator.bias, dtype=np.float64), D, names


def _dense_terms(
    model: Any, D: np.ndarray, names: list[str], row: Mapping[str, Any]
) -> tuple[list[int], list[str], list[str]]:
    """Per input present in the row (a column not NaN): its index, its kind and what it held."""
    from hhpulse.model.features import CATEGORIES

    dense = model.dense
    inputs = dense.inputs()
    present, kinds, terms = [], [], []
    for j, name in enumerate(names):
        cols = [c for c, i in enumerate(inputs) if i == name]
        if np.isnan(D[cols]).all():
            continue
        present.append(j)
        if name in dense.scores:
            kinds.append("score")
            if name == CATEGORIES:
                terms.append(", ".join(sorted(dense._tokens([row], 1)[0])) or name)
            else:
                fields = [f for f in dense.groups[name] if str(row.get(f) or "").strip()]
                terms.append(f"{name}: linear score of {' + '.join(fields)}")
        elif name in dense.layout:
            kinds.append("length")
            terms.append(f"{name}: {int(D[cols[0]])} tokens")
        else:
            kinds.append("structured")
            value = row.get(name)
            if name in ("area", "employer"):
                terms.append(f"{name}={value} ({int(D[cols[0]])} training rows)")
            elif isinstance(value, (list, tuple)):
                terms.append(f"{name}={'|'.join(map(str, value))}")
            else:
                terms.append(f"{name}={value}")
    return present, kinds, terms


def _explain_batch(bundle: Any, rows: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    X = sp.csr_matrix(bundle.vectorizer.transform(rows))
    names = feature_terms(bundle.vectorizer)
    out: list[dict[str, Any]] = [{} for _ in rows]
    for task, model in bundle.models.items():
        cal = bundle.calibrators[task]
        if model.config.kind == "xgboost" and model.dense is not None:
            C, bias, D, inputs = dense_contributions(model, cal, X, rows)
            _explain_dense(out, bundle.cohorts[task], task, model, C, bias, D, inputs, rows, top)
            continue
        if model.config.kind == "xgboost":
            C, bias = xgb_contributions(model, cal, X)
            logits = C.sum(axis=2) + bias
            method = "XGBoost TreeSHAP (pred_contribs)"
        else:
            C = None
            logits = linear_logits(model, cal, X)
            bias = np.broadcast_to(
                model.model["intercept"] / float(cal.temperature) + np.asarray(cal.bias), logits.shape
            )
            method = "coefficient x TF-IDF value (exact)"
        z = logits - logits.max(axis=1, keepdims=True)
        proba = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        cohorts = bundle.cohorts[task]
        for i, row in enumerate(rows):
            c = int(np.argmax(proba[i]))
            present = X.indices[X.indptr[i] : X.indptr[i + 1]]
            if C is not None:
                vals, total = C[i, c, present], float(C[i, c].sum())
            else:
                x = X.data[X.indptr[i] : X.indptr[i + 1]]
                vals = model.model["coef"][c, present] * x / float(cal.temperature)
                total = float(vals.sum())
            up, down = np.flatnonzero(vals > 0), np.flatnonzero(vals < 0)
            up = up[np.argsort(-vals[up], kind="stable")][:top]
            down = down[np.argsort(vals[down], kind="stable")][:top]
            rest = total - float(vals[up].sum()) - float(vals[down].sum())
            out[i][task] = _record(
                cohorts,
                c,
                proba[i],
                logits[i],
                bias[i],
                _terms(present[up], vals[up], names, row),
                _terms(present[down], vals[down], names, row),
                rest,
                method,
            )
    for o in out:
        o["model_version"] = bundle.version
    return out


def _explain_dense(
    out: list[dict[str, Any]],
    cohorts: Sequence[str],
    task: str,
    model: Any,
    C: np.ndarray,
    bias: np.ndarray,
    D: np.ndarray,
    inputs: list[str],
    rows: list[dict[str, Any]],
    top: int,
) -> None:
    logits = C.sum(axis=2) + bias
    z = logits - logits.max(axis=1, keepdims=True)
    proba = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    for i, row in enumerate(rows):
        c = int(np.argmax(proba[i]))
        present, kinds, terms = _dense_terms(model, D[i], inputs, row)
        vals = C[i, c, present] if present else np.zeros(0)
        total = float(C[i, c].sum())
        up, down = np.flatnonzero(vals > 0), np.flatnonzero(vals < 0)
        up = up[np.argsort(-vals[up], kind="stable")][:top]
        down = down[np.argsort(vals[down], kind="stable")][:top]
        rest = total - float(vals[up].sum()) - float(vals[down].sum())

        listed = [
            [
                {
                    "term": terms[j],
                    "token": inputs[present[j]],
                    "field": kinds[j],
                    "contribution": round(float(vals[j]), 6),
                }
                for j in sel
            ]
            for sel in (up, down)
        ]
        out[i][task] = _record(
            cohorts,
            c,
            proba[i],
            logits[i],
            bias[i],
            listed[0],
            listed[1],
            rest,
            "XGBoost TreeSHAP (pred_contribs) per input of its dense input",
        )


def _record(
    cohorts: Sequence[str],
    c: int,
    proba: np.ndarray,
    logits: np.ndarray,
    bias: np.ndarray,
    toward: list[Any],
    away: list[Any],
    rest: float,
    method: str,
) -> dict[str, Any]:
    """One row's explanation for one task, toward cohort ``c`` (``proba``, ``logits``, ``bias``:
    the row's, one value per cohort)."""
    return {
        "cohort": cohorts[c],
        "probability": round(float(proba[c]), 6),
        "logit": round(float(logits[c]), 6),
        "logits": {k: round(float(v), 6) for k, v in zip(cohorts, logits, strict=True)},
        "bias": round(float(bias[c]), 6),
        "toward": toward,
        "away": away,
        "rest": round(rest, 6),
        "method": method,
    }


def top_terms_by_cohort(
    bundle: Any, instances: Sequence[Any], task: str = "salary", n: int = 15, batch: int = 32
) -> dict[str, dict[str, list[tuple[str, str, float]]]]:
    """The terms that on average push hardest toward and away from each cohort of ``task``
    over ``instances`` (mean contribution to the cohort's calibrated logit):
    ``{cohort: {"toward": [(field, term, mean)], "away": [...]}}``."""
    return top_terms(
        bundle.vectorizer, bundle.models[task], bundle.calibrators[task], instances, n=n, batch=batch
    )


def top_terms(
    vectorizer: Any, model: Any, cal: Any, instances: Sequence[Any], n: int = 15, batch: int = 32
) -> dict[str, dict[str, list[tuple[str, str, float]]]]:
    """:func:`top_terms_by_cohort` for a model and calibrator outside a bundle (the pipeline)."""
    rows = [to_instance(i).as_dict() for i in instances]
    cohorts = list(model.classes)
    if model.config.kind == "xgboost" and model.dense is not None:
        return _top_inputs(vectorizer, model, cal, rows, n, batch)
    total = np.zeros((len(cohorts), vectorizer.n_features))
    for start in range(0, len(rows), batch):
        X = vectorizer.transform(rows[start : start + batch])
        if model.config.kind == "xgboost":
            total += xgb_contributions(model, cal, X)[0].sum(axis=0)
        else:
            total += np.asarray(X.sum(axis=0)).ravel()[None, :] * model.model["coef"] / cal.temperature
    mean = total / max(1, len(rows))
    names = feature_terms(vectorizer)
    out = {}
    for c, cohort in enumerate(cohorts):
        order = np.argsort(-mean[c], kind="stable")
        out[cohort] = {
            "toward": [(*names[j], float(mean[c, j])) for j in order[:n] if mean[c, j] > 0],
            "away": [(*names[j], float(mean[c, j])) for j in order[::-1][:n] if mean[c, j] < 0],
        }
    return out


def _top_inputs(
    vectorizer: Any, model: Any, cal: Any, rows: list[dict[str, Any]], n: int, batch: int
) -> dict[str, dict[str, list[tuple[str, str, float]]]]:
    """:func:`top_terms` of an XGBoost model on its dense input: per input, not per term."""
    total, inputs = None, []
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        C, _, _, inputs = dense_contributions(model, cal, vectorizer.transform(part), part)
        total = C.sum(axis=0) if total is None else total + C.sum(axis=0)
    if total is None:
        return {c: {"toward": [], "away": []} for c in model.classes}
    mean = total / max(1, len(rows))
    out = {}
    for c, cohort in enumerate(model.classes):
        order = np.argsort(-mean[c], kind="stable")
        out[cohort] = {
            "toward": [("input", inputs[j], float(mean[c, j])) for j in order[:n] if mean[c, j] > 0],
            "away": [("input", inputs[j], float(mean[c, j])) for j in order[::-1][:n] if mean[c, j] < 0],
        }
    return out


def top_terms_markdown(terms: Mapping[str, Mapping[str, list[tuple[str, str, float]]]], task: str) -> str:
    """A Markdown artifact for the Kubeflow UI: one table per cohort."""
    lines = [
        f"# Strongest terms per {task} cohort",
        "",
        "Mean contribution to the cohort's calibrated logit over the test rows "
        "(coefficient x TF-IDF for a linear model; TreeSHAP for XGBoost, per input of its dense input).",
        "",
    ]
    for cohort, d in terms.items():
        lines += [
            f"## {cohort}",
            "",
            "| toward | field | mean | away | field | mean |",
            "|---|---|---:|---|---|---:|",
        ]
        toward, away = list(d["toward"]), list(d["away"])
        for i in range(max(len(toward), len(away))):
            cells = []
            for side in (toward, away):
                if i < len(side):
                    f, t, v = side[i]
                    cells += [f"`{t.replace('|', '/')}`", f, f"{v:+.4f}"]
                else:
                    cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
