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
    window: dict[str, Any] | None = None  # the history window read from a store (None: a file)

    def summary(self) -> str | None:
        """One line on what was read and left out (None for a store: collect validated it)."""
        if self.report is None:
            return None
        r = self.report
        rules = ", ".join(f"{k}: {v.count}" for k, v in sorted(r.rules.items()) if v.severity == "error")
        left = f"{r.bad} left out by the data contract ({rules})" if r.bad else "none left out"
        return f"{r.total} rows read, {left}; {len(self.history)} vacancies"


def load_data(spec: str, *, rates: str | None = None, window_days: int | None = None) -> LoadedData:
    """Read ``--data``: a store location, or a file of API items (``-`` for stdin).

    A store (folder or ``s3://``) gives its folded history: the open vacancies plus those
    closed in the ``window_days`` before its newest run (None: all of it). A file (JSON
    lines of API items, optionally gzipped) is imported as a one-run history in memory,
    with currency rates from ``rates`` (a saved ``GET /dictionaries``) when given; its rows
    go through the data contract, and rows that break it (or lines that are not items at
    all) are left out and counted, never a crash.
    """
    from hhpulse.history import build_history, load_raw_runs, rates_by_run
    from hhpulse.history_store import folded_runs, read_history, window_summary

    path = Path(spec)
    if spec != "-" and (spec.startswith("s3://") or path.is_dir()):
        if rates:
            raise ValueError(
                "--rates applies to a file of items; a store keeps each run's own currency rates"
            )
        store = open_store(spec)
        hist = read_history(store, window_days=window_days)
        used = set(hist["last_run_id"].dropna())
        runs = {r["run_id"]: r for r in folded_runs(store)}
        synthetic = any(
            runs[r].get("synthetic") if r in runs else store.get_json(f"raw/{r}/meta.json").get("synthetic")
            for r in used
        )
        window = {**window_summary(store, window_days), "vacancies": len(hist)}
        return LoadedData(hist, rates_by_run(store), synthetic, window=window)
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
        t: {"winner": r.winner, "primary": r.primary, "candidates": r.candidates, "baseline": r.baseline}
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
    history_window: dict[str, Any] | None = None,
) -> TrainingReport:
    """Labels, split, features, every candidate of both tasks, the winners, and the bundle
    (``history_window``: which part of the history ``history`` is, for the model card)."""
    label_config = label_config or LabelConfig()
    dataset = build_dataset(history, rates_by_run, label_config, split_config or SplitConfig())
    if history_window is not None:
        dataset.summary["history_window"] = history_window
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
) -> dict[str, Any]:
    """Does the challenger win? Both models' test metrics come from the same new test set.

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
        tasks[task] = tv
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
) -> dict[str, Any]:
    """:func:`compare` on the primary metric (per-task statuses), then :func:`calibration_gate`:
    a challenger that ranks better but whose probabilities are much worse calibrated does not
    replace the champion."""
    verdict = dict(
        compare(challenger, champion, primary, margin, champion_was_measured=champion_was_measured)
    )
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
    "GateCheck",
    "champion_measured",
    "compare",
    "evaluate_bundle",
    "gate_verdict",
    "history_from_data",
    "load_data",
    "train_from_history",
]
