"""End-to-end training and comparison, composed from the step functions.

The CLI (``hhpulse train``/``evaluate``) calls these directly; the pipeline calls the
same step functions one component at a time.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hhpulse.bundle import ModelBundle, build_bundle, git_commit
from hhpulse.config import CandidateConfig, FeatureConfig, LabelConfig, SplitConfig, load_candidates
from hhpulse.dataset import Dataset, build_dataset
from hhpulse.evaluate import classification_metrics, data_profile, score
from hhpulse.store import open_store
from hhpulse.train import DEFAULT_PRIMARY, FeatureSet, TaskResult, TrainedCandidate, featurize, train_task
from hhpulse.validate import ValidationReport

log = logging.getLogger(__name__)


@dataclass
class LoadedData:
    """What ``--data`` held: the history, each run's currency rates, whether any of it is
    synthetic, and (for a file) the data-contract report of its rows."""

    history: pd.DataFrame
    rates_by_run: dict[str, dict[str, float]]
    synthetic: bool
    report: ValidationReport | None = None

    def summary(self) -> str | None:
        """One line on what was read and left out (None for a store: collect validated it)."""
        if self.report is None:
            return None
        r = self.report
        rules = ", ".join(f"{k}: {v.count}" for k, v in sorted(r.rules.items()) if v.severity == "error")
        left = f"{r.bad} left out by the data contract ({rules})" if r.bad else "none left out"
        return f"{r.total} rows read, {left}; {len(self.history)} vacancies"


def load_data(spec: str, *, rates: str | None = None) -> LoadedData:
    """Read ``--data``: a store location, or a file of API items (``-`` for stdin).

    A store (folder or ``s3://``) gives its ``history/vacancies.parquet``. A file (JSON
    lines of API items, optionally gzipped) is imported as a one-run history in memory,
    with currency rates from ``rates`` (a saved ``GET /dictionaries``) when given; its rows
    go through the data contract, and rows that break it (or lines that are not items at
    all) are left out and counted, never a crash.
    """
    from hhpulse.history import build_history, load_history, load_raw_runs, rates_by_run

    path = Path(spec)
    if spec != "-" and (spec.startswith("s3://") or path.is_dir()):
        if rates:
            raise ValueError(
                "--rates applies to a file of items; a store keeps each run's own currency rates"
            )
        store = open_store(spec)
        hist = load_history(store)
        synthetic = any(
            store.get_json(f"raw/{r}/meta.json").get("synthetic") for r in set(hist["last_run_id"].dropna())
        )
        return LoadedData(hist, rates_by_run(store), synthetic)
    if spec != "-" and not path.is_file():
        raise FileNotFoundError(f"--data {spec!r} is neither a store folder, an s3:// URL, nor a file")
    from hhpulse.collect import collect
    from hhpulse.hh.sources import make_source
    from hhpulse.validate import validate_run

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
    bundle_dir: Path
    version: str
    results: dict[str, TaskResult]
    summary: dict[str, Any]


def metrics_document(results: dict[str, TaskResult]) -> dict[str, Any]:
    return {
        t: {"winner": r.winner, "primary": r.primary, "candidates": r.candidates} for t, r in results.items()
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
    from hhpulse.calibration import calibrate_winners

    calibrators, calibration = calibrate_winners(dataset, vectorizer, winners)
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
        },
        card=card,
        profile=profile,
        version=version,
        training_ids=fitted_ids(dataset),
        calibrators=calibrators,
    )


def fitted_ids(dataset: Dataset) -> set[str]:
    """The ids of every row a model was fitted or selected on (train and validation, both tasks)."""
    ids: set[str] = set()
    for td in dataset.tasks.values():
        rows = td.frame[td.frame["part"].isin(["train", "val"])]
        ids.update(rows["id"].astype(str))
    return ids


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
    synthetic: bool = False,
    version: str | None = None,
) -> TrainingReport:
    """Labels, split, features, every candidate of both tasks, the winners, and the bundle."""
    label_config = label_config or LabelConfig()
    dataset = build_dataset(history, rates_by_run, label_config, split_config or SplitConfig())
    vec, sets = featurize(dataset, feature_config or FeatureConfig())
    candidates = list(candidates or load_candidates())
    results, winners = {}, {}
    for task, fs in sets.items():
        res, trained = train_task(fs, candidates, device=device, primary=primary)
        results[task] = res
        winners[task] = trained[res.winner]
    path = bundle_from_results(
        out_dir,
        dataset,
        vec,
        winners,
        results,
        label_config=label_config,
        synthetic=synthetic,
        version=version,
    )
    from hhpulse.bundle import load_bundle

    return TrainingReport(path, load_bundle(path).version, results, dataset.summary)


def evaluate_bundle(bundle: ModelBundle, dataset: Dataset, part: str | None = "test") -> dict[str, Any]:
    """Metrics of a loaded bundle on a dataset's rows (``part=None``: every labelled row)."""
    out = {}
    for task, td in dataset.tasks.items():
        rows = td.frame if part is None else td.part(part)
        if rows.empty:
            continue
        proba = bundle.predict_proba(rows[["responsibility", "name", "requirement"]].to_dict("records"))[task]
        classes = bundle.cohorts[task]
        labels = rows["label"].tolist()
        if set(labels) - set(classes):
            raise ValueError(
                f"{task}: the data has cohorts {sorted(set(labels) - set(classes))} the model does not know"
            )
        out[task] = classification_metrics(labels, proba, classes)
    return out


def compare(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    primary: str = DEFAULT_PRIMARY,
    margin: float = 0.0,
) -> dict[str, Any]:
    """Does the challenger win? Yes when no champion exists, or when it beats the champion's
    primary metric by ``margin`` on average over the tasks where both scores are defined."""
    if champion is None:
        return {"challenger_wins": True, "reason": "no champion yet", "deltas": {}}
    deltas = {}
    for task in challenger:
        a, b = score(challenger[task], primary), score(champion.get(task, {}), primary)
        if a != float("-inf") and b != float("-inf"):
            deltas[task] = a - b
    if not deltas:
        return {
            "challenger_wins": False,
            "reason": f"no task has a defined {primary} for both models",
            "deltas": {},
        }
    mean = sum(deltas.values()) / len(deltas)
    wins = mean > margin
    verdict = "challenger wins" if wins else "champion stays"
    per_task = ", ".join(f"{t} {d:+.4f}" for t, d in sorted(deltas.items()))
    return {
        "challenger_wins": wins,
        "reason": f"{verdict}: mean {primary} change {mean:+.4f} ({per_task}; margin {margin})",
        "deltas": deltas,
        "mean_delta": mean,
    }


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
) -> dict[str, Any]:
    """:func:`compare` on the primary metric, then :func:`calibration_gate`: a challenger that
    ranks better but whose probabilities are much worse calibrated does not replace the champion."""
    verdict = dict(compare(challenger, champion, primary, margin))
    cal = calibration_gate(challenger, champion, ece_margin)
    verdict["calibration"] = cal
    if verdict["challenger_wins"] and not cal["passes"]:
        verdict["challenger_wins"] = False
        verdict["reason"] = f"champion stays: {cal['reason']} (ranking alone: {verdict['reason']})"
    elif champion is not None:
        verdict["reason"] = f"{verdict['reason']}; calibration: {cal['reason']}"
    return verdict


__all__ = [
    "FeatureSet",
    "LoadedData",
    "TrainingReport",
    "compare",
    "evaluate_bundle",
    "gate_verdict",
    "history_from_data",
    "load_data",
    "train_from_history",
]
