"""The published fit: each winner refitted on every labelled row of the training window.

Training measures a winner honestly by holding rows out: it is fitted on the oldest rows
(``train``), chosen on the next (``val``) and measured on the newest (``test``). That
*held-out fit* gives every figure of a run (metrics.json, the model card's test figures,
the gate's comparison with the champion). But in a drifting market the newest rows matter
most, and the held-out fit never learns from them. So, after evaluation (in the pipeline:
after the gate passes), :func:`refit_bundle` fits the same configuration again, on train +
validation + test, and that **published fit** is the bundle that is published and served:

* the vectorizer is refitted on the window's rows (the newest terms are known too);
* each task's winner keeps its configuration (parameters, field dropout); an XGBoost
  winner trains the held-out fit's number of boosting rounds (``best_iteration + 1``),
  since no rows are left to early-stop on;
* the calibrator is fitted to what the published model will see, new rows just after its
  training window: on **time-ordered out-of-fold predictions** (the validation rows
  predicted by the held-out fit, which is the fit on train, the test rows by a fit on
  train + validation), never on the published fit's own training rows, which it is
  over-confident about;
* its prior (the cohort mix it assumes) is chosen by a **backtest on earlier slices**
  (:data:`PRIOR_RULES`): the slices' own mix moves (on the shared dump, ``ge_200k`` is
  0.21 of train, 0.40 of validation and 0.28 of test), so the mix of the calibration rows
  is not necessarily the best guess for the next rows. Each rule is fitted on the
  validation slice and scored on the test slice, and the rule with the smallest
  ``max(top-label ECE, largest cohort-mix error)`` there is applied to the calibrator fitted
  on both slices. The measurement is kept in ``metrics.json`` (``published_calibration``)
  and the model card;
* ``training_ids.npz`` holds every row the published fit saw (train, validation and test of
  both tasks), so a later gate never scores this bundle on rows it was fitted on.

The held-out bundle stays what the gate reads; the published bundle keeps the held-out
bundle's version and figures, and says in its model card which fit was measured and which
one was published (``fits``), with row counts and date ranges.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hhpulse.config import TASKS, CandidateConfig, FeatureConfig
from hhpulse.model.calibration import Calibrator, fit_calibrator, softmax, summary
from hhpulse.model.dataset import Dataset, TaskData, instance_frame, time_order
from hhpulse.model.evaluate import classification_metrics, data_profile
from hhpulse.model.features import TextVectorizer, token_counts
from hhpulse.model.report import REPORT_NAME
from hhpulse.model.train import TrainedCandidate, dense_input, fit_candidate, only_responsibility

log = logging.getLogger(__name__)

WINDOW_PARTS = ("train", "val", "test")
FIELDS = ["responsibility", "name", "requirement"]
# How the published calibrator's prior (the cohort mix it assumes) is set; chosen per task by
# a backtest on earlier slices (see published_calibrator)
PRIOR_RULES = {
    "none": "no calibration: the model's own probabilities, with the class-balanced prior its "
    "balanced class weights give it",
    "model": "no bias: the temperature alone, so the prior stays the model's own (balanced class "
    "weights: near-uniform)",
    "slices": "biases fitted by log loss on every calibration slice (their pooled mix)",
    "newest": "biases set so the newest calibration slice's predicted mix is its label mix",
    "window": "biases set so the calibration slices' predicted mix is the mix of every labelled row",
}


def window_rows(td: TaskData) -> pd.DataFrame:
    """Every labelled row of the training window (train, validation, test; not pending)."""
    return td.frame[td.frame["part"].isin(WINDOW_PARTS)]


def window_ids(dataset: Dataset) -> dict[str, set[str]]:
    """Per task, the ids of every row the published fit sees."""
    return {t: set(window_rows(td)["id"].astype(str)) for t, td in dataset.tasks.items()}


def _matrix(
    vec: TextVectorizer, rows: pd.DataFrame, config: CandidateConfig, fcfg: FeatureConfig
) -> tuple[sp.csr_matrix, list[str]]:
    """Features and labels of ``rows``, with the responsibility-only copies when the candidate
    trains on them (as :func:`hhpulse.model.train.featurize` builds the training split)."""
    X, y = vec.transform(rows), rows["label"].tolist()
    if config.field_dropout and fcfg.field_dropout and len(fcfg.fields) > 1:
        X = sp.csr_matrix(sp.vstack([X, vec.transform(only_responsibility(rows))]))
        y = y + y
    return X, y


def refit_rounds(model: TrainedCandidate) -> int | None:
    """Boosting rounds for a refit of an XGBoost winner: the held-out fit's early-stopped count."""
    if model.config.kind != "xgboost":
        return None
    best = model.info.get("best_iteration")
    if best is None:
        raise ValueError(f"{model.config.name}: no best_iteration in the held-out fit's info to refit with")
    return int(best) + 1


