"""End-to-end training and comparison, composed from the step functions.

The CLI (``hhpulse train``/``evaluate``) calls these directly; the pipeline calls the
same step functions one component at a time.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hhpulse.config import CandidateConfig, FeatureConfig, LabelConfig, SplitConfig, load_candidates
from hhpulse.data.store import open_store
from hhpulse.data.validate import ValidationReport
from hhpulse.model.bundle import ModelBundle, build_bundle, git_commit
from hhpulse.model.dataset import (
    Dataset,
    build_dataset,
    instance_frame,
    instances,
    resolved_labels,
    young_history,
    young_level,
)
from hhpulse.model.evaluate import classification_metrics, data_profile, score
from hhpulse.model.gate import (
    LIVE_MIN_ROWS,
    PairedInterval,
    ServedOutcomes,
    TaskPredictions,
    fitted_mask,
    interval,
    live_evidence,
    metric_interval,
    paired_evidence,
)
from hhpulse.model.train import (
    DEFAULT_PRIMARY,
    DEFAULT_SELECTION,
    FeatureSet,
    TaskResult,
    TrainedCandidate,
    featurize,
    train_task,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedData:
    """What ``--data`` held: the history, each run's currency rates, whether any of it is
    synthetic, and (for a file) the data-contract report of its rows."""

    history: pd.DataFrame
    rates_by_run: dict[str, dict[str, float]]
    synthetic: bool
    report: ValidationReport | None = None
    window: dict[str, Any] | None = None  # the history window read from a store (None: a file)

    def summary(self) -> str | None:
        """One line on what was read and left out (None for a store: collect validated it)."""
        if self.report is None:
            return None
        r = self.report
        rules = ", ".join(f"{k}: {v.count}" for k, v in sorted(r.rules.items()) if v.severity == "error")
        left = f"{r.bad} left out by the data contract ({rules})" if r.bad else "none left out"
        return f"{r.total} rows read, {left}; {len(self.history)} vacancies"


def load_data(
    spec: str, *, rates: str | None = None, window_days: int | None = None, version: int | None = None
) -> LoadedData:
    """Read ``--data``: a store location, or a file of API items (``-`` for stdin).

    A store (folder or ``s3://``) gives its folded history: the open vacancies plus those
    closed in the ``window_days`` before its newest run (None: all of it), all read from one
    version of the history table (``version``: an earlier one, time travel; the window then
    ends at that version's newest run, so the same version and window give the same rows). A file (JSON
    lines of API items, optionally gzipped) is imported as a one-run history in memory,
    with currency rates from ``rates`` (a saved ``GET /dictionaries``) when given; its rows
    go through the data contract, and rows that break it (or lines that are not items at
    all) are left out and counted, never a crash.
    """
    from hhpulse.data.history import build_history, load_raw_runs
    from hhpulse.data.history_store import rates_by_run, read_window

    path = Path(spec)
    if spec != "-" and (spec.startswith("s3://") or path.is_dir()):
        if rates:
            raise ValueError(
                "--rates applies to a file of items; a store keeps each run's own currency rates"
            )
        store = open_store(spec)
        read = read_window(store, window_days, version=version)
        hist, runs = read.history, read.runs
        used = set(hist["last_run_id"].dropna())
        synthetic = any(
            runs[r].get("synthetic") if r in runs else store.get_json(f"raw/{r}/meta.json").get("synthetic")
            for r in used
        )
        return LoadedData(hist, read.rates, synthetic, window=read.window)
    if version is not None:
        raise ValueError("--as-of reads a version of a store's history table; --data is a file")
    if spec != "-" and not path.is_file():
        raise FileNotFoundError(f"--data {spec!r} is neither a store folder, an s3:// URL, nor a file")
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import make_source
    from hhpulse.data.validate import validate_run

    with tempfile.TemporaryDirectory(prefix="hhpulse-data-") as tmp:
        store = open_store(tmp)
        result = collect(make_source(f"file:{spec}", rates=rates), store, progress=False)
        report = validate_run(store, result.run_id, max_bad_fraction=1.0)
        return LoadedData(build_history(load_raw_runs(store)), rates_by_run(store), False, report)


def history_from_data(
    spec: str, *, rates: str | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], bool]:
    """(history, rates_by_run, synthetic) of :func:`load_data`."""
    data = load_data(spec, rates=rates)
    return data.history, data.rates_by_run, data.synthetic


@dataclass
class TrainingReport:
    bundle_dir: Path  # the bundle to publish: the refit (or the held-out fit with refit=False)
    version: str
    results: dict[str, TaskResult]
    summary: dict[str, Any]
    heldout_dir: Path | None = None  # the held-out fit's bundle, when kept (keep_heldout)
    refit: bool = True


def metrics_document(results: dict[str, TaskResult]) -> dict[str, Any]:
    return {
        t: {
            "winner": r.winner,
            "primary": r.primary,
            "candidates": r.candidates,
            "baseline": r.baseline,
            "selection": {"rule": r.selection, "score": r.selection_rule()},
        }
        for t, r in results.items()
    }


def bundle_from_results(
    out_dir: str | Path,
    dataset: Dataset,
    vectorizer: Any,
    winners: dict[str, TrainedCandidate],
    results: dict[str, TaskResult],
    *,
    label_config: LabelConfig,
    synthetic: bool = False,
    version: str | None = None,
) -> Path:
    """Build the bundle from trained winners (used by the CLI and the select_winner step)."""
    from hhpulse.model.calibration import calibrate_winners

    calibrators, calibration = calibrate_winners(dataset, vectorizer, winners)
    intervals = test_intervals(dataset, vectorizer, winners)
    train_frames = {t: td.part("train") for t, td in dataset.tasks.items()}
    profile = data_profile(train_frames, vectorizer.common_terms("responsibility", 300))
    card = {
        "summary": dataset.summary,
        "runs": dataset.summary.get("runs", []),
        "label_config": label_config.to_dict(),
        "synthetic": synthetic,
        "git_commit": git_commit(),
    }
    return build_bundle(
        out_dir,
        vectorizer=vectorizer,
        models=winners,
        cohorts={t: dataset.tasks[t].classes for t in dataset.tasks},
        label_config=label_config.to_dict(),
        metrics={
            **metrics_document(results),
            "dataset": dataset.summary,
            "boundaries": {t: td.boundaries for t, td in dataset.tasks.items()},
            "calibration": calibration,
            "test_intervals": intervals,
            "young_history": young_history(
                dataset.summary, {t: td.boundaries for t, td in dataset.tasks.items()}
            ),
        },
        card=card,
        profile=profile,
        version=version,
        training_ids=fitted_ids(dataset),
        calibrators=calibrators,
    )


def test_intervals(dataset: Dataset, vectorizer: Any, winners: Mapping[str, Any]) -> dict[str, Any]:
    """Per task, the winner's test ROC AUC (OvO) with its stratified bootstrap interval: how far
    the offline figure can be trusted (a young history's test set is small and easy). The rows
    are given whole, texts and structured fields, as for the test figure itself: an XGBoost
    winner's dense input reads the structured fields."""
    out: dict[str, Any] = {}
    for task, model in winners.items():
        rows = dataset.tasks[task].part("test")
        if rows.empty:
            continue
        X = vectorizer.transform(rows[["responsibility", "name", "requirement"]].to_dict("records"))
        proba = model.predict_proba(X, instance_frame(rows))
        out[task] = metric_interval(rows["label"].astype(str).tolist(), proba, dataset.tasks[task].classes)
    return out


def fitted_ids(dataset: Dataset) -> dict[str, set[str]]:
    """Per task, the ids of every row a model was fitted or selected on (train and validation)."""
    return {
        t: set(td.frame.loc[td.frame["part"].isin(["train", "val"]), "id"].astype(str))
        for t, td in dataset.tasks.items()
    }


@dataclass
class TrainedCandidates:
    """Every candidate of both tasks trained on one dataset (the held-out fit), before a bundle."""

    dataset: Dataset
    vectorizer: Any
    results: dict[str, TaskResult]
    trained: dict[str, dict[str, TrainedCandidate]]  # task -> candidate name -> model
    label_config: LabelConfig

    def reselect(self, selection: str) -> dict[str, TaskResult]:
        """The winners under another selection rule, from the same trained candidates."""
        from hhpulse.model.train import select_winner

        return {
            t: select_winner(t, r.candidates, r.primary, r.baseline, selection)
            for t, r in self.results.items()
        }


def train_candidates(
    history: pd.DataFrame,
    rates_by_run: dict[str, dict[str, float]],
    *,
    label_config: LabelConfig | None = None,
    feature_config: FeatureConfig | None = None,
    split_config: SplitConfig | None = None,
    candidates: Sequence[CandidateConfig] | None = None,
    device: str = "auto",
    primary: str = DEFAULT_PRIMARY,
    selection: str = DEFAULT_SELECTION,
    history_window: dict[str, Any] | None = None,
) -> TrainedCandidates:
    """Labels, split, features, every candidate of both tasks, and the winners (held-out fit)."""
    label_config = label_config or LabelConfig()
    dataset = build_dataset(history, rates_by_run, label_config, split_config or SplitConfig())
    if history_window is not None:
        dataset.summary["history_window"] = history_window
    return train_candidates_on(
        dataset,
        label_config=label_config,
        feature_config=feature_config,
        candidates=candidates,
        device=device,
        primary=primary,
        selection=selection,
    )


def train_candidates_on(
    dataset: Dataset,
    *,
    label_config: LabelConfig,
    feature_config: FeatureConfig | None = None,
    candidates: Sequence[CandidateConfig] | None = None,
    device: str = "auto",
    primary: str = DEFAULT_PRIMARY,
    selection: str = DEFAULT_SELECTION,
) -> TrainedCandidates:
    """Features, every candidate of both tasks, and the winners (held-out fit) on a built dataset."""
    vec, sets = featurize(dataset, feature_config or FeatureConfig())
    candidates = list(candidates or load_candidates())
    results, trained = {}, {}
    for task, fs in sets.items():
        results[task], trained[task] = train_task(
            fs, candidates, device=device, primary=primary, selection=selection
        )
    return TrainedCandidates(dataset, vec, results, trained, label_config)


def bundle_from_candidates(
    run: TrainedCandidates,
    out_dir: str | Path,
    *,
    results: dict[str, TaskResult] | None = None,
    device: str = "auto",
    synthetic: bool = False,
    version: str | None = None,
    refit: bool = True,
    keep_heldout: str | Path | None = None,
) -> TrainingReport:
    """The bundle of ``run``'s winners (``results``: other winners of the same candidates, e.g.
    :meth:`TrainedCandidates.reselect`). With ``refit`` the published fit (see
    :func:`train_from_history`), else the held-out fit."""
    from hhpulse.model.bundle import load_bundle

    results = results or run.results
    winners = {t: run.trained[t][r.winner] for t, r in results.items()}

    def heldout(path: str | Path) -> Path:
        return bundle_from_results(
            path,
            run.dataset,
            run.vectorizer,
            winners,
            results,
            label_config=run.label_config,
            synthetic=synthetic,
            version=version,
        )

    summary = run.dataset.summary
    if not refit:
        path = heldout(out_dir)
        return TrainingReport(path, load_bundle(path).version, results, summary, path, False)
    from hhpulse.model.refit import refit_bundle

    with tempfile.TemporaryDirectory(prefix="hhpulse-heldout-") as tmp:
        held = heldout(keep_heldout or Path(tmp) / "heldout")
        path = refit_bundle(held, run.dataset, out_dir, synthetic=synthetic, device=device)
    kept = Path(keep_heldout) if keep_heldout else None
    return TrainingReport(path, load_bundle(path).version, results, summary, kept, True)


def train_from_history(
    history: pd.DataFrame,
    rates_by_run: dict[str, dict[str, float]],
    out_dir: str | Path,
    *,
    label_config: LabelConfig | None = None,
    feature_config: FeatureConfig | None = None,
    split_config: SplitConfig | None = None,
    candidates: Sequence[CandidateConfig] | None = None,
    device: str = "auto",
    primary: str = DEFAULT_PRIMARY,
    selection: str = DEFAULT_SELECTION,
    synthetic: bool = False,
    version: str | None = None,
    history_window: dict[str, Any] | None = None,
    refit: bool = True,
    keep_heldout: str | Path | None = None,
) -> TrainingReport:
    """Labels, split, features, every candidate of both tasks, the winners, and the bundle.

    The winners are chosen (by ``selection``, see :func:`hhpulse.model.train.selection_score`) and
    measured by the held-out fit (train; validation; test). With ``refit`` (the default) the
    bundle written to ``out_dir`` is the published fit: the winners refitted on train +
    validation + test (:func:`hhpulse.model.refit.refit_bundle`), with the held-out fit's figures;
    ``keep_heldout`` keeps the held-out bundle in that folder. ``refit=False`` writes the
    held-out bundle to ``out_dir``, as before the refit existed. ``history_window``: which part
    of the history ``history`` is, for the model card.
    """
    run = train_candidates(
        history,
        rates_by_run,
        label_config=label_config,
        feature_config=feature_config,
        split_config=split_config,
        candidates=candidates,
        device=device,
        primary=primary,
        selection=selection,
        history_window=history_window,
    )
    return bundle_from_candidates(
        run,
        out_dir,
        device=device,
        synthetic=synthetic,
        version=version,
        refit=refit,
        keep_heldout=keep_heldout,
    )


def train_on_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    label_config: LabelConfig,
    feature_config: FeatureConfig | None = None,
    candidates: Sequence[CandidateConfig] | None = None,
    device: str = "auto",
    primary: str = DEFAULT_PRIMARY,
    selection: str = DEFAULT_SELECTION,
    synthetic: bool = False,
    version: str | None = None,
    refit: bool = False,
) -> TrainingReport:
    """Features, every candidate of both tasks, the winners, and the bundle, on a built dataset
    (the held-out fit unless ``refit``: the replay's daily gate compares held-out fits)."""
    run = train_candidates_on(
        dataset,
        label_config=label_config,
        feature_config=feature_config,
        candidates=candidates,
        device=device,
        primary=primary,
        selection=selection,
    )
    return bundle_from_candidates(
        run, out_dir, device=device, synthetic=synthetic, version=version, refit=refit
    )


def test_predictions(
    bundle: ModelBundle, dataset: Dataset, part: str | None = "test"
) -> dict[str, TaskPredictions]:
    """A loaded bundle's probabilities on a dataset's rows per task (``part=None``: every
    labelled row); tasks without rows are left out."""
    out = {}
    for task, td in dataset.tasks.items():
        rows = td.frame if part is None else td.part(part)
        if rows.empty:
            continue
        proba = bundle.predict_proba(instances(rows))[task]
        classes = bundle.cohorts[task]
        labels = rows["label"].astype(str).tolist()
        if set(labels) - set(classes):
            raise ValueError(
                f"{task}: the data has cohorts {sorted(set(labels) - set(classes))} the model does not know"
            )
        out[task] = TaskPredictions(rows["id"].astype(str).tolist(), labels, proba, list(classes))
    return out


def predictions_metrics(preds: Mapping[str, TaskPredictions]) -> dict[str, Any]:
    """Every metric per task of :func:`test_predictions`' output."""
    return {t: classification_metrics(p.labels, p.proba, p.classes) for t, p in preds.items()}


def evaluate_bundle(bundle: ModelBundle, dataset: Dataset, part: str | None = "test") -> dict[str, Any]:
    """Metrics of a loaded bundle on a dataset's rows (``part=None``: every labelled row)."""
    return predictions_metrics(test_predictions(bundle, dataset, part))


@dataclass
class GateResult:
    """What :func:`judge` found: the verdict and both models' test metrics (all test rows)."""

    verdict: dict[str, Any]
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None


GATE_RULES = ("margin", "bootstrap", "live")
DEFAULT_RULE = "live"


# what a tie does to a champion published on a young history (LiveRule.young_tie)
YOUNG_TIES = ("champion", "less-young", "mature", "challenger")


@dataclass(frozen=True)
class LiveRule:
    """How the gate's ``live`` rule weighs what the champion served and how young it is.

    * ``min_rows``: resolved served rows of the champion (the challenger was not fitted on)
      below which the live evidence is not weighed;
    * ``young_tie``: what a tie does when the champion was published on a young history
      (:func:`hhpulse.model.dataset.young_history`): ``"champion"`` (the default: a tie keeps it,
      so only evidence replaces a champion: the paired bootstrap on the new test rows, or the
      live rows), ``"mature"`` (a challenger trained on a history that is not young takes over on
      a tie), ``"less-young"`` (a challenger whose history is less young than the champion's,
      :func:`hhpulse.model.dataset.young_level`, takes over on a tie: an age-proxy champion gives
      way to the first challenger trained on resolved closes) or ``"challenger"`` (any fresher
      model takes over unless it is worse on the point estimates). ``hhpulse replay`` measures
      them side by side; handing ties over added replacements and served no better there.
    """

    min_rows: int = LIVE_MIN_ROWS
    young_tie: str = "champion"
    # on a tie, a challenger that learned from at least this many times the champion's resolved
    # demand labels takes over (None: never on that ground)
    refresh_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.young_tie not in YOUNG_TIES:
            raise ValueError(f"young_tie must be one of {', '.join(YOUNG_TIES)}, got {self.young_tie!r}")


def served_evidence(
    challenger: ModelBundle,
    outcomes: ServedOutcomes | None,
    primary: str = DEFAULT_PRIMARY,
    *,
    champion: ModelBundle | None = None,
    min_rows: int = LIVE_MIN_ROWS,
) -> dict[str, PairedInterval | str]:
    """The live evidence (:func:`hhpulse.model.gate.live_evidence`): the challenger on the inputs
    the champion served whose outcome has resolved, against what the champion served, on the
    rows neither was fitted on (``champion``: its bundle, whose training ids count too)."""
    if outcomes is None or not any(outcomes.rows(t) for t in outcomes.predictions):
        return {"demand": "no resolved served rows of the champion"}
    proba, fitted = {}, {}
    for task, preds in outcomes.predictions.items():
        if not preds.ids:
            continue
        got = challenger.predict_proba(outcomes.instances[task])[task]
        cols = [
            challenger.cohorts[task].index(c) if c in challenger.cohorts[task] else None
            for c in preds.classes
        ]
        proba[task] = np.column_stack([got[:, j] if j is not None else np.zeros(len(got)) for j in cols])
        mine = fitted_mask(challenger.path, preds.ids, task)
        theirs = fitted_mask(champion.path, preds.ids, task) if champion is not None else None
        fitted[task] = mine if theirs is None else theirs if mine is None else mine | theirs
    return live_evidence(outcomes, proba, fitted, primary, min_rows=min_rows)


def judge(
    challenger: Mapping[str, TaskPredictions],
    champion: ModelBundle | None,
    dataset: Dataset,
    *,
    primary: str = DEFAULT_PRIMARY,
    margin: float = 0.0,
    ece_margin: float | None = None,
    rule: str = DEFAULT_RULE,
    live: Mapping[str, PairedInterval | str] | None = None,
    live_rule: LiveRule | None = None,
) -> GateResult:
    """The gate on one new test set: the challenger's held-out predictions on it against the
    champion's. ``rule`` (:data:`GATE_RULES`):

    * ``live`` (the gate's rule): the paired bootstrap on the test rows the champion was not
      fitted on, and the **live evidence** ``live`` (:func:`served_evidence`: the challenger
      against what the champion served, on its resolved served rows), and the champion's age:
      the demand figure of one published on a young history protects nothing (see :func:`compare`);
    * ``bootstrap``: the paired bootstrap alone;
    * ``margin``: the older rule, the mean point change (kept to measure the rules against each
      other in ``hhpulse replay``)."""
    if rule not in GATE_RULES:
        raise ValueError(f"unknown gate rule {rule!r}; known: {', '.join(GATE_RULES)}")
    ece_margin = DEFAULT_ECE_MARGIN if ece_margin is None else ece_margin
    mine = predictions_metrics(challenger)
    if champion is None:
        return GateResult(gate_verdict(mine, None, primary, margin, ece_margin), mine, None)
    champ_preds = test_predictions(champion, dataset, "test")
    theirs = predictions_metrics(champ_preds)
    evidence = None
    if rule != "margin":
        fitted = {t: fitted_mask(champion.path, p.ids, t) for t, p in champ_preds.items()}
        evidence = paired_evidence(challenger, champ_preds, fitted, primary)
    age = None
    was = champion_measured(champion.metadata.get("metrics", {}), primary)
    if rule == "live":
        meta = champion.metadata.get("metrics", {})
        bounds = {t: td.boundaries for t, td in dataset.tasks.items()}
        age = {
            "champion": young_history(meta.get("dataset") or {}, meta.get("boundaries") or {}),
            "challenger": young_history(dataset.summary, bounds),
            "champion_labels": resolved_labels(meta.get("dataset") or {}),
            "challenger_labels": resolved_labels(dataset.summary),
            "champion_level": young_level(meta.get("dataset") or {}, meta.get("boundaries") or {}),
            "challenger_level": young_level(dataset.summary, bounds),
        }
        if age["champion"] and age["challenger_level"] <= age["champion_level"]:
            # a demand figure measured on a young history protects nothing: a demand task the new
            # test rows cannot compare is left out, not a block, against a challenger no younger
            was["demand"] = False
    verdict = gate_verdict(
        mine,
        theirs,
        primary,
        margin,
        ece_margin,
        champion_was_measured=was,
        evidence=evidence,
        live=(live or {}) if rule == "live" else None,
        young=age,
        live_rule=live_rule,
    )
    return GateResult(verdict, mine, theirs)


# A per-task gate check: (task, challenger's test metrics, champion's test metrics) -> a
# check {"name", "passed" (bool, or None when it cannot be judged), "blocks" (a failure keeps
# the champion), "detail"}, or None when it does not apply. compare() runs the primary-metric
# check itself; pass more (e.g. a calibration check) in ``checks``.
GateCheck = Callable[[str, Mapping[str, Any], Mapping[str, Any]], "dict[str, Any] | None"]


def measured(metrics: Mapping[str, Any] | None, primary: str = DEFAULT_PRIMARY) -> bool:
    """Whether a task's test metrics hold a defined ``primary`` value."""
    return bool(metrics) and score(metrics or {}, primary) != float("-inf")


def champion_measured(bundle_metrics: Mapping[str, Any], primary: str = DEFAULT_PRIMARY) -> dict[str, bool]:
    """Per task, whether a published bundle's winner was measured on its own test set
    (from its ``metrics.json``): a task it was measured on is one the gate must keep checking."""
    out = {}
    for task, doc in bundle_metrics.items():
        if isinstance(doc, Mapping) and "winner" in doc and "candidates" in doc:
            test = doc["candidates"].get(doc["winner"], {}).get("metrics", {}).get("test", {})
            out[task] = measured(test, primary)
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def compare(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    primary: str = DEFAULT_PRIMARY,
    margin: float = 0.0,
    *,
    champion_was_measured: Mapping[str, bool] | None = None,
    checks: Sequence[GateCheck] = (),
    evidence: Mapping[str, PairedInterval | str] | None = None,
    live: Mapping[str, PairedInterval | str] | None = None,
    young: Mapping[str, Any] | None = None,
    live_rule: LiveRule | None = None,
) -> dict[str, Any]:
    """Does the challenger win? Both models' test metrics come from the same new test set.

    With ``evidence`` (per task, the paired bootstrap of :func:`hhpulse.model.gate.paired_evidence`,
    or why there is none), the gate decides on it: the challenger replaces the champion only
    when the LOWER bound of the interval of the mean improvement over the compared tasks is
    above ``margin``, and no compared task is clearly worse (its interval's upper bound below
    zero, or below a negative ``margin``). A tie keeps the champion. Without ``evidence`` (the rule before the bootstrap,
    kept for ``hhpulse replay``'s comparison), the mean of the point changes must beat
    ``margin``.

    Per task (``verdict["tasks"][task]``), a status:

    * ``compared``: both scores are defined; the task's change counts in the mean.
    * ``blocks``: the task cannot be measured on the new test set (e.g. a demand test set
      of one cohort), but the champion was measured on it when it was published
      (``champion_was_measured``), or a blocking check failed. The champion stays:
      replacing it would put an unmeasured model of that task into production on the
      strength of the other task alone. (Refusing, rather than excluding, is the safe
      side: a later run whose test set measures the task decides.)
    * ``excluded``: the task cannot be measured now and never was for this champion (e.g.
      both on the demand age proxy's single cohort): nothing to protect, so it is left out
      of the mean, with the reason in the verdict.

    The challenger wins when no task blocks and the mean change of the primary metric over
    the compared tasks beats ``margin``. Without a champion, the challenger wins.

    With ``live`` as well (the ``live`` rule: per task, :func:`served_evidence`, the challenger
    against what the champion actually served, on its resolved served rows), the test rows'
    verdict is weighed with what the champion's service showed:

    * a challenger clearly worse on the champion's live rows (the interval's upper bound below
      zero) does not replace it, whatever the test rows say;
    * a champion whose live figure falls below the challenger's on the same resolved rows (the
      lower bound of the live difference above ``margin``, on at least ``live_rule.min_rows``
      rows) is replaced, unless a task blocks or the test rows show the challenger clearly worse;
    * a champion published on a young history (``young["champion"]``, see
      :func:`hhpulse.model.dataset.young_history`) is not protected by its own demand figure
      (see :func:`judge`); a tie (no task clearly worse, the mean point change and the live point
      change not negative) keeps it by default, or goes to a challenger trained on a history that
      is not young (``live_rule.young_tie`` ``"mature"``), on a less young one (``"less-young"``),
      or to any fresher challenger (``"challenger"``).
    """
    if champion is None:
        return {"challenger_wins": True, "reason": "no champion yet", "deltas": {}}
    was = dict(champion_was_measured or {})
    tasks: dict[str, dict[str, Any]] = {}
    deltas: dict[str, float] = {}
    for task in challenger:
        mine, theirs = challenger.get(task) or {}, champion.get(task) or {}
        a = mine.get(primary) if measured(mine, primary) else None
        b = theirs.get(primary) if measured(theirs, primary) else None
        tv: dict[str, Any] = {"challenger": a, "champion": b, "delta": None, "checks": []}
        if a is not None and b is not None:
            tv["delta"] = deltas[task] = float(a) - float(b)
            tv["status"] = "compared"
            tv["reason"] = f"{primary} {_fmt(b)} -> {_fmt(a)} ({tv['delta']:+.4f})"
        elif a is not None:  # the champion has no figure for the task (an older bundle)
            tv["status"] = "excluded"
            tv["reason"] = f"left out: the champion has no {primary} for it on the new test set"
        else:
            why = "; ".join(mine.get("notes") or []) or f"no defined {primary} on the new test set"
            if was.get(task, False):
                tv["status"] = "blocks"
                tv["reason"] = (
                    f"cannot be measured on the new test set ({why}), but the champion was measured "
                    "on it: the champion stays until it can be measured again"
                )
            else:
                tv["status"] = "excluded"
                tv["reason"] = (
                    f"left out: cannot be measured on the new test set ({why}), nor was the champion"
                )
        tv["checks"].append(
            {
                "name": primary,
                "passed": None if tv["delta"] is None else tv["delta"] >= 0,
                "blocks": tv["status"] == "blocks",
                "detail": tv["reason"],
            }
        )
        for check in checks:
            c = check(task, mine, theirs)
            if c is not None:
                tv["checks"].append(c)
                if c.get("blocks") and c.get("passed") is False and tv["status"] != "blocks":
                    tv["status"], tv["reason"] = "blocks", f"{c.get('name')}: {c.get('detail')}"
        if evidence is not None and tv["status"] == "compared":
            _with_evidence(tv, task, evidence.get(task), was.get(task, False), deltas)
        tasks[task] = tv
    if evidence is not None:
        return _evidence_verdict(tasks, deltas, primary, margin, live, young, live_rule or LiveRule())
    blocking = sorted(t for t, v in tasks.items() if v["status"] == "blocks")
    per_task = "; ".join(f"{t} {v['status']}: {v['reason']}" for t, v in sorted(tasks.items()))
    if blocking:
        return {
            "challenger_wins": False,
            "reason": f"champion stays: {', '.join(blocking)} blocks the replacement ({per_task})",
            "deltas": deltas,
            "tasks": tasks,
        }
    if not deltas:
        return {
            "challenger_wins": False,
            "reason": f"no task has a defined {primary} for both models ({per_task})",
            "deltas": {},
            "tasks": tasks,
        }
    mean = sum(deltas.values()) / len(deltas)
    wins = mean > margin
    verdict = "challenger wins" if wins else "champion stays"
    changes = ", ".join(f"{t} {d:+.4f}" for t, d in sorted(deltas.items()))
    return {
        "challenger_wins": wins,
        "reason": f"{verdict}: mean {primary} change {mean:+.4f} ({changes}; margin {margin}) [{per_task}]",
        "deltas": deltas,
        "mean_delta": mean,
        "tasks": tasks,
    }


def _with_evidence(
    tv: dict[str, Any], task: str, ev: PairedInterval | str | None, was: bool, deltas: dict[str, float]
) -> None:
    """Put a task's paired bootstrap into its verdict (the delta on the rows compared, the
    interval), or, without one, make it block (the champion was measured on it) or leave it out."""
    if isinstance(ev, PairedInterval):
        tv["delta"] = deltas[task] = ev.delta
        tv["interval"] = ev.to_dict()
        tv["reason"] = ev.line()
        tv["checks"][0].update(passed=ev.low > 0, detail=tv["reason"])
        tv["_samples"] = ev.samples
        return
    deltas.pop(task, None)
    tv["delta"] = None
    why = ev or "no paired comparison"
    tv["status"] = "blocks" if was else "excluded"
    tv["reason"] = f"no paired comparison ({why})" + (
        ": the champion stays until it can be compared" if was else ": left out"
    )
    tv["checks"][0].update(passed=None, blocks=was, detail=tv["reason"])


def _evidence_verdict(
    tasks: dict[str, dict[str, Any]],
    deltas: dict[str, float],
    primary: str,
    margin: float,
    live: Mapping[str, PairedInterval | str] | None = None,
    young: Mapping[str, Any] | None = None,
    live_rule: LiveRule | None = None,
) -> dict[str, Any]:
    """The verdict of :func:`compare` from the tasks' intervals (and, with ``live``, the live
    evidence and the champion's age); ``lines`` holds the headline and one short line per task."""
    samples = {t: v.pop("_samples") for t, v in tasks.items() if "_samples" in v}
    lines = [f"{t}: {v['status']}, {v['reason']}" for t, v in sorted(tasks.items())]
    out: dict[str, Any] = {"deltas": deltas, "tasks": tasks, "rule": "paired bootstrap"}
    blocking = sorted(t for t, v in tasks.items() if v["status"] == "blocks")
    floor = min(0.0, margin)  # a negative margin accepts a challenger that much worse
    worse = sorted(t for t, v in tasks.items() if "interval" in v and v["interval"]["high"] < floor)
    if blocking:
        head = f"champion stays: {', '.join(blocking)} cannot be compared"
    elif not samples:
        head = f"champion stays: no task has a paired {primary} comparison"
    else:
        conf = next(iter(tasks[t]["interval"]["confidence"] for t in samples))
        mean = float(np.mean([deltas[t] for t in samples]))
        dist = np.mean(list(samples.values()), axis=0)
        low, high = interval(dist, conf)
        out.update(mean_delta=mean, mean_interval={"low": low, "high": high, "confidence": conf})
        span = f"mean {primary} change {mean:+.4f} [{conf:.0%} CI {low:+.4f}, {high:+.4f}]"
        if worse:
            head = f"champion stays: clearly worse on {', '.join(worse)}; {span}"
        elif low > margin:
            head = f"challenger wins: {span}, lower bound above the margin {margin:g}"
        else:
            head = f"champion stays: {span} does not clear the margin {margin:g} (a tie keeps the champion)"
    if live is not None:
        mean = out.get("mean_delta")
        head = _live_head(
            head, blocking, worse, mean, tasks, live, young or {}, live_rule or LiveRule(), margin
        )
        out["rule"] = "paired bootstrap and live evidence"
        out["live"] = {
            t: v.to_dict() if isinstance(v, PairedInterval) else {"none": v} for t, v in live.items()
        }
        out["young"] = dict(young or {})
        lines += [
            f"{t} live: " + (v.line() if isinstance(v, PairedInterval) else f"not weighed ({v})")
            for t, v in sorted(live.items())
        ]
        if (young or {}).get("champion"):
            lines.append(f"the champion was published on a young history: {young['champion']}")  # type: ignore[index]
    out["challenger_wins"] = head.startswith("challenger wins")
    out["reason"] = head
    out["lines"] = [head, *lines]
    return out


def _live_head(
    head: str,
    blocking: Sequence[str],
    worse: Sequence[str],
    mean: float | None,
    tasks: Mapping[str, Mapping[str, Any]],
    live: Mapping[str, PairedInterval | str],
    young: Mapping[str, Any],
    rule: LiveRule,
    margin: float,
) -> str:
    """The ``live`` rule's headline, from the test rows' headline ``head`` (see :func:`compare`)."""
    weighed = {t: v for t, v in live.items() if isinstance(v, PairedInterval) and v.rows >= rule.min_rows}
    floor = min(0.0, margin)
    if blocking or worse:
        return head
    live_worse = sorted(t for t, v in weighed.items() if v.high < floor)
    if live_worse:
        return f"champion stays: clearly worse on what the champion served ({', '.join(live_worse)} live)"
    if head.startswith("challenger wins"):
        return head
    better = sorted(t for t, v in weighed.items() if v.low > margin)
    if better:
        v = weighed[better[0]]
        return (
            f"challenger wins on live evidence: on {v.rows} resolved rows {better[0]} served by the champion, "
            f"{v.metric} {v.champion:.4f} served against {v.challenger:.4f} for the challenger, "
            f"{v.delta:+.4f} [{v.confidence:.0%} CI {v.low:+.4f}, {v.high:+.4f}]"
        )
    compared = [t for t, v in tasks.items() if v.get("status") == "compared"]
    tie = bool(compared) and mean is not None and mean >= 0 and all(v.delta >= 0 for v in weighed.values())
    champ_young, chal_young = young.get("champion"), young.get("challenger")
    champ_level, chal_level = young.get("champion_level"), young.get("challenger_level")
    less_young = champ_level is not None and chal_level is not None and chal_level < champ_level
    if (
        tie
        and champ_young
        and (
            rule.young_tie == "challenger"
            or (rule.young_tie == "mature" and not chal_young)
            or (rule.young_tie == "less-young" and less_young)
        )
    ):
        newer = (
            "on a history that is not young"
            if not chal_young
            else "on a less young history"
            if less_young
            else "on newer data"
        )
        return (
            f"challenger wins: the champion was published on a young history ({champ_young}), so a tie "
            f"(mean point change {mean:+.4f}, not negative) goes to the challenger trained {newer}"
        )
    had, has = young.get("champion_labels"), young.get("challenger_labels")
    if tie and rule.refresh_ratio is not None and had is not None and has and has >= rule.refresh_ratio * had:
        more = f"{has / had:.1f}x the champion's {had}" if had else "the champion none (the age proxy)"
        return (
            f"challenger wins: it learned from {has} resolved demand labels, {more}, so a tie "
            f"(mean point change {mean:+.4f}, not negative) goes to it"
        )
    return head


DEFAULT_ECE_MARGIN = 0.02


def calibration_gate(
    challenger: dict[str, Any], champion: dict[str, Any] | None, max_ece_increase: float = DEFAULT_ECE_MARGIN
) -> dict[str, Any]:
    """Is the challenger calibrated about as well as the champion? It fails when its top-label
    ECE is worse than the champion's by more than ``max_ece_increase`` on any task where both
    are measured. Composed with :func:`compare` into the gate's verdict (see
    :func:`gate_verdict`)."""
    deltas: dict[str, float] = {}
    for task, m in challenger.items():
        a, b = m.get("ece"), (champion or {}).get(task, {}).get("ece")
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b)):
            deltas[task] = float(a) - float(b)
    worse = {t: d for t, d in deltas.items() if d > max_ece_increase}
    if not deltas:
        reason = "no task has an ECE for both models" if champion is not None else "no champion yet"
    elif worse:
        reason = (
            "ECE worse than the champion's by more than "
            + f"{max_ece_increase}: "
            + ", ".join(
                f"{t} {challenger[t]['ece']:.4f} vs {champion[t]['ece']:.4f} ({d:+.4f})"  # type: ignore[index]
                for t, d in sorted(worse.items())
            )
        )
    else:
        reason = (
            "ECE within the margin (" + ", ".join(f"{t} {d:+.4f}" for t, d in sorted(deltas.items())) + ")"
        )
    return {"passes": not worse, "reason": reason, "ece_deltas": deltas, "ece_margin": max_ece_increase}


