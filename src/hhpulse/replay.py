"""Market replay: what demand (and salary) look like after N daily runs, before trusting a schedule.

:func:`replay_demo` advances the SYNTHETIC demo market one day per run (``step_days``),
collecting one complete run per day into a store exactly as the pipeline's collect step
does (the demo source: the emulator over HTTP, the real client, ``collect()``, then
``validate_run()``). :func:`replay_store` takes the finished runs already in a store (e.g.
``hhpulse collect --source api`` on a schedule) instead. Both then go through
:func:`evaluate_replay`, which calls the pipeline's own core steps in order: history
(:func:`~hhpulse.history.build_history`), labels and split
(:func:`~hhpulse.dataset.build_dataset`), features (:func:`~hhpulse.train.featurize`),
every candidate (:func:`~hhpulse.train.train_task`: ``fit_candidate``, ``evaluate_candidate``,
``select_winner``). Nothing goes through kfp.local, which is too slow for 45 runs.

For the demo, the market knows each vacancy's true expected lifetime, so the demand test
set is also scored with the **oracle**: the market's own cohort probabilities for that
vacancy (:meth:`~hhpulse.hh.market.Market.cohort_probabilities`). Its AUC is the best any
model that reads the vacancy could reach on those labels; the model's AUC is reported as a
share of it. The replay also checks every resolved label against the vacancy's true
lifetime (``label_accuracy``).

For stored real runs there is no oracle; instead ``timeline`` shows, run by run, the
demand labels as history would have resolved them on that day.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hhpulse.config import CandidateConfig, FeatureConfig, LabelConfig, SplitConfig, load_candidates
from hhpulse.dataset import PENDING, build_dataset, label_sources
from hhpulse.evaluate import classification_metrics
from hhpulse.hh.market import Market
from hhpulse.history import RawRun, build_history, load_raw_runs
from hhpulse.labels import resolve_demand
from hhpulse.store import Store
from hhpulse.train import DEFAULT_PRIMARY, featurize, train_task

log = logging.getLogger(__name__)

DEFAULT_DAYS = 45
GOAL_RATIO = 0.85  # demand test AUC >= 0.85 x the oracle AUC


class ReplayError(ValueError):
    """A replay cannot run (no runs in the store, too few days)."""


@dataclass
class ReplaySettings:
    label_config: LabelConfig = field(default_factory=LabelConfig)
    split_config: SplitConfig = field(default_factory=SplitConfig)
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    candidates: Sequence[CandidateConfig] | None = None
    device: str = "auto"
    primary: str = DEFAULT_PRIMARY


Progress = Callable[[str], None]


@dataclass
class ReplayDay:
    """One replayed run, as the day hooks see it (after it is collected and validated)."""

    index: int  # 0-based number of this run in the replay
    day: int | None  # simulated demo day (None for stored runs)
    run_id: str
    collected_at: pd.Timestamp
    store: Store
    history: Callable[[], pd.DataFrame]  # the history of the runs so far (built once, on first call)
    rates: dict[str, dict[str, float]]  # currency rates by run id, as build_dataset takes them
    new_ids: frozenset[str]  # vacancies first seen in this run
    market: Market | None
    settings: ReplaySettings
    shared: dict[str, Any]  # scratch space the hooks of one day share


class DayHook(Protocol):
    key: str  # its key in the replay's report (and --json)

    def on_day(self, day: ReplayDay) -> None: ...

    def summary(self) -> dict[str, Any]: ...


class _Days:
    """Feeds the runs to the hooks one at a time, with the history of the runs so far."""

    def __init__(
        self, store: Store, hooks: Sequence[DayHook], market: Market | None, settings: ReplaySettings
    ):
        self.store, self.hooks, self.market, self.settings = store, list(hooks), market, settings
        self.runs: list[RawRun] = []
        self.seen: set[str] = set()
        self.seconds = 0.0

    def add(self, run: RawRun, day: int | None = None) -> None:
        if not self.hooks:
            return
        t = time.perf_counter()
        self.runs.append(run)
        ids = {str(i.get("id")) for i in run.items} - set(run.quarantined)
        new, runs = frozenset(ids - self.seen), list(self.runs)
        self.seen |= ids
        cache: list[pd.DataFrame] = []

        def history() -> pd.DataFrame:
            if not cache:
                cache.append(build_history(runs))
            return cache[0]

        info = ReplayDay(
            index=len(runs) - 1,
            day=day,
            run_id=run.run_id,
            collected_at=_run_time(run),
            store=self.store,
            history=history,
            rates={r.run_id: dict(r.meta.get("currency_rates") or {}) for r in runs},
            new_ids=new,
            market=self.market,
            settings=self.settings,
            shared={},
        )
        for hook in self.hooks:
            hook.on_day(info)
        self.seconds += time.perf_counter() - t

    def report(self, report: dict[str, Any]) -> None:
        for hook in self.hooks:
            report[hook.key] = hook.summary()
        if self.hooks:
            report["seconds_by_step"]["hooks"] = round(self.seconds, 2)


def _quiet(_: str) -> None:
    pass


def replay_demo(
    store: Store,
    *,
    days: int = DEFAULT_DAYS,
    step_days: int = 1,
    daily_new: int = 150,
    seed: int = 7,
    start_day: int | None = None,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
    hooks: Sequence[DayHook] = (),
) -> dict[str, Any]:
    """Collect ``days`` daily demo runs into ``store``, then train and evaluate once.
    ``hooks`` see every run as it is collected (see :class:`ReplayDay`)."""
    from hhpulse.collect import collect, read_items
    from hhpulse.hh.sources import DEMO_START_DAY, make_source
    from hhpulse.validate import quarantined_ids, validate_run

    if days < 2:
        raise ReplayError(f"a replay needs at least 2 runs (closes are seen between runs), got {days}")
    first = DEMO_START_DAY if start_day is None else start_day
    settings = settings or ReplaySettings()
    market = Market(seed=seed, daily_new=daily_new)
    days_feed = _Days(store, hooks, market, settings)
    t0 = time.perf_counter()
    for n in range(days):
        day = first + n * step_days
        src = make_source("demo", demo_size=daily_new, demo_day=day, demo_step_days=step_days)
        src.seed = seed  # type: ignore[attr-defined]
        res = collect(src, store, progress=False)
        if not res.complete:
            raise ReplayError(f"demo run for day {day} did not complete: {res.stop_reason}")
        validate_run(store, res.run_id)
        if hooks:
            meta = store.get_json(f"raw/{res.run_id}/meta.json")
            run = RawRun(res.run_id, meta, read_items(store, res.run_id), quarantined_ids(store, res.run_id))
            days_feed.add(run, day)
        progress(f"day {n + 1}/{days}: simulated day {day}, {res.items} vacancies open")
    collected = time.perf_counter() - t0 - days_feed.seconds
    report = evaluate_replay(load_raw_runs(store), market, settings=settings, progress=progress)
    report["seconds_by_step"] = {"collect": round(collected, 2), **report["seconds_by_step"]}
    days_feed.report(report)
    report.update(source="demo", days=days, step_days=step_days, first_day=first, daily_new=daily_new)
    return report


def replay_store(
    store: Store,
    *,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
    hooks: Sequence[DayHook] = (),
) -> dict[str, Any]:
    """Replay the finished runs in ``store`` (e.g. real ``--source api`` runs): labels day by day, then train."""
    runs = load_raw_runs(store)
    if len(runs) < 2:
        raise ReplayError(f"{store.uri('raw/')}: a replay needs at least 2 finished runs, found {len(runs)}")
    synthetic = any(r.meta.get("synthetic") for r in runs)
    market = None
    if synthetic and all((r.meta.get("source") or {}).get("kind") == "demo" for r in runs):
        src = runs[0].meta["source"]
        market = Market(seed=int(src.get("seed", 7)), daily_new=int(src.get("daily_new", 150)))
    settings = settings or ReplaySettings()
    days_feed = _Days(store, hooks, market, settings)
    for run in sorted(runs, key=lambda r: (_run_time(r), r.run_id)):
        days_feed.add(run)
    report = evaluate_replay(runs, market, settings=settings, progress=progress)
    report["timeline"] = timeline(runs, settings.label_config)
    days_feed.report(report)
    report.update(source="store", runs=len(runs))
    return report


def _run_time(run: RawRun) -> pd.Timestamp:
    return pd.Timestamp(run.meta.get("collected_at"))


def timeline(runs: Sequence[RawRun], label_config: LabelConfig) -> list[dict[str, Any]]:
    """Run by run: the demand labels as the history of the runs so far would resolve them."""
    ordered = sorted(runs, key=lambda r: (_run_time(r), r.run_id))
    out = []
    for i in range(len(ordered)):
        hist = build_history(ordered[: i + 1])
        dem = resolve_demand(hist, label_config)
        out.append(
            {
                "run_id": ordered[i].run_id,
                "collected_at": str(_run_time(ordered[i])),
                "vacancies": len(hist),
                "sources": _counts(dem["demand_source"]),
                "cohorts": _counts(dem["demand_cohort"]),
                "unresolved": _counts(dem.loc[dem["demand_cohort"].isna(), "demand_status"]),
            }
        )
    return out


def _counts(s: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.value_counts().items()}


def evaluate_replay(
    runs: Sequence[RawRun],
    market: Market | None = None,
    *,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """History, labels, split, features, every candidate; per task the figures of the replay."""
    settings = settings or ReplaySettings()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    hist = build_history(runs)
    rates = {r.run_id: dict(r.meta.get("currency_rates") or {}) for r in runs}
    timings["history"] = time.perf_counter() - t
    progress(f"history: {len(hist)} vacancies from {len(runs)} runs")

    t = time.perf_counter()
    dataset = build_dataset(hist, rates, settings.label_config, settings.split_config)
    timings["labels_and_split"] = time.perf_counter() - t

    t = time.perf_counter()
    _, sets = featurize(dataset, settings.feature_config)
    timings["features"] = time.perf_counter() - t
    candidates = list(settings.candidates or load_candidates())
    labels = label_sources(dataset.summary)
    out: dict[str, Any] = {}
    for task, fs in sets.items():
        t = time.perf_counter()
        res, trained = train_task(fs, candidates, device=settings.device, primary=settings.primary)
        timings[f"train_{task}"] = time.perf_counter() - t
        td = dataset.tasks[task]
        test = res.candidates[res.winner]["metrics"].get("test", {})
        mix = td.boundaries.get("cohorts", {})
        fig: dict[str, Any] = {
            "winner": res.winner,
            "test_auc": test.get("roc_auc_ovo"),
            "baseline": res.baseline,
            "baseline_test_auc": res.candidates[res.baseline]["metrics"].get("test", {}).get("roc_auc_ovo")
            if res.baseline
            else None,
            "test_rows": test.get("n", 0),
            "train_mix": mix.get("train", {}),
            "test_mix": mix.get("test", {}),
            "missing_test_cohorts": td.boundaries.get("missing_test_cohorts", []),
            "missing_cohorts": td.boundaries.get("missing_cohorts", []),
            "split": td.boundaries.get("method"),
            "notes": test.get("notes", []),
        }
        fig.update(labels[task])
        fig["label_sources"] = fig.pop("sources")
        if task == "demand":
            fig["pending"] = int((td.frame["part"] == PENDING).sum())
            if market is not None:
                fig.update(_oracle(market, td.frame, settings.label_config, test.get("roc_auc_ovo")))
        out[task] = fig
        progress(f"{task}: winner {res.winner}, test ROC AUC (OvO) {_fmt(fig['test_auc'])}")
    out["runs"] = len(runs)
    out["vacancies"] = len(hist)
    out["seconds_by_step"] = {k: round(v, 2) for k, v in timings.items()}
    return out


def _oracle(
    market: Market, frame: pd.DataFrame, config: LabelConfig, test_auc: float | None
) -> dict[str, Any]:
    """The market's own cohort probabilities on the test rows, and how true the labels are."""
    edges = (config.demand_high_days, config.demand_low_days)
    classes = list(config.demand_cohorts)
    test = frame[frame["part"] == "test"]
    proba = [market.cohort_probabilities(str(i), edges) for i in test["id"]]
    known = [p is not None for p in proba]
    oracle_auc = None
    if any(known):
        rows = test[known]
        oracle = classification_metrics(rows["label"].tolist(), np.array([p for p in proba if p]), classes)
        oracle_auc = oracle.get("roc_auc_ovo")
    accuracy: dict[str, float] = {}
    for source, rows in frame.groupby("demand_source"):
        truth = [market.true_lifetime_days(str(i)) for i in rows["id"]]
        ok = [t is not None and _cohort(t, edges) == lab for t, lab in zip(truth, rows["label"], strict=True)]
        accuracy[str(source)] = round(float(np.mean(ok)), 4) if ok else float("nan")
    ratio = None if not (oracle_auc and test_auc is not None) else test_auc / oracle_auc
    return {
        "oracle_auc": oracle_auc,
        "ratio_to_oracle": ratio,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": bool(ratio is not None and ratio >= GOAL_RATIO),
        "label_accuracy": accuracy,
    }


def _cohort(days: float, edges: tuple[float, float]) -> str:
    return "high" if days < edges[0] else "medium" if days < edges[1] else "low"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
