"""The gate in ``hhpulse replay``: the old rule and the new one, side by side, day after day.

Each replayed day (:class:`GateHook`, a :class:`hhpulse.flows.replay.DayHook` with key ``gate``):

1. the history of the runs so far is labelled and split as the pipeline's dataset step does;
2. each rule's champion (as it stood after the day before) is scored on that day's newest
   labelled rows (the test split) it was not fitted on: the **served AUC** of that day, per
   task. The champion served that day did not see those rows, so the figure is what users got;
3. a challenger is trained on the day's dataset as the pipeline trains one (features, every
   candidate, the winner by validation, calibration, the bundle), by default with the packaged
   linear candidates only (:func:`linear_candidates`: 45 daily XGBoost fits take hours on a
   laptop), and each rule judges it against its own champion (:func:`hhpulse.flows.workflow.judge`):

   * ``old_rule``: the mean point change of the primary metric over the tasks beats the
     margin (and the ECE check), on all test rows;
   * ``new_rule``: the paired bootstrap (:mod:`hhpulse.model.gate`) on the test rows the champion
     was not fitted on: the lower bound of the mean improvement's interval beats the margin,
     no task is clearly worse (and the ECE check).

The champion that serves after the day's gate under the new rule goes into
``day.shared["champion"]`` (a :class:`~hhpulse.model.bundle.ModelBundle`), the old rule's into
``day.shared["champion_old_rule"]``. The first model is adopted by both rules and is not a
replacement. The summary gives the replacements per rule and each rule's served AUC, the mean
over the days where both rules' champions could be scored on the task.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hhpulse.config import CandidateConfig, load_candidates
from hhpulse.flows.replay import ReplayDay
from hhpulse.flows.workflow import DEFAULT_ECE_MARGIN, judge, test_predictions, train_on_dataset
from hhpulse.model.bundle import ModelBundle, load_bundle
from hhpulse.model.dataset import build_dataset
from hhpulse.model.evaluate import classification_metrics
from hhpulse.model.gate import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, fitted_mask

log = logging.getLogger(__name__)

RULES = ("old_rule", "new_rule")
TASKS = ("salary", "demand")
GOAL_REPLACEMENTS = 1 / 3  # the new rule replaces fewer than a third as often as the old one ...
GOAL_AUC_TOLERANCE = 0.005  # ... with a served AUC no lower than the old rule's by more than this


def linear_candidates() -> list[CandidateConfig]:
    """The packaged candidates that are not XGBoost (with each task's baseline, which training
    always adds): what the replay's gate trains every day by default, so that 45 days take
    minutes, not hours. ``hhpulse replay --gate-candidates FILE`` trains others."""
    return [c for c in load_candidates() if c.kind != "xgboost"]


def served_auc(bundle: ModelBundle, dataset: Any, metric: str = "roc_auc_ovo") -> dict[str, float | None]:
    """Per task, ``bundle``'s ``metric`` on the dataset's test rows it was not fitted on."""
    out: dict[str, float | None] = {}
    for task, p in test_predictions(bundle, dataset, "test").items():
        fitted = fitted_mask(bundle.path, p.ids, task)
        keep = np.ones(len(p.ids), dtype=bool) if fitted is None else ~fitted
        if not keep.any():
            out[task] = None
            continue
        labels = [lab for lab, k in zip(p.labels, keep, strict=True) if k]
        out[task] = classification_metrics(labels, p.proba[keep], p.classes).get(metric)
    return out


class GateHook:
    """Train a challenger each day and apply both gate rules, each to its own champion."""

    key = "gate"

    def __init__(
        self,
        *,
        margin: float = 0.0,
        ece_margin: float = DEFAULT_ECE_MARGIN,
        candidates: Sequence[CandidateConfig] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.candidates = list(candidates) if candidates is not None else linear_candidates()
        self.margin = margin
        self.ece_margin = ece_margin
        self.progress = progress or (lambda _msg: None)
        self._root = Path(tempfile.mkdtemp(prefix="hhpulse-replay-gate-"))
        self.champions: dict[str, ModelBundle | None] = dict.fromkeys(RULES)
        self.replacements = dict.fromkeys(RULES, 0)
        self.days: list[dict[str, Any]] = []
        self.seconds = 0.0

    def on_day(self, day: ReplayDay) -> None:
        t = time.perf_counter()
        try:
            self._day(day)
        finally:
            day.shared["champion"] = self.champions["new_rule"]
            day.shared["champion_old_rule"] = self.champions["old_rule"]
            self.seconds += time.perf_counter() - t

    def _day(self, day: ReplayDay) -> None:
        s = day.settings
        record: dict[str, Any] = {"index": day.index, "run_id": day.run_id, "day": day.day}
        self.days.append(record)
        try:
            dataset = build_dataset(day.history(), day.rates, s.label_config, s.split_config)
        except ValueError as exc:  # too few rows or cohorts yet: no challenger today
            record["skipped"] = str(exc)
            self.progress(f"gate, run {day.index + 1}: no challenger ({exc})")
            return
        scored: dict[str, dict[str, float | None]] = {}
        for rule, champ in self.champions.items():
            if champ is not None:
                scored[rule] = served_auc(champ, dataset, s.primary)
        record["served_auc"] = scored
        version = f"replay-{day.index + 1:03d}"
        try:
            trained = train_on_dataset(
                dataset,
                self._root / version,
                label_config=s.label_config,
                feature_config=s.feature_config,
                candidates=self.candidates,
                device=s.device,
                primary=s.primary,
                version=version,
            )
        except ValueError as exc:  # e.g. a task with one cohort so far: no challenger today
            record["skipped"] = str(exc)
            self.progress(f"gate, run {day.index + 1}: no challenger ({exc})")
            return
        challenger = load_bundle(trained.bundle_dir)
        preds = test_predictions(challenger, dataset, "test")
        decisions = {}
        for rule in RULES:
            champ = self.champions[rule]
            verdict = judge(
                preds,
                champ,
                dataset,
                primary=s.primary,
                margin=self.margin,
                ece_margin=self.ece_margin,
                paired=rule == "new_rule",
            ).verdict
            wins = bool(verdict["challenger_wins"])
            decisions[rule] = {"replaced": wins and champ is not None, "reason": verdict["reason"]}
            if wins:
                self.replacements[rule] += champ is not None
                self.champions[rule] = challenger
        record["decisions"] = decisions
        record["champions"] = {r: c.version if c else None for r, c in self.champions.items()}
        self._forget_unused()
        self.progress(
            f"gate, run {day.index + 1}: challenger {version}; "
            + "; ".join(
                f"{r.replace('_', ' ')} {'replaces' if d['replaced'] else 'keeps'} -> {record['champions'][r]}"
                for r, d in decisions.items()
            )
        )

    def _forget_unused(self) -> None:
        """Delete the bundles neither rule serves any more."""
        keep = {c.path.resolve() for c in self.champions.values() if c is not None}
        for path in self._root.iterdir():
            if path.resolve() not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        """Replacements per rule and the served AUC per rule and task (the mean over the days
        both rules' champions were scored on the task); the goal and whether it was met."""
        served: dict[str, dict[str, float | None]] = {r: {} for r in RULES}
        days_measured: dict[str, int] = {}
        for task in TASKS:
            both = [
                d["served_auc"]
                for d in self.days
                if all((d.get("served_auc") or {}).get(r, {}).get(task) is not None for r in RULES)
            ]
            days_measured[task] = len(both)
            for rule in RULES:
                served[rule][task] = round(float(np.mean([b[rule][task] for b in both])), 4) if both else None
        old, new = self.replacements["old_rule"], self.replacements["new_rule"]
        auc_ok = {
            t: (
                None
                if served["old_rule"][t] is None
                else served["new_rule"][t] >= served["old_rule"][t] - GOAL_AUC_TOLERANCE
            )  # type: ignore[operator]
            for t in TASKS
        }
        fewer = new < old * GOAL_REPLACEMENTS if old else None
        return {
            "replacements": {"old_rule": old, "new_rule": new},
            "served_auc": served,
            "days_measured": days_measured,
            "days_with_a_challenger": sum("decisions" in d for d in self.days),
            "candidates": [c.name for c in self.candidates],
            "rules": {
                "old_rule": f"mean point change of the primary metric > margin {self.margin:g}, on all test rows",
                "new_rule": (
                    f"paired stratified bootstrap ({DEFAULT_RESAMPLES} resamples, {DEFAULT_CONFIDENCE:.0%} "
                    f"percentile interval) on the test rows the champion was not fitted on: lower bound "
                    f"of the mean improvement > margin {self.margin:g}, no task clearly worse"
                ),
                "both": f"and the challenger's ECE no worse than the champion's by more than {self.ece_margin:g}",
            },
            "goal": {
                "replacements": f"new_rule < {GOAL_REPLACEMENTS:.3g} x old_rule",
                "served_auc": f"new_rule >= old_rule - {GOAL_AUC_TOLERANCE}",
                "fewer_replacements": fewer,
                "served_auc_no_lower": auc_ok,
                "met": bool(fewer)
                and all(v is not False for v in auc_ok.values())
                and any(v is not None for v in auc_ok.values()),
            },
            "seconds": round(self.seconds, 2),
            "days": self.days,
        }