def gate_verdict(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    primary: str = DEFAULT_PRIMARY,
    margin: float = 0.0,
    ece_margin: float = DEFAULT_ECE_MARGIN,
    *,
    champion_was_measured: Mapping[str, bool] | None = None,
    evidence: Mapping[str, PairedInterval | str] | None = None,
    live: Mapping[str, PairedInterval | str] | None = None,
    young: Mapping[str, Any] | None = None,
    live_rule: LiveRule | None = None,
) -> dict[str, Any]:
    """:func:`compare` on the primary metric (per-task statuses; with ``evidence``, the paired
    bootstrap decides), then :func:`calibration_gate`: a challenger that ranks better but whose
    probabilities are much worse calibrated does not replace the champion. ``lines`` (with
    evidence) holds the verdict on short lines: the headline, each task, calibration."""
    verdict = dict(
        compare(
            challenger,
            champion,
            primary,
            margin,
            champion_was_measured=champion_was_measured,
            evidence=evidence,
            live=live,
            young=young,
            live_rule=live_rule,
        )
    )
    cal = calibration_gate(challenger, champion, ece_margin)
    verdict["calibration"] = cal
    if verdict["challenger_wins"] and not cal["passes"]:
        verdict["challenger_wins"] = False
        if "lines" in verdict:
            verdict["reason"] = f"champion stays: {cal['reason']}"
            verdict["lines"] = [
                verdict["reason"],
                f"ranking alone: {verdict['lines'][0]}",
                *verdict["lines"][1:],
            ]
        else:
            verdict["reason"] = f"champion stays: {cal['reason']} (ranking alone: {verdict['reason']})"
    elif champion is not None:
        if "lines" in verdict:
            verdict["lines"].append(f"calibration: {cal['reason']}")
        else:
            verdict["reason"] = f"{verdict['reason']}; calibration: {cal['reason']}"
    return verdict


__all__ = [
    "FeatureSet",
    "LoadedData",
    "TrainingReport",
    "GateCheck",
    "champion_measured",
    "compare",
    "evaluate_bundle",
    "gate_verdict",
    "judge",
    "test_predictions",
    "history_from_data",
    "load_data",
    "bundle_from_candidates",
    "train_candidates",
    "train_candidates_on",
    "train_on_dataset",
    "train_from_history",
]