def fit_rows(
    config: CandidateConfig,
    vec: TextVectorizer,
    rows: pd.DataFrame,
    classes: Sequence[str],
    fcfg: FeatureConfig,
    *,
    rounds: int | None,
    device: str = "auto",
) -> TrainedCandidate:
    """Fit ``config`` on ``rows`` as they are (no held-out rows; XGBoost trains ``rounds``, on
    its dense input built from these rows, as :func:`hhpulse.model.train.fit_on` builds it)."""
    if config.kind == "xgboost" and dense_input(config):
        copies = config.field_dropout and fcfg.field_dropout and len(fcfg.fields) > 1
        lengths: dict[str, list[int]] = {}
        X = vec.transform(rows, lengths=lengths)
        return fit_candidate(
            config,
            X,
            rows["label"].tolist(),
            None,
            None,
            classes,
            device=device,
            rounds=rounds,
            rows=instance_frame(rows).assign(_order=time_order(rows), **token_counts(lengths)),
            layout=vec.layout(),
            X_alone=vec.transform(only_responsibility(rows)) if copies else None,
            copies=copies,
        )
    X, y = _matrix(vec, rows, config, fcfg)
    return fit_candidate(config, X, y, None, None, classes, device=device, rounds=rounds)


def _mix(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    labels = list(map(str, labels))
    return np.array([labels.count(c) / max(1, len(labels)) for c in classes])


def with_prior(cal: Calibrator, proba: np.ndarray, target: np.ndarray, rule: str) -> Calibrator:
    """``cal``'s temperature, with biases set so that the mean calibrated probability over
    ``proba`` equals ``target`` (a few fixed-point steps on the biases)."""
    target = np.clip(np.asarray(target, dtype=np.float64), 1e-4, None)
    target = target / target.sum()
    logp = np.log(np.clip(proba, 1e-12, None)) / cal.temperature
    b = np.zeros(len(cal.classes))
    for _ in range(200):
        q = softmax(logp + b).mean(axis=0)
        step = np.log(target) - np.log(np.clip(q, 1e-12, None))
        b += step
        if float(np.max(np.abs(step))) < 1e-7:
            break
    b -= b.mean()
    out = Calibrator(
        list(cal.classes),
        "bias_temperature",
        cal.temperature,
        [float(v) for v in b],
        fitted_on={**cal.fitted_on, "prior_rule": rule},
    )
    out.priors = {c: float(v) for c, v in zip(cal.classes, out.apply(proba).mean(axis=0), strict=True)}
    return out


def rule_calibrator(
    rule: str,
    slices: Sequence[tuple[Sequence[str], np.ndarray]],
    window_labels: Sequence[str],
    classes: Sequence[str],
) -> Calibrator:
    """The calibrator of one prior rule (:data:`PRIOR_RULES`), fitted on ``slices`` (labels and
    out-of-fold probabilities, oldest first); ``window_labels``: every labelled row up to the
    newest slice."""
    labels = [str(v) for y, _ in slices for v in y]
    proba = np.vstack([p for _, p in slices])
    info = {"rows": len(labels), "prior_rule": rule}
    if rule == "none":
        cal = Calibrator(list(classes), "none", fitted_on=info)
        cal.priors = {c: float(v) for c, v in zip(classes, proba.mean(axis=0), strict=True)}
        return cal
    if rule == "model":
        return fit_calibrator(labels, proba, classes, method="temperature", fitted_on=info)
    cal = fit_calibrator(labels, proba, classes, method="bias_temperature", fitted_on=info)
    if rule == "slices" or cal.method == "none":
        return cal
    if rule == "newest":
        y_new, p_new = slices[-1]
        return with_prior(cal, p_new, _mix(y_new, classes), rule)
    return with_prior(cal, proba, _mix(window_labels, classes), rule)


def _brief(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ece": m.get("ece"),
        "mix_error": (m.get("mix") or {}).get("max_abs_error"),
        "log_loss": m.get("log_loss"),
        "roc_auc_ovo": m.get("roc_auc_ovo"),
    }


def published_calibrator(
    config: CandidateConfig,
    vec: TextVectorizer,
    td: TaskData,
    fcfg: FeatureConfig,
    *,
    rounds: int | None,
    device: str = "auto",
    held: tuple[TrainedCandidate, TextVectorizer] | None = None,
) -> tuple[Calibrator, dict[str, Any]]:
    """The published fit's calibrator and the measurement that chose its prior (see the module).

    Out-of-fold, time-ordered: the validation rows are predicted by ``config`` fitted on the
    training rows, the test rows by ``config`` fitted on training + validation rows. ``held``
    (the held-out fit of ``config`` on the training rows, and its vectorizer) predicts the
    validation rows instead of a second fit on the same rows: the same model, trained again.
    """
    classes = list(td.classes)
    tr, va, te = td.part("train"), td.part("val"), td.part("test")
    slices: list[tuple[str, pd.DataFrame, np.ndarray]] = []
    by: dict[str, str] = {}
    for name, before, rows in (("val", tr, va), ("test", pd.concat([tr, va]), te)):
        if rows.empty or before["label"].nunique() < 2:
            continue
        records, lengths = rows[FIELDS].to_dict("records"), {}
        if name == "val" and held is not None and held[0].config.name == config.name:
            model, by[name] = held[0], "the held-out fit (on every older row)"
            X = held[1].transform(records, lengths=lengths)
        else:
            model = fit_rows(config, vec, before, classes, fcfg, rounds=rounds, device=device)
            X, by[name] = vec.transform(records, lengths=lengths), "a fit on every older row"
        inputs = instance_frame(rows).assign(**token_counts(lengths))
        slices.append((name, rows, model.predict_proba(X, inputs)))
    report: dict[str, Any] = {
        "fitted_on": "time-ordered out-of-fold predictions: "
        + ", ".join(f"{n} ({len(r)} rows) by {by[n]}" for n, r, _ in slices),
        "rules": dict(PRIOR_RULES),
    }
    if not slices:
        note = "no out-of-fold slice could be predicted (too few older rows): left uncalibrated"
        report.update(note=note, method="none", temperature=1.0, prior_rule=None)
        return Calibrator(classes, fitted_on={"note": note, "prior_rule": None}), report
    everything = window_rows(td)["label"].astype(str).tolist()
    pairs = [(r["label"].astype(str).tolist(), p) for _, r, p in slices]
    rule, backtest = "slices", {}
    if len(slices) == 2:
        # the backtest: every rule fitted on the older slice alone, scored on the newer one
        older_window = pd.concat([tr, slices[0][1]])["label"].astype(str).tolist()
        y_new, p_new = pairs[1]
        for r in PRIOR_RULES:
            c = rule_calibrator(r, pairs[:1], older_window, classes)
            backtest[r] = _brief(classification_metrics(y_new, c.apply(p_new), classes))
        rule = min(
            PRIOR_RULES,
            key=lambda r: (
                round(max(backtest[r]["ece"], backtest[r]["mix_error"]), 6),
                list(PRIOR_RULES).index(r),
            ),
        )
        report["backtest"] = {
            "fitted_on": f"val ({len(slices[0][1])} rows, out of fold)",
            "scored_on": f"test ({len(slices[1][1])} rows, out of fold)",
            "chosen_by": "the smallest max(top-label ECE, largest cohort-mix error) on the later slice",
            "rules": backtest,
        }
    fitted = {r: rule_calibrator(r, pairs, everything, classes) for r in PRIOR_RULES}
    final = fitted[rule]
    newest = pairs[-1][0]
    report.update(
        method=final.method,
        temperature=final.temperature,
        bias=dict(zip(classes, final.bias, strict=True)),
        prior_rule=rule,
        # every rule's calibrator fitted on the same slices: what the backtest chose among
        candidates={
            r: {
                "method": c.method,
                "temperature": c.temperature,
                "bias": dict(zip(classes, c.bias, strict=True)),
            }
            for r, c in fitted.items()
        },
        priors=final.priors,
        slices={n: {"before": summary(classification_metrics(r["label"], p, classes))} for n, r, p in slices},
        mixes={
            "newest": dict(zip(classes, _mix(newest, classes).round(4).tolist(), strict=True)),
            "window": dict(zip(classes, _mix(everything, classes).round(4).tolist(), strict=True)),
        },
    )
    for n, r, p in slices:
        report["slices"][n]["after"] = summary(classification_metrics(r["label"], final.apply(p), classes))
    report["weeks"] = weekly_calibration(
        pd.concat([r for _, r, _ in slices]), np.vstack([final.apply(p) for _, _, p in slices]), classes
    )
    log.info(
        "%s: published calibrator %s, prior rule %s (backtest %s)", td.task, final.method, rule, backtest
    )
    return final, report


def weekly_calibration(rows: pd.DataFrame, proba: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Top-label ECE and the largest cohort-mix error of ``proba`` (rows follow ``rows``) per week
    of the window (the Monday, UTC), oldest first. A row's week is that of its first sighting
    (``first_seen``, else ``collected_at``), the time the window's split orders rows by (see
    :func:`hhpulse.model.dataset.time_order`), else of its ``published_at``; rows with none of
    them apart, as ``unknown``. (By publication alone, the real dump's out-of-fold rows, most of
    them records that are not API items, fell into ``unknown``.)"""
    when = None
    for col in ("first_seen", "collected_at", "published_at"):
        if col in rows:
            got = pd.to_datetime(rows[col], utc=True, errors="coerce")
            when = got if when is None else when.fillna(got)
    weeks = (
        np.array(["unknown"] * len(rows), dtype=object)
        if when is None
        else np.array(
            [
                "unknown" if pd.isna(t) else (t - pd.Timedelta(days=t.weekday())).date().isoformat()
                for t in when
            ],
            dtype=object,
        )
    )
    labels = rows["label"].astype(str).to_numpy()
    out = []
    for w in sorted(set(weeks), key=lambda x: (x != "unknown", x)):
        m = weeks == w
        got = classification_metrics(labels[m].tolist(), proba[m], classes)
        out.append(
            {
                "week": w,
                "rows": int(m.sum()),
                "ece": got.get("ece"),
                "mix_error": (got.get("mix") or {}).get("max_abs_error"),
            }
        )
    return out


def _dates(rows: pd.DataFrame, col: str = "published_at") -> list[str | None]:
    s = pd.to_datetime(rows[col], utc=True).dropna() if col in rows else pd.Series(dtype=object)
    return [str(s.min()), str(s.max())] if len(s) else [None, None]


def fits_document(td: TaskData, measured: TrainedCandidate, published: TrainedCandidate) -> dict[str, Any]:
    """Which fit was measured and which was published: rows and date ranges (published_at)."""
    parts = {
        p: {"rows": int((td.frame["part"] == p).sum()), "published_at": _dates(td.part(p))}
        for p in WINDOW_PARTS
    }
    rows = window_rows(td)
    return {
        "measured": {
            "fit": "held-out",
            "fitted_on": "train",
            "selected_on": "val",
            "tested_on": "test",
            "parts": parts,
            "model_rows": measured.info.get("train_rows"),
        },
        "published": {
            "fit": "refit on train+val+test",
            "rows": int(len(rows)),
            "published_at": _dates(rows),
            "model_rows": published.info.get("train_rows"),
            **({"rounds": published.info.get("rounds")} if published.config.kind == "xgboost" else {}),
        },
    }


def refit_bundle(
    heldout_dir: str | Path,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    synthetic: bool = False,
    device: str = "auto",
) -> Path:
    """The published bundle: the held-out bundle's winners refitted on every labelled row of
    ``dataset`` (the dataset the held-out bundle was built from), with a calibrator fitted
    out of fold; same version, the held-out fit's figures, and the fits in the model card."""
    from hhpulse.model.bundle import build_bundle, git_commit, load_bundle

    held = load_bundle(heldout_dir)
    fcfg = held.vectorizer.config
    rows = pd.concat([window_rows(td) for td in dataset.tasks.values()]).drop_duplicates("id")
    vec = TextVectorizer(fcfg).fit(rows)
    models, calibrators, cal_report, fits = {}, {}, {}, {}
    for task in TASKS:
        td, win = dataset.tasks[task], held.models[task]
        rounds = refit_rounds(win)
        models[task] = fit_rows(
            win.config, vec, window_rows(td), td.classes, fcfg, rounds=rounds, device=device
        )
        models[task].info["fit"] = "published (train+val+test)"
        calibrators[task], cal_report[task] = published_calibrator(
            win.config, vec, td, fcfg, rounds=rounds, device=device, held=(win, held.vectorizer)
        )
        fits[task] = fits_document(td, win, models[task])
        log.info(
            "%s: %s refitted on %d rows (held-out fit: %s rows)",
            task,
            win.config.name,
            fits[task]["published"]["rows"],
            fits[task]["measured"]["parts"]["train"]["rows"],
        )
    metrics = {**held.metadata["metrics"], "fits": fits, "published_calibration": cal_report}
    card = {
        "summary": dataset.summary,
        "runs": dataset.summary.get("runs", []),
        "label_config": held.metadata["label_config"],
        "synthetic": synthetic,
        "git_commit": git_commit(),
        "fits": fits,
        "published_calibration": cal_report,
    }
    profile = data_profile(
        {t: window_rows(td) for t, td in dataset.tasks.items()}, vec.common_terms("responsibility", 300)
    )
    path = build_bundle(
        out_dir,
        vectorizer=vec,
        models=models,
        cohorts=held.cohorts,
        label_config=held.metadata["label_config"],
        metrics=metrics,
        card=card,
        profile=profile,
        version=held.version,
        training_ids=window_ids(dataset),
        calibrators=calibrators,
    )
    report = Path(heldout_dir) / REPORT_NAME
    if report.is_file():  # the evaluation report and the gate's verdict travel with the published fit
        from hhpulse.model.bundle import write_manifest

        shutil.copyfile(report, Path(path) / REPORT_NAME)
        write_manifest(Path(path), held.version)
    return Path(path)
