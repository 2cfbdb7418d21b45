"""Market replay: what demand (and salary) look like after N daily runs, before trusting a schedule.

:func:`replay_demo` advances the SYNTHETIC demo market one day per run (``step_days``),
collecting one complete run per day into a store exactly as the pipeline's collect step
does (the demo source: the emulator over HTTP, the real client, ``collect()``, then
``validate_run()``). :func:`replay_store` takes the finished runs already in a store (e.g.
``hhpulse collect --source api`` on a schedule) instead. Both fold each run into the history
as soon as it is collected and validated (:func:`~hhpulse.data.history_store.fold_run`, as the
pipeline's validate step does; the stored runs into a scratch folder, never into their store),
and after each fold call the day hooks (:class:`DayHook`, e.g. a gate or a live-traffic
simulation) with a :class:`ReplayDay`. At the end, :func:`evaluate_history` reads the folded
history's training window (:func:`~hhpulse.data.history_store.read_history`, as the dataset step
does) and calls the pipeline's own core steps in order: labels and split
(:func:`~hhpulse.model.dataset.build_dataset`), features (:func:`~hhpulse.model.train.featurize`),
every candidate (:func:`~hhpulse.model.train.train_task`: ``fit_candidate``, ``evaluate_candidate``,
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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hhpulse.config import (
    DEFAULT_WINDOW_DAYS,
    CandidateConfig,
    FeatureConfig,
    LabelConfig,
    SplitConfig,
    load_candidates,
)
from hhpulse.data.history import RawRun, build_history
from hhpulse.data.history_store import FoldResult, fold_run, history_rates, read_history
from hhpulse.data.store import LocalStore, Store
from hhpulse.hh.market import Market
from hhpulse.model.dataset import PENDING, build_dataset, label_sources
from hhpulse.model.evaluate import classification_metrics
from hhpulse.model.labels import resolve_demand
from hhpulse.model.train import DEFAULT_PRIMARY, featurize, train_task

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
    # the dataset step's training window (None: all of history); ReplayDay.history and the
    # end-of-replay training read it
    window_days: int | None = DEFAULT_WINDOW_DAYS


Progress = Callable[[str], None]


@dataclass
class ReplayDay:
    """One replayed run, after it was collected, validated and folded into the history."""

    index: int  # 0-based number of this run in the replay
    day: int | None  # simulated demo day (None for stored runs)
    run_id: str
    collected_at: pd.Timestamp
    store: Store  # the store whose history holds this run (a scratch folder for stored runs)
    history: Callable[[], pd.DataFrame]  # the folded history as the dataset step reads it (cached per day)
    rates: dict[str, dict[str, float]]  # currency rates by run id, as build_dataset takes them
    new_ids: frozenset[str]  # vacancies first seen in this run
    market: Market | None
    settings: ReplaySettings
    shared: dict[str, Any]  # scratch space the hooks of one day share


class DayHook(Protocol):
    """Called after each replayed run's fold; its summary goes into the report under ``key``."""

    key: str  # its key in the replay's report (and --json)

    def on_day(self, day: ReplayDay) -> None: ...

    def summary(self) -> dict[str, Any]: ...


def served_instances(day: ReplayDay) -> list[dict[str, Any]]:
    """The day's newly opened vacancies as a predictor is sent them (with their ids): what the
    champion serving that day predicts. A vacancy without any text is never sent."""
    hist = day.history()
    rows = hist[hist["id"].astype(str).isin(day.new_ids)]
    keep = []
    for r in rows[["id", "responsibility", "name", "requirement"]].to_dict("records"):
        inst = {k: v for k, v in r.items() if k != "id" and isinstance(v, str) and v.strip()}
        if inst:
            keep.append({"responsibility": "", **inst, "id": str(r["id"])})
    return keep


def oracle_of(market: Market | None, config: LabelConfig) -> Callable[[str], tuple[float, ...] | None] | None:
    """The demo market's own cohort probabilities of a vacancy id (None for a real store)."""
    if market is None:
        return None
    edges = (config.demand_high_days, config.demand_low_days)
    return lambda vid: market.cohort_probabilities(str(vid), edges)


