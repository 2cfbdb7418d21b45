"""Run the pipeline on this machine with kfp.local: the embedded default behind ``make run``."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_local(store: str, *, pipeline_root: str | None = None, **params: Any) -> dict[str, Any]:
    """Run every step locally (SubprocessRunner without a venv, so our package imports).

    The store is a local folder (or s3:// with an endpoint); deploy renders the
    InferenceService into the store instead of applying it.
    """
    from kfp import local

    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    store = str(Path(store).resolve()) if "://" not in store else store
    root = pipeline_root or os.path.join(
        os.path.dirname(store) if "://" not in store else ".hhpulse", "kfp-local"
    )
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
    # one candidate at a time: parallel XGBoost processes on one machine oversubscribe its cores
    pipeline = build_pipeline(ClusterOptions(use_gpu=False, parallelism=1))
    defaults = {
        "s3_endpoint": "",
        "source": "demo",
        "queries": [],
        "area": "",
        "deploy_mode": "render",
        "device": "auto",
    }
    args = {**defaults, **{k: v for k, v in params.items() if v is not None}, "store": store}
    start = time.perf_counter()
    task = pipeline(**args)
    return {"seconds": time.perf_counter() - start, "task": task, "store": store, "pipeline_root": root}
