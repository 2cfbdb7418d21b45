"""The gate in ``hhpulse replay``: the gate rules side by side, day after day, each with its own champion.

Each replayed day (:class:`GateHook`, a :class:`hhpulse.flows.replay.DayHook` with key ``gate``):

1. each rule's champion (as it stood after the day before) **serves** the day's newly opened
   vacancies (:func:`hhpulse.flows.replay.served_instances`), as the live hook logs them for
   the gate's own rule; the served predictions are kept per rule;
2. the history of the runs so far is labelled and split as the pipeline's dataset step does,
   and each rule's champion is scored on that day's newest labelled rows (the test split) it
   was not fitted on: the **served AUC** of that day, per task;
3. a challenger is trained on the day's dataset as the pipeline trains one (features, every
   candidate, the winner by validation, calibration, the held-out bundle), by default with the
   packaged linear candidates only (:func:`linear_candidates`: 45 daily XGBoost fits take hours
   on a laptop), and each rule judges it against its own champion
   (:func:`hhpulse.flows.workflow.judge`):

   * ``margin``: the mean point change of the primary metric over the tasks beats the
     margin (and the ECE check), on all test rows: the rule before the bootstrap;
   * ``bootstrap``: the paired bootstrap (:mod:`hhpulse.model.gate`) on the test rows the
     champion was not fitted on: the lower bound of the mean improvement's interval beats the
     margin, no task clearly worse (and the ECE check);
   * ``live`` (the pipeline's gate): the bootstrap, and the **live evidence**: the challenger
     against what the champion served, on the champion's served rows whose outcome has
     resolved in the day's history; a champion published on a young history is not protected
     by its own demand figure (:class:`hhpulse.flows.workflow.LiveRule`);
   * ``live-less-young``, ``live-mature`` and ``live-challenger``: the ``live`` rule with a
     young champion's tie going to a challenger whose history is less young
     (:func:`hhpulse.model.dataset.young_level`), to one trained on a history that is not
     young, or to any fresher one (:func:`default_rules`);

4. a challenger that wins is **refitted** as the pipeline publishes it
   (:func:`hhpulse.model.refit.refit_bundle`, train + validation + test, calibrated out of fold):
   the refit is the champion that serves from the next day on, under every rule that took it.

The champion of the ``live`` rule goes into ``day.shared["champion"]`` (what the live hook
serves and logs), every rule's into ``day.shared["champions"]``. The first model is adopted by
every rule and is not a replacement. The summary gives, per rule: the replacements; the served
AUC, the mean over the days every rule's champion could be scored on the task; and the **live**
demand figure of what it served, version-stratified (:func:`hhpulse.watch.monitor.live_demand`),
with the demo market's oracle on the same rows, and each champion's offline figure at
publication beside its live one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhpulse.config import CandidateConfig, LabelConfig, load_candidates
from hhpulse.flows.replay import ReplayDay, oracle_of, served_instances
from hhpulse.flows.replay_live import (
    GOAL_CHAMPION_GAP,
    GOAL_CHAMPION_ROWS,
    GOAL_LIVE_RATIO,
    champions_offline_live,
    offline_figure,
)
from hhpulse.flows.workflow import (
    DEFAULT_ECE_MARGIN,
    LiveRule,
    judge,
    served_evidence,
    test_predictions,
    train_on_dataset,
)
from hhpulse.model.bundle import ModelBundle, load_bundle
from hhpulse.model.dataset import build_dataset
from hhpulse.model.evaluate import classification_metrics
from hhpulse.model.gate import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, fitted_mask
from hhpulse.watch.monitor import live_demand, resolved_demand, served_outcomes
from hhpulse.watch.served import format_time, make_record

log = logging.getLogger(__name__)

TASKS = ("salary", "demand")
GATE_RULE = "live"  # the pipeline's rule: its champion is the one the live hook serves
GOAL_REPLACEMENTS = 1 / 3  # the gate's rule replaces fewer than a third as often as the margin rule ...
GOAL_AUC_TOLERANCE = 0.005  # ... with a served AUC no lower than the margin rule's by more than this


@dataclass(frozen=True)
class Rule:
    """One gate rule of the replay: ``kind`` is :func:`hhpulse.flows.workflow.judge`'s ``rule``."""

    kind: str
    live_rule: LiveRule | None = None