def _day(
    store: Store,
    index: int,
    day: int | None,
    fold: FoldResult,
    run_id: str,
    market: Market | None,
    settings: ReplaySettings,
) -> ReplayDay:
    cache: dict[str, pd.DataFrame] = {}

    def history() -> pd.DataFrame:  # the version this day's fold made, whatever folds later
        if "h" not in cache:
            cache["h"] = read_history(store, window_days=settings.window_days, version=fold.version)
        return cache["h"]

    state_runs = {r["run_id"]: r for r in _folded(store, fold.version)}
    return ReplayDay(
        index=index,
        day=day,
        run_id=run_id,
        collected_at=pd.Timestamp(state_runs[run_id]["collected_at"]),
        store=store,
        history=history,
        rates=history_rates(store, version=fold.version),
        new_ids=fold.new_ids,
        market=market,
        settings=settings,
        shared={},
    )


def _folded(store: Store, version: int | None = None) -> list[dict[str, Any]]:
    from hhpulse.data.history_store import folded_runs

    return folded_runs(store, version=version)


def _call_hooks(hooks: Sequence[DayHook], day: ReplayDay, timings: dict[str, float]) -> None:
    for hook in hooks:
        t = time.perf_counter()
        hook.on_day(day)
        timings[f"hook_{hook.key}"] = timings.get(f"hook_{hook.key}", 0.0) + time.perf_counter() - t


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
    """Collect ``days`` daily demo runs into ``store`` (``daily_new``: the demo's
    ``--demo-size``, vacancies opened per simulated day), folding each into the history as the
    pipeline does and calling ``hooks`` after each fold; then train and evaluate once."""
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import DEMO_START_DAY, make_source
    from hhpulse.data.validate import validate_run

    if days < 2:
        raise ReplayError(f"a replay needs at least 2 runs (closes are seen between runs), got {days}")
    settings = settings or ReplaySettings()
    market = Market(seed=seed, daily_new=daily_new)
    first = DEMO_START_DAY if start_day is None else start_day
    timings: dict[str, float] = {"collect": 0.0, "fold": 0.0}
    for n in range(days):
        day = first + n * step_days
        t = time.perf_counter()
        # the emulator in process (no sockets): the same items as over HTTP (tests/test_demo_transport.py)
        src = make_source(
            "demo",
            demo_size=daily_new,
            demo_day=day,
            demo_step_days=step_days,
            demo_transport="in-process",
        )
        src.seed = seed  # type: ignore[attr-defined]
        res = collect(src, store, progress=False)
        if not res.complete:
            raise ReplayError(f"demo run for day {day} did not complete: {res.stop_reason}")
        validate_run(store, res.run_id)
        timings["collect"] += time.perf_counter() - t
        t = time.perf_counter()
        fold = fold_run(store, res.run_id)
        timings["fold"] += time.perf_counter() - t
        _call_hooks(hooks, _day(store, n, day, fold, res.run_id, market, settings), timings)
        progress(
            f"day {n + 1}/{days}: simulated day {day}, {res.items} vacancies open, "
            f"{len(fold.new_ids)} new; history {fold.vacancies} vacancies"
        )
    t = time.perf_counter()
    hist = read_history(store, window_days=settings.window_days)
    timings["history"] = time.perf_counter() - t
    report = evaluate_history(hist, history_rates(store), days, market, settings=settings, progress=progress)
    report["seconds_by_step"] = {
        **{k: round(v, 2) for k, v in timings.items()},
        **report["seconds_by_step"],
    }
    report.update(source="demo", days=days, step_days=step_days, first_day=first, daily_new=daily_new)
    report["window_days"] = settings.window_days
    for hook in hooks:
        report[hook.key] = hook.summary()
    return report


