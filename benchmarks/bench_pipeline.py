"""The whole pipeline on the real dump: kfp.local wall time, each step's share, and kfp.local's overhead.

(a) ``pipelines.local.run_local`` with ``source=file:<real dump>`` (23,742 vacancies), the
    default candidates, deploy rendered into the store: what ``make run SOURCE=file:...``
    does. Step times come from kfp.local's own "Executing task" / "finished" log lines.
(b) The same component functions called directly, in order, in one fresh process (their
    ``python_func``, with artifacts in a temporary folder): the same core work without
    kfp.local's subprocesses, executor inputs and artifact copies.

Prints each step's seconds and share of (a), and (a)/(b) per step and in total.

``make bench BENCH="pipeline --compare"`` measures instead what the XGBoost candidates cost:
(c) the whole pipeline's work (the component functions called directly, each run in a fresh
process and a fresh store, the gate, refit, publish and deploy included) with the default
candidates and with the logistic-regression candidates alone, in interleaved rounds (A B B A
...), and the ratio of their medians; ``--local`` adds (d), the same pair through kfp.local
(``make run SOURCE=file:...`` in a fresh store), also interleaved. ``--rounds N`` (default 2)
rounds of each.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import measured, real_data_or_skip

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"^Executing task '([^']+)'")
_END = re.compile(r"^Task '([^']+)' finished with status")


class _StepClock(logging.Filter):
    """Times kfp.local's tasks from its log records (it logs through the root logger).

    kfp.local runs a ParallelFor's iterations at the same time, under one task name, so
    starts and finishes are paired first-in first-out, and a step's ``span`` (first start
    to last finish) can be shorter than its ``busy`` time (the sum over its tasks).
    """

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, list[float]] = defaultdict(list)
        self.intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = _ANSI.sub("", str(record.msg))
        if m := _START.match(msg):
            self.started[m.group(1)].append(time.perf_counter())
        elif (m := _END.match(msg)) and self.started.get(m.group(1)):
            start = self.started[m.group(1)].pop(0)
            self.intervals[LOCAL_NAMES.get(m.group(1), m.group(1))].append((start, time.perf_counter()))
        return True

    def steps(self) -> dict[str, tuple[float, float, int]]:
        """name -> (span, busy seconds, tasks)."""
        return {
            name: (max(e for _, e in iv) - min(s for s, _ in iv), sum(e - s for s, e in iv), len(iv))
            for name, iv in self.intervals.items()
        }


# kfp.local names the two ParallelFor loops' tasks train-candidate and train-candidate-2
LOCAL_NAMES = {"train-candidate": "train (xgboost loop)", "train-candidate-2": "train (linear loop)"}


def _kfp_local(dump: Path, root: Path, **params: Any) -> tuple[float, dict[str, tuple[float, float, int]]]:
    from pipelines.local import run_local

    clock = _StepClock()
    logging.getLogger().addFilter(clock)
    try:
        start = time.perf_counter()
        run_local(str(root / "store"), pipeline_root=str(root / "kfp-local"), source=f"file:{dump}", **params)
        total = time.perf_counter() - start
    finally:
        logging.getLogger().removeFilter(clock)
    return total, clock.steps()


def _artifact(cls: Any, path: Path) -> Any:
    art = cls(name=path.name, uri=str(path), metadata={})
    art.path = str(path)
    return art


def _direct(dump: Path, root: Path, candidates: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Every component function in pipeline order, in this process; seconds per step
    (``candidates``: the candidate dicts to train, default the packaged ones)."""
    from components.build_dataset import build_dataset
    from components.collect_vacancies import collect_vacancies
    from components.deploy_model import deploy_model
    from components.evaluate_candidates import evaluate_candidates
    from components.featurize import featurize
    from components.publish_model import publish_model
    from components.refit_winners import refit_winners
    from components.select_winner import select_winner
    from components.train_baseline import train_baseline
    from components.train_candidate import train_candidate
    from components.validate_vacancies import validate_vacancies
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
    from pipelines.hhpulse_pipeline import LINEAR_CANDIDATES, XGB_CANDIDATES

    cands = XGB_CANDIDATES + LINEAR_CANDIDATES if candidates is None else candidates

    store, art = str(root / "store"), root / "artifacts"
    art.mkdir(parents=True)
    steps: dict[str, float] = defaultdict(float)

    def step(name: str, fn: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        out = fn.python_func(**kw)
        steps[name] += time.perf_counter() - start
        return out

    common = {"store": store, "s3_endpoint": ""}
    raw = _artifact(Dataset, art / "raw.jsonl.gz")
    run_id = step(
        "collect-vacancies",
        collect_vacancies,
        **common,
        source=f"file:{dump}",
        queries=[],
        area="",
        contact="bench@example.com",
        demo_size=150,
        raw_run=raw,
    )
    step(
        "validate-vacancies",
        validate_vacancies,
        **common,
        run_id=run_id,
        max_bad_fraction=0.2,
        report=_artifact(Markdown, art / "report.md"),
    )
    ds = _artifact(Dataset, art / "dataset")
    step("build-dataset", build_dataset, **common, random_split=False, dataset=ds)
    feats = _artifact(Dataset, art / "features")
    step("featurize", featurize, dataset=ds, features=feats)
    xgb, lin = [], []
    for i, cand in enumerate(cands):
        model = _artifact(Model, art / f"model-{i}")
        device = "auto" if cand["kind"] == "xgboost" else "cpu"
        loop = "train (xgboost loop)" if cand["kind"] == "xgboost" else "train (linear loop)"
        step(loop, train_candidate, features=feats, candidate=cand, device=device, model=model)
        (xgb if cand["kind"] == "xgboost" else lin).append(model)
    base = []
    for task in ("salary", "demand"):
        model = _artifact(Model, art / f"baseline-{task}")
        step("train-baseline", train_baseline, features=feats, task=task, model=model)
        base.append(model)
    results = _artifact(Artifact, art / "results" / "results.json")
    report = _artifact(HTML, art / "report.html")
    step(
        "evaluate-candidates",
        evaluate_candidates,
        **common,
        dataset=ds,
        features=feats,
        xgb_models=xgb,
        linear_models=lin,
        baseline_models=base,
        primary_metric="roc_auc_ovo",
        metrics=_artifact(Metrics, art / "metrics.json"),
        salary_metrics=_artifact(ClassificationMetrics, art / "salary.json"),
        demand_metrics=_artifact(ClassificationMetrics, art / "demand.json"),
        report=report,
        results=results,
        top_terms=_artifact(Markdown, art / "top_terms.md"),
    )
    bundle = _artifact(Model, art / "bundle")
    wins = step(
        "select-winner",
        select_winner,
        **common,
        dataset=ds,
        features=feats,
        results=results,
        report=report,
        xgb_models=xgb,
        linear_models=lin,
        baseline_models=base,
        margin=0.0,
        primary_metric="roc_auc_ovo",
        bundle=bundle,
    )
    if wins:
        refit = _artifact(Model, art / "refit")
        step(
            "refit-winners", refit_winners, **common, dataset=ds, heldout=bundle, device="auto", bundle=refit
        )
        uri = step("publish-model", publish_model, **common, bundle=refit)
        step(
            "deploy-model",
            deploy_model,
            **common,
            bundle=refit,
            model_uri=uri,
            mode="render",
            namespace="hhpulse",
            service_name="hhpulse",
            serving_image="hhpulse-serving:bench",
            service_account="hhpulse-predictor",
            canary_traffic_percent=0,
            timeout_seconds=60,
        )
    steps["winners"] = json.loads((Path(bundle.path) / "bundle.json").read_text())["tasks"]  # type: ignore[assignment]
    return dict(steps)


def _seconds(steps: dict[str, Any]) -> float:
    return sum(v for k, v in steps.items() if k != "winners")


def compare(dump: Path, rounds: int, local: bool) -> None:
    """(c), and with ``local`` (d): the default candidates against the linear ones alone."""
    from pipelines.hhpulse_pipeline import LINEAR_CANDIDATES

    configs: dict[str, list[dict[str, Any]] | None] = {"default": None, "linear only": LINEAR_CANDIDATES}
    names = list(configs)
    order = [names[(r + i) % 2] for r in range(rounds) for i in (0, 1)]  # A B B A ...
    print(
        f"(c) the pipeline's work, direct calls, fresh process and store per run; rounds: {' '.join(order)}",
        flush=True,
    )
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-compare-") as tmp:
        for i, name in enumerate(order):
            steps, secs, _, _ = measured(
                lambda name=name, i=i: _direct(dump, Path(tmp) / f"{i}", configs[name])
            )
            if steps is None:
                raise RuntimeError(f"the {name} run failed")
            runs[name].append((secs, steps))
            wins = ", ".join(f"{t} {w['winner']}" for t, w in steps["winners"].items())
            print(f"    round {i + 1}: {name:<12} {secs:7.1f}s  (winners: {wins})", flush=True)
    med = {n: float(np.median([s for s, _ in runs[n]])) for n in names}
    steps_all = sorted({k for n in names for _, st in runs[n] for k in st if k != "winners"})
    print(f"\n    {'step (median s)':<28}" + "".join(f"{n:>14}" for n in names))
    for k in steps_all:
        print(
            f"    {k:<28}"
            + "".join(f"{np.median([st.get(k, 0.0) for _, st in runs[n]]):14.1f}" for n in names)
        )
    print(f"    {'whole run':<28}" + "".join(f"{med[n]:14.1f}" for n in names))
    ratio = med["default"] / med["linear only"]
    print(
        f"    default / linear only = {ratio:.2f}x (goal <= 1.5x); load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if not local:
        return
    print(
        f"\n(d) kfp.local (make run SOURCE=file:...), fresh store per run; rounds: {' '.join(order)}",
        flush=True,
    )
    walls: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-compare-local-") as tmp:
        for i, name in enumerate(order):
            params = (
                {} if configs[name] is None else {"xgb_candidates": [], "linear_candidates": configs[name]}
            )
            total, steps = _kfp_local(dump, Path(tmp) / f"{i}", **params)
            walls[name].append(total)
            slow = ", ".join(
                f"{k} {b:.0f}s" for k, (_, b, _) in sorted(steps.items(), key=lambda kv: -kv[1][1])[:3]
            )
            print(f"    round {i + 1}: {name:<12} {total:7.1f}s  (slowest: {slow})", flush=True)
    lmed = {n: float(np.median(walls[n])) for n in names}
    print(
        f"    median: default {lmed['default']:.1f}s, linear only {lmed['linear only']:.1f}s -> "
        f"{lmed['default'] / lmed['linear only']:.2f}x (goal <= 1.5x); load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="bench_pipeline")
    parser.add_argument("--compare", action="store_true", help="(c): default candidates against linear only")
    parser.add_argument(
        "--local", action="store_true", help="with --compare, (d): the same through kfp.local"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each, interleaved [%(default)s]")
    args = parser.parse_args(argv or [])
    dump = real_data_or_skip()
    if dump is None:
        return
    if args.compare:
        compare(dump, args.rounds, args.local)
        return
    _whole(dump)


def _whole(dump: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hhpulse-bench-pipeline-") as tmp:
        os.environ.setdefault("TMPDIR", tmp)
        print(f"(a) kfp.local, whole pipeline on {dump.name} (default candidates, CPU) ...", flush=True)
        total, local_steps = _kfp_local(dump, Path(tmp) / "local")
        print("(b) the same component functions called directly ...", flush=True)
        direct_steps, direct_total, _, _ = measured(lambda: _direct(dump, Path(tmp) / "direct"))
    print(
        f"\n{'step':<24}{'tasks':>6}{'kfp.local span':>16}{'share':>7}{'busy':>9}{'direct':>9}{'busy/direct':>13}"
    )
    for name, (span, busy, n) in sorted(local_steps.items(), key=lambda kv: -kv[1][0]):
        d = direct_steps.get(name)
        ratio = f"{busy / d:12.2f}x" if d else "           -"
        direct = f"{d:8.1f}s" if d else "        -"
        print(f"{name:<24}{n:>6}{span:15.1f}s{span / total:7.0%}{busy:8.1f}s{direct}{ratio}")
    busy_all = sum(b for _, b, _ in local_steps.values())
    direct_all = sum(direct_steps.values())
    print(
        f"\nwhole run on {dump.name}: kfp.local {total:.1f}s wall; the direct calls {direct_total:.1f}s "
        f"-> kfp.local / direct = {total / direct_total:.2f}x"
    )
    extra = sorted((b - direct_steps[k]) / n for k, (_, b, n) in local_steps.items() if k in direct_steps)
    print(
        f"same work, task by task: kfp.local busy {busy_all:.1f}s / direct {direct_all:.1f}s = "
        f"{busy_all / direct_all:.2f}x; median cost kfp.local adds per task {extra[len(extra) // 2]:.1f}s "
        "(a fresh Python process, imports, executor input and artifact files)"
    )


if __name__ == "__main__":
    main()