def default_rules() -> dict[str, Rule]:
    """The three named rules, and three variants of the ``live`` rule that differ only in what a
    tie does to a champion published on a young history (:class:`LiveRule`'s ``young_tie``; the
    ``live`` rule's tie keeps it): ``live-less-young`` hands it to a challenger whose history is
    less young (:func:`hhpulse.model.dataset.young_level`: an age-proxy champion gives way to the
    first challenger trained on resolved closes), ``live-mature`` to a challenger trained on a
    history that is not young, ``live-challenger`` to any fresher challenger. They judge the same
    challengers and share the refits, so one replay measures all six."""
    return {
        "margin": Rule("margin"),
        "bootstrap": Rule("bootstrap"),
        "live": Rule("live", LiveRule()),
        "live-less-young": Rule("live", LiveRule(young_tie="less-young")),
        "live-mature": Rule("live", LiveRule(young_tie="mature")),
        "live-challenger": Rule("live", LiveRule(young_tie="challenger")),
    }


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


@dataclass
class _RuleState:
    rule: Rule
    champion: ModelBundle | None = None
    replacements: int = 0  # champions replaced (the first model is adopted, not a replacement)
    records: list[dict[str, Any]] = field(default_factory=list)  # what its champions served
    reigns: list[dict[str, Any]] = field(default_factory=list)  # each champion: when and its offline figure