def replay_store(
    store: Store,
    *,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
    hooks: Sequence[DayHook] = (),
) -> dict[str, Any]:
    """Replay the finished runs in ``store`` (e.g. real ``--source api`` runs): fold them one by
    one into a scratch folder (``store`` is only read), the labels and ``hooks`` day by day,
    then train once."""
    from hhpulse.data.runs import list_runs, run_order_key

    keys = set(store.list("raw/"))
    metas = {
        r: store.get_json(f"raw/{r}/meta.json")
        for r in list_runs(store)
        if f"raw/{r}/vacancies.jsonl.gz" in keys
    }
    order = sorted(metas, key=lambda r: run_order_key(metas[r], r))
    if len(order) < 2:
        raise ReplayError(f"{store.uri('raw/')}: a replay needs at least 2 finished runs, found {len(order)}")
    synthetic = any(m.get("synthetic") for m in metas.values())
    market = None
    if synthetic and all((m.get("source") or {}).get("kind") == "demo" for m in metas.values()):
        src = metas[order[0]]["source"]
        market = Market(seed=int(src.get("seed", 7)), daily_new=int(src.get("daily_new", 150)))
    settings = settings or ReplaySettings()
    timings: dict[str, float] = {"fold": 0.0}
    days = []
    with tempfile.TemporaryDirectory(prefix="hhpulse-replay-history-") as tmp:
        scratch = LocalStore(tmp)
        for n, run_id in enumerate(order):
            t = time.perf_counter()
            fold = fold_run(store, run_id, into=scratch)
            timings["fold"] += time.perf_counter() - t
            day = _day(scratch, n, None, fold, run_id, market, settings)
            days.append(_timeline_day(run_id, metas[run_id], read_history(scratch), settings.label_config))
            _call_hooks(hooks, day, timings)
            progress(f"run {n + 1}/{len(order)}: {run_id}, history {fold.vacancies} vacancies")
        t = time.perf_counter()
        hist = read_history(scratch, window_days=settings.window_days)
        rates = history_rates(scratch)
        timings["history"] = time.perf_counter() - t
    report = evaluate_history(hist, rates, len(order), market, settings=settings, progress=progress)
    report["seconds_by_step"] = {**{k: round(v, 2) for k, v in timings.items()}, **report["seconds_by_step"]}
    report["timeline"] = days
    report.update(source="store", runs=len(order), window_days=settings.window_days)
    for hook in hooks:
        report[hook.key] = hook.summary()
    return report


def _timeline_day(
    run_id: str, meta: dict[str, Any], hist: pd.DataFrame, label_config: LabelConfig
) -> dict[str, Any]:
    """The demand labels as the history of the runs so far resolves them."""
    dem = resolve_demand(hist, label_config)
    return {
        "run_id": run_id,
        "collected_at": str(pd.Timestamp(meta.get("collected_at"))),
        "vacancies": len(hist),
        "sources": _counts(dem["demand_source"]),
        "cohorts": _counts(dem["demand_cohort"]),
        "unresolved": _counts(dem.loc[dem["demand_cohort"].isna(), "demand_status"]),
    }


def _run_time(run: RawRun) -> pd.Timestamp:
    return pd.Timestamp(run.meta.get("collected_at"))


def timeline(runs: Sequence[RawRun], label_config: LabelConfig) -> list[dict[str, Any]]:
    """Run by run: the demand labels as the history of the runs so far would resolve them
    (in memory, from build_history; :func:`replay_store` folds instead)."""
    ordered = sorted(runs, key=lambda r: (_run_time(r), r.run_id))
    return [
        _timeline_day(ordered[i].run_id, ordered[i].meta, build_history(ordered[: i + 1]), label_config)
        for i in range(len(ordered))
    ]


def _counts(s: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.value_counts().items()}


def evaluate_replay(
    runs: Sequence[RawRun],
    market: Market | None = None,
    *,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """:func:`evaluate_history` of the history built in memory from ``runs``."""
    t = time.perf_counter()
    hist = build_history(runs)
    rates = {r.run_id: dict(r.meta.get("currency_rates") or {}) for r in runs}
    took = time.perf_counter() - t
    report = evaluate_history(hist, rates, len(runs), market, settings=settings, progress=progress)
    report["seconds_by_step"] = {"history": round(took, 2), **report["seconds_by_step"]}
    return report


def evaluate_history(
    hist: pd.DataFrame,
    rates: dict[str, dict[str, float]],
    runs: int,
    market: Market | None = None,
    *,
    settings: ReplaySettings | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Labels, split, features, every candidate; per task the figures of the replay."""
    settings = settings or ReplaySettings()
    timings: dict[str, float] = {}
    progress(f"history: {len(hist)} vacancies from {runs} runs")

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
        progress(f"training the {task} candidates")
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
                absent = sorted(set(fig["missing_cohorts"]) | set(fig["missing_test_cohorts"]))
                if absent:  # a goal is not met on a cohort that does not exist yet
                    fig["meets_goal"] = None
                    fig["goal_not_judged"] = (
                        f"measured on {', '.join(c for c in td.classes if c not in absent)} only "
                        f"({', '.join(absent)}: not in the test set); the goal is judged once every "
                        "cohort is"
                    )
        out[task] = fig
    out["runs"] = runs
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
