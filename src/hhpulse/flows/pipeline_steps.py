"""The core of the pipeline's later steps, as plain functions (no kfp).

Components call these with artifact paths; tests and the benchmark call them directly.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hhpulse.config import baseline_candidate
from hhpulse.data.store import open_store
from hhpulse.flows.workflow import (
    DEFAULT_ECE_MARGIN,
    bundle_from_results,
    judge,
    metrics_document,
    served_evidence,
    test_predictions,
)
from hhpulse.model.dataset import Dataset, instances, label_lines, label_sources
from hhpulse.model.evaluate import bundle_caveats, data_profile, drift_report
from hhpulse.model.features import TextVectorizer
from hhpulse.model.gate import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from hhpulse.model.registry import champion, load_champion
from hhpulse.model.report import REPORT_NAME, comparison_html, with_gate
from hhpulse.model.train import (
    DEFAULT_SELECTION,
    FeatureSet,
    TaskResult,
    evaluate_candidate,
    load_candidate,
    select_winner,
)

log = logging.getLogger(__name__)


def _candidates(model_paths: Sequence[str]):  # type: ignore[no-untyped-def]
    return [load_candidate(p) for p in model_paths]


def evaluate_all(
    store: str,
    s3_endpoint: str,
    dataset: Dataset,
    features_dir: str,
    model_paths: Sequence[str],
    primary: str,
) -> dict[str, Any]:
    """Every candidate's metrics, each task's winner, the winners' curves, the winners'
    calibration (before/after on the test split), the strongest salary terms (Markdown),
    and the HTML report."""
    from hhpulse.model.calibration import calibrate_winners
    from hhpulse.model.explain import top_terms, top_terms_markdown

    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    winners: dict[str, Any] = {}
    cands = _candidates(model_paths)
    for task in dataset.tasks:
        fs = FeatureSet.load(Path(features_dir) / task)
        mine = {c.config.name: c for c in cands if c.config.task == task}
        scored = {
            n: {"kind": c.config.kind, "info": c.info, "metrics": evaluate_candidate(c, fs)}
            for n, c in mine.items()
        }
        res = select_winner(task, scored, primary, baseline=baseline_candidate(task).name)
        results[task] = metrics_document({task: res})[task]
        win = mine[res.winner]
        winners[task] = win
        test = res.candidates[res.winner]["metrics"].get("test", {})
        proba = win.predict_proba(fs.X["test"], fs.part_rows("test"))
        curves[task] = {
            "classes": fs.classes,
            "confusion_matrix": test.get("confusion_matrix", []),
            "roc": _micro_roc(fs.y["test"], proba, fs.classes),
        }
    vec = TextVectorizer.load(Path(features_dir) / "vectorizer")
    calibrators, calibration = calibrate_winners(dataset, vec, winners)
    terms_md = ""
    if "salary" in winners:
        test_rows = instances(dataset.tasks["salary"].part("test"))  # texts and structured fields
        terms = top_terms(vec, winners["salary"], calibrators["salary"], test_rows)
        terms_md = top_terms_markdown(terms, "salary")
    drift = None
    st = open_store(store, endpoint_url=s3_endpoint or None)
    if champion(st) is not None:
        with tempfile.TemporaryDirectory() as tmp:
            champ = load_champion(st, tmp)
            terms = TextVectorizer.load(Path(features_dir) / "vectorizer").common_terms("responsibility", 300)
            current = data_profile({t: td.part("train") for t, td in dataset.tasks.items()}, terms)
            drift = drift_report(champ.metadata.get("profile", {}), current)
            drift["champion_version"] = champ.version
    from hhpulse.watch.monitor import latest_report, monitor_html

    html = comparison_html(
        results,
        drift,
        demand_proxy=bool(dataset.summary.get("demand_proxy")),
        calibration=calibration,
        label_lines=label_lines(dataset.summary),
        sections=[monitor_html(latest_report(st))],
        header=report_header(st, dataset),
        summary=dataset.summary,
    )
    return {
        "results": results,
        "winner_curves": curves,
        "html": html,
        "drift": drift,
        "calibration": calibration,
        "top_terms_md": terms_md,
    }


def describe_source(source: dict[str, Any] | None) -> str:
    """A raw run's ``meta.json`` source in words, for the report's header."""
    src = source or {}
    kind = src.get("kind")
    if kind == "demo":
        return f"the demo hh.ru emulator (SYNTHETIC market, day {src.get('day')})"
    if kind == "file":
        return f"a dump of hh.ru API search items: {src.get('path')}"
    if kind == "api":
        queries = ", ".join(src.get("queries") or []) or "everything"
        return f"the hh.ru API at {src.get('api_url')} (queries: {queries}; area {src.get('area') or 'any'})"
    return str(kind or "n/a")


def report_header(st: Any, dataset: Dataset) -> dict[str, Any]:
    """The report's header (see :func:`hhpulse.model.report.header_html`): the newest run's
    source, SYNTHETIC or real, the data's dates, the window and the history's version."""
    from datetime import datetime, timezone

    from hhpulse.data.history_store import describe_window

    summary = dataset.summary
    meta: dict[str, Any] = {}
    for run in sorted(summary.get("runs") or [], reverse=True):
        if st.exists(f"raw/{run}/meta.json"):
            meta = st.get_json(f"raw/{run}/meta.json")
            break
    window = summary.get("history_window")
    dates = [str(x) for x in summary.get("date_range") or [] if x]
    return {
        "synthetic": any(
            st.exists(f"raw/{r}/meta.json") and bool(st.get_json(f"raw/{r}/meta.json").get("synthetic"))
            for r in summary.get("runs") or []
        ),
        "source": describe_source(meta.get("source")),
        "collected": " .. ".join(dates) or None,
        "window": describe_window(window) if window else "every labelled row of the dataset",
        # the Delta table's version read (the old layout's generation for a store not yet moved)
        "history_version": (window or {}).get("version", (window or {}).get("history_version")),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _micro_roc(y: Sequence[str], proba: Any, classes: Sequence[str]) -> dict[str, list[float]] | None:
    """One ROC curve for the UI: the winner's per-class one-vs-rest curves pooled (micro-average)."""
    import numpy as np
    from sklearn.metrics import roc_curve

    idx = {c: i for i, c in enumerate(classes)}
    onehot = np.zeros_like(proba)
    for r, v in enumerate(y):
        onehot[r, idx[v]] = 1
    if onehot.sum() in (0, onehot.size):
        return None
    fpr, tpr, thr = roc_curve(onehot.ravel(), proba.ravel())
    step = max(1, len(fpr) // 200)  # keep the artifact small
    return {
        "fpr": fpr[::step].tolist(),
        "tpr": tpr[::step].tolist(),
        "thresholds": np.clip(thr[::step], 0, 1).tolist(),
    }


def build_and_gate(
    store: str,
    s3_endpoint: str,
    dataset: Dataset,
    features_dir: str,
    results: dict[str, Any],
    model_paths: Sequence[str],
    bundle_dir: str,
    margin: float,
    primary: str,
    ece_margin: float = DEFAULT_ECE_MARGIN,
    *,
    report_html: str | None = None,
) -> dict[str, Any]:
    """Build the challenger bundle from the winners and compare it with the champion on the new
    test set: a paired bootstrap of each task's primary metric on the test rows the champion
    was not fitted on (:func:`hhpulse.flows.workflow.judge`; the lower bound of the mean improvement
    must clear ``margin``), then calibration (ECE no worse than the champion's by more than
    ``ece_margin``). The verdict goes to ``gates/<version>.json``; ``report_html`` (the evaluate
    step's report) goes into the bundle as ``report.html`` with the verdict appended."""
    from hhpulse.config import LabelConfig
    from hhpulse.model.bundle import load_bundle

    cands = {c.config.name: c for c in _candidates(model_paths)}
    winners = {t: cands[r["winner"]] for t, r in results.items()}
    task_results = {
        t: TaskResult(
            t,
            r["winner"],
            r["primary"],
            r["candidates"],
            r.get("baseline"),
            (r.get("selection") or {}).get("rule", DEFAULT_SELECTION),
        )
        for t, r in results.items()
    }
    vec = TextVectorizer.load(Path(features_dir) / "vectorizer")
    synthetic = _store_is_synthetic(store, s3_endpoint, dataset)
    path = bundle_from_results(
        bundle_dir, dataset, vec, winners, task_results, label_config=LabelConfig(), synthetic=synthetic
    )
    challenger = load_bundle(path)
    # the challenger's held-out predictions on the new test rows (never a refit on them)
    challenger_preds = test_predictions(challenger, dataset, "test")
    st = open_store(store, endpoint_url=s3_endpoint or None)
    champ_version = None
    with tempfile.TemporaryDirectory() as tmp:
        champ = load_champion(st, tmp) if champion(st) is not None else None
        champ_version = champ.version if champ is not None else None
        # the live evidence: the challenger against what the champion served, on its resolved rows
        live = (
            served_evidence(
                challenger, champion_outcomes(st, champ.version, dataset), primary, champion=champ
            )
            if champ is not None
            else None
        )
        judged = judge(
            challenger_preds,
            champ,
            dataset,
            primary=primary,
            margin=margin,
            ece_margin=ece_margin,
            live=live,
        )
    verdict, challenger_metrics, champion_metrics = (
        judged.verdict,
        judged.challenger_metrics,
        judged.champion_metrics,
    )
    log.info(
        "challenger %s vs champion %s: %s", challenger.version, champ_version or "none", verdict["reason"]
    )
    out = {
        "version": challenger.version,
        "challenger_wins": bool(verdict["challenger_wins"]),
        "reason": verdict["reason"],
        "lines": verdict.get("lines", [verdict["reason"]]),
        "rule": verdict.get("rule", "first model"),
        "bootstrap": {
            "resamples": DEFAULT_RESAMPLES,
            "confidence": DEFAULT_CONFIDENCE,
            "seed": DEFAULT_SEED,
            "stratified_by": "true cohort",
            "rows": "the new test rows the champion was not fitted on",
        },
        "margin": margin,
        "mean_delta": verdict.get("mean_delta"),
        "mean_interval": verdict.get("mean_interval"),
        "intervals": {t: v["interval"] for t, v in verdict.get("tasks", {}).items() if "interval" in v},
        "champion_version": champ_version or "",
        "deltas": verdict["deltas"],
        "ece_deltas": verdict["calibration"]["ece_deltas"],
        "ece_margin": ece_margin,
        "challenger_test": {t: m.get(primary) for t, m in challenger_metrics.items()},
        "champion_test": {t: m.get(primary) for t, m in (champion_metrics or {}).items()},
        "challenger_ece": {t: m.get("ece") for t, m in challenger_metrics.items()},
        "champion_ece": {t: m.get("ece") for t, m in (champion_metrics or {}).items()},
        "tasks": verdict.get("tasks", {}),
        "live": verdict.get("live", {}),
        "young": verdict.get("young", {}),
        "primary": primary,
        "winners": {t: r["winner"] for t, r in results.items()},
        "labels": label_sources(dataset.summary),
        "label_lines": label_lines(dataset.summary),
        "test_rows": {t: int(m.get("n") or 0) for t, m in challenger_metrics.items()},
        "caveats": bundle_caveats(challenger.metadata.get("metrics") or {}),
        "synthetic": synthetic,
    }
    if report_html is not None:
        from hhpulse.model.bundle import write_manifest

        (Path(path) / REPORT_NAME).write_text(with_gate(report_html, out), encoding="utf-8")
        write_manifest(Path(path), challenger.version)  # the report is part of the verified bundle
    write_gate_record(st, challenger.version, out)
    return out


def write_gate_record(st: Any, version: str, verdict: dict[str, Any]) -> str:
    """``gates/<version>.json``, the verdict (for people, the publish step and ``hhpulse run``),
    created once: ``If-None-Match: *``, so no other run's verdict can replace it. The same
    verdict found there is this step's own write (a retry); another is refused."""
    from hhpulse.data.store import json_bytes
    from hhpulse.model.registry import AlreadyExists, create_or_match

    key = f"gates/{version}.json"
    try:
        create_or_match(st, key, json_bytes(verdict))
    except AlreadyExists:
        raise AlreadyExists(
            f"{st.uri(key)} already holds another gate verdict for {version}: a verdict is never "
            "replaced; build the bundle again to get a new version"
        ) from None
    return key


def champion_outcomes(st: Any, version: str, dataset: Dataset) -> Any:
    """What the champion ``version`` served (the store's served log) whose demand outcome the
    dataset has resolved since (its demand rows, every part; none on the age proxy), as
    :class:`hhpulse.model.gate.ServedOutcomes` for the gate's live evidence."""
    import pandas as pd

    from hhpulse.watch.monitor import served_outcomes
    from hhpulse.watch.served import read_served

    if dataset.summary.get("demand_proxy") or "demand" not in dataset.tasks:
        return None
    rows = dataset.tasks["demand"].frame
    resolved = pd.DataFrame({"id": rows["id"].astype(str), "demand_cohort": rows["label"].astype(str)})
    bad: list[str] = []
    outcomes = served_outcomes(read_served(st, errors="skip", bad=bad), resolved, version)
    if bad:
        log.warning("gate: %d unreadable served batches left out of the live evidence", len(bad))
    return outcomes


def refit_published(
    store: str, s3_endpoint: str, dataset: Dataset, heldout_dir: str, bundle_dir: str, device: str = "auto"
) -> dict[str, Any]:
    """The bundle to publish, after the gate passed: the held-out bundle's winners refitted on
    every labelled row (see :func:`hhpulse.model.refit.refit_bundle`). The gate has read the
    held-out bundle; this one keeps its version and figures."""
    from hhpulse.model.refit import refit_bundle

    synthetic = _store_is_synthetic(store, s3_endpoint, dataset)
    path = refit_bundle(heldout_dir, dataset, bundle_dir, synthetic=synthetic, device=device)
    from hhpulse.model.bundle import load_bundle

    published = load_bundle(path)
    fits = published.metadata["metrics"].get("fits", {})
    return {
        "version": published.version,
        "fit": "published (refit on train+val+test)",
        "rows": {t: f["published"]["rows"] for t, f in fits.items()},
        "heldout_rows": {t: f["measured"]["parts"]["train"]["rows"] for t, f in fits.items()},
        "prior_rule": {
            t: c.get("prior_rule")
            for t, c in published.metadata["metrics"].get("published_calibration", {}).items()
        },
    }


def _store_is_synthetic(store: str, s3_endpoint: str, dataset: Dataset) -> bool:
    st = open_store(store, endpoint_url=s3_endpoint or None)
    for run in dataset.summary.get("runs", []):
        key = f"raw/{run}/meta.json"
        if st.exists(key) and st.get_json(key).get("synthetic"):
            return True
    return False


def publish_gated(store: str, s3_endpoint: str, bundle_dir: str) -> str:
    """The publish step: upload the bundle and make it the champion, but only if the champion is
    still the one the gate compared it with (its verdict in ``gates/<version>.json``); otherwise
    :class:`hhpulse.model.registry.ChampionMoved` (another run promoted meanwhile). Returns the version's URI."""
    from hhpulse.data.store import KeyNotFound
    from hhpulse.model.bundle import verify_manifest
    from hhpulse.model.registry import ANY_CHAMPION, publish

    st = open_store(store, endpoint_url=s3_endpoint or None)
    version = verify_manifest(bundle_dir)["version"]
    try:
        expect = st.get_json(f"gates/{version}.json").get("champion_version") or None
    except KeyNotFound:
        log.warning("no gate verdict for %s in %s: publishing over the current champion", version, st.uri())
        expect = ANY_CHAMPION
    return publish(st, bundle_dir, expect_champion=expect).uri
