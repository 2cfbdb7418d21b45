"""The training dataset: labelled history rows and a time-ordered split.

The split orders rows by ``collected_at`` then ``published_at``, so validation and test
sets are the newest data, as in production. A random split is an option, not the default.
Demand labelled with the age proxy is ordered by ``collected_at`` then a fixed hash of the
id, because the proxy is computed from ``published_at`` (see :func:`time_split`).

On disk (:meth:`Dataset.save`) a dataset is a folder: ``<task>.parquet`` per task
(columns :data:`TASK_COLUMNS`) and ``dataset.json`` (classes, split boundaries, the label
summary), written last, so a folder without it is an unfinished write.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hhpulse.config import LabelConfig, SplitConfig
from hhpulse.labels import build_labels
from hhpulse.store import atomic_write_bytes

TASKS = ("salary", "demand")
TEXT_COLUMNS = ("id", "responsibility", "name", "requirement")
# Columns of each task's frame; ``salary_rub`` only in the salary task.
TASK_COLUMNS = (*TEXT_COLUMNS, "label", "part", "collected_at", "published_at")
PARTS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset cannot be built (too few labelled rows) or loaded (missing/broken files)."""


@dataclass
class Split:
    """Positional row indices of each part, and what the split looked like."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    # method, sizes, and [min, max] of collected_at / published_at per part
    boundaries: dict[str, Any] = field(default_factory=dict)


def time_split(df: pd.DataFrame, config: SplitConfig, *, then_by: str = "published_at") -> Split:
    """Positional indices of train/val/test (newest last), with the recorded boundaries.

    Rows are ordered by ``collected_at``, then by ``then_by``: ``published_at`` (the
    default), or ``id_hash``, a fixed pseudo-random order for labels that are themselves
    a function of ``published_at`` (the demand proxy, age at collection): ordering by it
    would make the test set the youngest vacancies only, all of one cohort.
    """
    n = len(df)
    if n < 3:
        raise DatasetError(f"need at least 3 labelled rows to split, got {n}")
    if then_by not in ("published_at", "id_hash"):
        raise ValueError(f"then_by must be published_at or id_hash, got {then_by!r}")
    if config.random:
        order = np.random.default_rng(config.seed).permutation(n)
    else:
        second = (
            df["published_at"].values
            if then_by == "published_at"
            else pd.util.hash_pandas_object(df["id"].astype(str), index=False).to_numpy()
        )
        keys = pd.DataFrame({"c": df["collected_at"].values, "p": second, "i": np.arange(n)})
        order = keys.sort_values(["c", "p", "i"], kind="stable", na_position="first")["i"].to_numpy()
    n_test = max(1, int(round(n * config.test_fraction)))
    n_val = max(1, int(round(n * config.val_fraction)))
    train, val, test = (
        order[: n - n_val - n_test],
        order[n - n_val - n_test : n - n_test],
        order[n - n_test :],
    )
    method = "random" if config.random else f"time (collected_at, then {then_by})"
    bounds: dict[str, Any] = {"method": method, "sizes": {}}
    for name, idx in (("train", train), ("val", val), ("test", test)):
        part = df.iloc[idx]
        bounds["sizes"][name] = len(idx)
        for col in ("collected_at", "published_at"):
            s = part[col].dropna()
            bounds[f"{name}_{col}"] = [str(s.min()), str(s.max())] if len(s) else [None, None]
    return Split(train, val, test, bounds)


@dataclass
class TaskData:
    """One task's labelled rows (text columns + label + split part)."""

    task: str
    classes: list[str]
    frame: pd.DataFrame  # columns: id, responsibility, name, requirement, label, part
    boundaries: dict[str, Any]

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["part"] == name]


@dataclass
class Dataset:
    tasks: dict[str, TaskData]
    summary: dict[str, Any]

    def save(self, folder: str | Path) -> None:
        """Write each task's parquet, then ``dataset.json`` (every file atomically)."""
        folder = Path(folder)
        for task, td in self.tasks.items():
            buf = io.BytesIO()
            td.frame.to_parquet(buf, index=False)
            atomic_write_bytes(folder / f"{task}.parquet", buf.getvalue())
        meta = {
            "summary": self.summary,
            "tasks": {
                t: {"classes": td.classes, "boundaries": td.boundaries} for t, td in self.tasks.items()
            },
        }
        atomic_write_bytes(
            folder / "dataset.json", json.dumps(meta, ensure_ascii=False, indent=2, default=str).encode()
        )

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{folder}: not a saved dataset ({exc})") from exc
        tasks = {}
        for t, m in meta["tasks"].items():
            try:
                frame = pd.read_parquet(folder / f"{t}.parquet")
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{folder}/{t}.parquet: {exc}") from exc
            missing = sorted(set(TASK_COLUMNS) - set(frame.columns))
            if missing:
                raise DatasetError(f"{folder}/{t}.parquet: missing columns {missing}")
            tasks[t] = TaskData(t, list(m["classes"]), frame, m["boundaries"])
        return cls(tasks, meta["summary"])


def build_dataset(
    history: pd.DataFrame,
    rates_by_run: Mapping[str, Mapping[str, float]],
    label_config: LabelConfig | None = None,
    split_config: SplitConfig | None = None,
) -> Dataset:
    """Labels for both tasks and a split for each; rows without text or label are left out.

    Each task is split on its own labelled rows (the salary rows are a subset of the
    history, the demand rows another), both time-ordered unless ``split_config.random``.
    """
    label_config = label_config or LabelConfig()
    split_config = split_config or SplitConfig()
    labeled = build_labels(history, rates_by_run, label_config)
    frame = labeled.frame
    has_text = frame["responsibility"].fillna("").str.strip().astype(bool)
    tasks = {}
    for task, classes in (("salary", label_config.salary_cohorts), ("demand", label_config.demand_cohorts)):
        rows = frame[has_text & frame[f"{task}_cohort"].notna()].reset_index(drop=True)
        if len(rows) < 3:
            raise DatasetError(
                f"only {len(rows)} rows have text and a {task} label: collect more data first"
                f" (labels: {labeled.summary.get(f'{task}_counts')}; left out: "
                f"{labeled.summary.get('salary_left_out') if task == 'salary' else labeled.summary.get('demand_sources')})"
            )
        proxy = task == "demand" and bool(labeled.summary.get("demand_proxy"))
        split = time_split(rows, split_config, then_by="id_hash" if proxy else "published_at")
        part = np.empty(len(rows), dtype=object)
        part[split.train], part[split.val], part[split.test] = "train", "val", "test"
        out = rows[list(TEXT_COLUMNS)].copy()
        out["label"] = rows[f"{task}_cohort"].astype(str)
        out["part"] = part
        out["collected_at"] = rows["collected_at"]
        out["published_at"] = rows["published_at"]
        if task == "salary":
            out["salary_rub"] = rows["salary_rub"]
        tasks[task] = TaskData(task, list(classes), out, split.boundaries)
    summary = dict(labeled.summary)
    summary["runs"] = sorted(set(history.get("last_run_id", pd.Series(dtype=str)).dropna()))
    summary["split"] = split_config.to_dict()
    return Dataset(tasks, summary)
