"""The whole pipeline on the real dump: kfp.local wall time, each step's share, and kfp.local's overhead.

(a) ``pipelines.local.run_local`` with ``source=file:<real dump>`` (23,742 vacancies), the
    default candidates, deploy rendered into the store: what ``make run SOURCE=file:...``
    does. Step times come from kfp.local's own "Executing task" / "finished" log lines.
(b) The same component functions called directly, in order, in one fresh process (their
    ``python_func``, with artifacts in a temporary folder): the same core work without
    kfp.local's subprocesses, executor inputs and artifact copies.

Prints each step's seconds and share of (a), and (a)/(b) per step and in total.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

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


def _kfp_local(dump: Path, root: Path) -> tuple[float, dict[str, tuple[float, float, int]]]:
    from pipelines.local import run_local

    clock = _StepClock()
    logging.getLogger().addFilter(clock)
    try:
        start = time.perf_counter()
        run_local(str(root / "store"), pipeline_root=str(root / "kfp-local"), source=f"file:{dump}")
        total = time.perf_counter() - start
    finally:
        logging.getLogger().removeFilter(clock)
    return total, clock.steps()


def _artifact(cls: Any, path: Path) -> Any:
    art = cls(name=path.name, uri=str(path), metadata={})
    art.path = str(path)
    return art


def _direct(dump: Path, root: Path) -> dict[str, float]:
    """Every component function in pipeline order, in this process; seconds per step."""
    from components.build_dataset import build_dataset
    from components.collect_vacancies import collect_vacancies
    from components.deploy_model import deploy_model
    from components.evaluate_candidates import evaluate_candidates
    from components.featurize import featurize
    from components.publish_model import publish_model
    from components.select_winner import select_winner
    from components.train_baseline import train_baseline
    from components.train_candidate import train_candidate
    from components.validate_vacancies import validate_vacancies
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
    from pipelines.hhpulse_pipeline import LINEAR_CANDIDATES, XGB_CANDIDATES

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
    for i, cand in enumerate(XGB_CANDIDATES + LINEAR_CANDIDATES):
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
        report=_artifact(HTML, art / "report.html"),
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
        xgb_models=xgb,
        linear_models=lin,
        baseline_models=base,
        margin=0.0,
        primary_metric="roc_auc_ovo",
        bundle=bundle,
    )
    if wins:
        uri = step("publish-model", publish_model, **common, bundle=bundle)
        step(
            "deploy-model",
            deploy_model,
            **common,
            bundle=bundle,
            model_uri=uri,
            mode="render",
            namespace="hhpulse",
            service_name="hhpulse",
            serving_image="hhpulse-serving:bench",
            service_account="hhpulse-predictor",
            canary_traffic_percent=0,
            timeout_seconds=60,
        )
    return dict(steps)


def main() -> None:
    dump = real_data_or_skip()
    if dump is None:
        return
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