class GateHook:
    """Train a challenger each day and apply every rule, each to its own champion."""

    key = "gate"

    def __init__(
        self,
        *,
        margin: float = 0.0,
        ece_margin: float = DEFAULT_ECE_MARGIN,
        candidates: Sequence[CandidateConfig] | None = None,
        rules: Mapping[str, Rule] | None = None,
        refit: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.candidates = list(candidates) if candidates is not None else linear_candidates()
        self.margin = margin
        self.ece_margin = ece_margin
        self.refit = refit
        self.progress = progress or (lambda _msg: None)
        self.rules = dict(rules or default_rules())
        if GATE_RULE not in self.rules:
            raise ValueError(f"the replay's gate needs the {GATE_RULE!r} rule, whose champion serves")
        self._root = Path(tempfile.mkdtemp(prefix="hhpulse-replay-gate-"))
        self.state = {name: _RuleState(rule) for name, rule in self.rules.items()}
        self.days: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.seconds_refit = 0.0
        self._last: ReplayDay | None = None

    @property
    def champions(self) -> dict[str, ModelBundle | None]:
        return {n: s.champion for n, s in self.state.items()}

    @property
    def replacements(self) -> dict[str, int]:
        return {n: s.replacements for n, s in self.state.items()}

    def on_day(self, day: ReplayDay) -> None:
        t = time.perf_counter()
        self._last = day
        try:
            self._serve(day)
            self._day(day)
        finally:
            day.shared["champion"] = self.state[GATE_RULE].champion
            day.shared["champions"] = self.champions
            self.seconds += time.perf_counter() - t

    def _serve(self, day: ReplayDay) -> None:
        """Each rule's champion predicts the day's new vacancies (kept in memory per rule)."""
        serving = {n: s for n, s in self.state.items() if s.champion is not None}
        if not serving or not day.new_ids:
            return
        instances = served_instances(day)
        if not instances:
            return
        when = format_time(day.collected_at.to_pydatetime())
        done: dict[str, list[dict[str, Any]]] = {}  # one prediction per champion version
        for s in serving.values():
            champ = s.champion
            assert champ is not None
            if champ.version not in done:
                preds = champ.predict(instances)
                done[champ.version] = [
                    make_record(
                        time=when,
                        model_version=champ.version,
                        request_id=f"replay-{day.run_id}",
                        instance=i,
                        prediction=p,
                    )
                    for i, p in zip(instances, preds, strict=True)
                ]
            s.records.extend(done[champ.version])

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
        by_version: dict[str, dict[str, float | None]] = {}
        for name, st in self.state.items():
            if st.champion is not None:
                v = st.champion.version
                if v not in by_version:
                    by_version[v] = served_auc(st.champion, dataset, s.primary)
                scored[name] = by_version[v]
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
        record["challenger"] = {"version": version, **offline_figure(challenger)}
        preds = test_predictions(challenger, dataset, "test")
        resolved = None
        if any(st.rule.kind == "live" and st.champion is not None for st in self.state.values()):
            resolved = resolved_demand(day.history(), s.label_config)
        decisions: dict[str, dict[str, Any]] = {}
        published: ModelBundle | None = None
        weighed: dict[tuple[str, int], Any] = {}  # a version serving under two rules served the same rows
        for name, st in self.state.items():
            champ = st.champion
            live = None
            if st.rule.kind == "live" and champ is not None and resolved is not None:
                rows = (st.rule.live_rule or LiveRule()).min_rows
                if (champ.version, rows) not in weighed:
                    outcomes = served_outcomes(st.records, resolved, champ.version)
                    weighed[champ.version, rows] = served_evidence(
                        challenger, outcomes, s.primary, champion=champ, min_rows=rows
                    )
                live = weighed[champ.version, rows]
            verdict = judge(
                preds,
                champ,
                dataset,
                primary=s.primary,
                margin=self.margin,
                ece_margin=self.ece_margin,
                rule=st.rule.kind,
                live=live,
                live_rule=st.rule.live_rule,
            ).verdict
            wins = bool(verdict["challenger_wins"])
            decisions[name] = {"replaced": wins and champ is not None, "reason": verdict["reason"]}
            if live:
                decisions[name]["live"] = verdict.get("live")
            if wins:
                if published is None:
                    published = self._publish(trained.bundle_dir, dataset, day)
                st.replacements += champ is not None
                st.champion = published
                st.reigns.append(
                    {"version": published.version, "from_run": day.index + 1, **offline_figure(published)}
                )
        record["decisions"] = decisions
        record["champions"] = {
            n: st.champion.version if st.champion else None for n, st in self.state.items()
        }
        self._forget_unused()
        self.progress(
            f"gate, run {day.index + 1}: challenger {version}; "
            + "; ".join(
                f"{n} {'replaces' if d['replaced'] else 'keeps'} -> {record['champions'][n]}"
                for n, d in decisions.items()
            )
        )

    def _publish(self, heldout: Path, dataset: Any, day: ReplayDay) -> ModelBundle:
        """The bundle a winning challenger serves as: the refit, as the pipeline publishes it."""
        if not self.refit:
            return load_bundle(heldout)
        from hhpulse.model.refit import refit_bundle

        t = time.perf_counter()
        out = heldout.parent / f"{heldout.name}-published"
        path = refit_bundle(heldout, dataset, out, synthetic=True, device=day.settings.device)
        self.seconds_refit += time.perf_counter() - t
        return load_bundle(path)

    def _forget_unused(self) -> None:
        """Delete the bundles no rule serves any more."""
        keep = {s.champion.path.resolve() for s in self.state.values() if s.champion is not None}
        for path in self._root.iterdir():
            if path.resolve() not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        """Per rule: the replacements, the served AUC per task (the mean over the days every
        rule's champion was scored on the task), the live demand figure of what its champions
        served and each champion's offline figure beside its live one; the goals."""
        names = list(self.state)
        served: dict[str, dict[str, float | None]] = {r: {} for r in names}
        days_measured: dict[str, int] = {}
        for task in TASKS:
            both = [
                d["served_auc"]
                for d in self.days
                if all((d.get("served_auc") or {}).get(r, {}).get(task) is not None for r in names)
            ]
            days_measured[task] = len(both)
            for rule in names:
                served[rule][task] = round(float(np.mean([b[rule][task] for b in both])), 4) if both else None
        live = {r: self._live(r) for r in names}
        return {
            "gate_rule": GATE_RULE,
            "replacements": self.replacements,
            "served_auc": served,
            "days_measured": days_measured,
            "live": live,
            "days_with_a_challenger": sum("decisions" in d for d in self.days),
            "candidates": [c.name for c in self.candidates],
            "published": "the refit (train+val+test, calibrated out of fold)"
            if self.refit
            else "the held-out fit",
            "rules": {name: self._describe(st.rule) for name, st in self.state.items()},
            "both": f"and the challenger's ECE no worse than the champion's by more than {self.ece_margin:g}",
            "goal": self._goal(served, live),
            "seconds": round(self.seconds, 2),
            "seconds_refit": round(self.seconds_refit, 2),
            "days": self.days,
        }

    def _describe(self, rule: Rule) -> str:
        boot = (
            f"paired stratified bootstrap ({DEFAULT_RESAMPLES} resamples, {DEFAULT_CONFIDENCE:.0%} "
            f"percentile interval) on the test rows the champion was not fitted on: lower bound of the "
            f"mean improvement > margin {self.margin:g}, no task clearly worse"
        )
        if rule.kind == "margin":
            return f"mean point change of the primary metric > margin {self.margin:g}, on all test rows"
        if rule.kind == "bootstrap":
            return boot
        lr = rule.live_rule or LiveRule()
        young = {
            "challenger": "a tie goes to the challenger",
            "less-young": "a tie goes to a challenger whose history is less young",
            "mature": "a tie goes to a challenger trained on a history that is not young",
            "champion": "a tie keeps it",
        }[lr.young_tie]
        refresh = (
            ""
            if lr.refresh_ratio is None
            else f"; a tie goes to a challenger that learned from >= {lr.refresh_ratio:g}x the champion's resolved demand labels"
        )
        return (
            f"{boot}; or, on at least {lr.min_rows} resolved rows the champion served (and the challenger was "
            f"not fitted on), the lower bound of the challenger's gain over what the champion served > margin, "
            f"and not clearly worse there; a champion published on a young history: {young}{refresh}"
        )

    def _live(self, name: str) -> dict[str, Any] | None:
        """The live demand figure of what the rule's champions served, against the labels the last
        day's history resolved, with each champion's offline figure at publication."""
        day = self._last
        st = self.state[name]
        if day is None:
            return None
        labels: LabelConfig = day.settings.label_config
        resolved = resolved_demand(day.history(), labels)
        out = live_demand(st.records, resolved, oracle=oracle_of(day.market, labels))
        offline = {
            r["version"]: {k: v for k, v in r.items() if k not in ("version", "from_run")} for r in st.reigns
        }
        runs = {r["version"]: r["from_run"] for r in st.reigns}
        out["champions"] = [
            {**c, "from_run": runs.get(c["version"])} for c in champions_offline_live(out, offline)
        ]
        return out

    def _goal(
        self, served: Mapping[str, Mapping[str, float | None]], live: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The goals of the gate's rule against the margin rule, as measured in this replay."""
        mine, base = served.get(GATE_RULE, {}), served.get("margin", {})
        auc_ok = {
            t: None if mine.get(t) is None or base.get(t) is None else mine[t] >= base[t] - GOAL_AUC_TOLERANCE  # type: ignore[operator]
            for t in TASKS
        }
        old = self.state["margin"].replacements if "margin" in self.state else 0
        new = self.state[GATE_RULE].replacements
        fewer = new < old * GOAL_REPLACEMENTS if old else None
        lv = live.get(GATE_RULE) or {}
        ratio = lv.get("ratio_to_oracle")
        judged = [c for c in lv.get("champions", []) if c["within"] is not None]
        # champions served long enough to judge whose offline figure came from a young history:
        # shown beside their live figure, not judged (not a forecast)
        young = [
            c["version"]
            for c in lv.get("champions", [])
            if c.get("live_n", 0) >= GOAL_CHAMPION_ROWS and c.get("gap") is not None and not c.get("forecast")
        ]
        goal: dict[str, Any] = {
            "replacements": f"{GATE_RULE} < {GOAL_REPLACEMENTS:.3g} x margin",
            "served_auc": f"{GATE_RULE} >= margin - {GOAL_AUC_TOLERANCE}",
            "live_ratio": f"version-stratified live demand AUC >= {GOAL_LIVE_RATIO} x the oracle on the same rows",
            "champions": f"each champion with >= {GOAL_CHAMPION_ROWS} resolved rows within {GOAL_CHAMPION_GAP} "
            "of its offline figure at publication (a figure from a young history is not a forecast: not judged)",
            "fewer_replacements": fewer,
            "served_auc_no_lower": auc_ok,
            "live_ratio_met": None if ratio is None else ratio >= GOAL_LIVE_RATIO,
            "champions_met": None if not judged else all(c["within"] for c in judged),
            "champions_judged": [c["version"] for c in judged],
            "champions_young": young,
        }
        # the gate's own pair (fewer replacements, served AUC no lower), then every goal judged
        goal["gate_met"] = (
            bool(fewer)
            and all(v is not False for v in auc_ok.values())
            and any(v is not None for v in auc_ok.values())
        )
        goal["met"] = (
            goal["gate_met"] and goal["live_ratio_met"] is not False and goal["champions_met"] is not False
        )
        return goal
