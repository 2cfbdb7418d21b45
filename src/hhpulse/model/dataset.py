"""The training dataset: labelled history rows and a time-ordered split.

The salary split orders rows by their first sighting (``first_seen``, then
``first_published_at``; for a single dump, ``collected_at`` then ``published_at``), so
validation and test sets are the newest vacancies, as in production. A random split is an option, not
the default. Demand labelled with the age proxy is ordered by ``collected_at`` then a
fixed hash of the id, because the proxy is computed from ``published_at`` (see
:func:`time_split`).

Resolved demand labels (closes and censoring) are split by :func:`demand_split`, on the
vacancy's start (its publication), newest last, within the **settled** window: vacancies
that opened at least ``demand_low_days`` before the last observation, whose labels are all
resolved whatever their cohort. Younger vacancies are labelled only when they closed
fast, so a test set of "the newest labelled rows" would hold high and medium only (and a
test set by collection time, low only); they are kept out of every part (``pending``)
until they settle. In the first weeks of a schedule the settled window may not hold
every cohort the labels hold; the split then takes each cohort's newest rows (and says
so in the method, the boundaries and a WARNING). A cohort missing from a test set is
recorded in ``boundaries["missing_test_cohorts"]`` and logged, never silent.

Each task's rows also carry the vacancy's structured fields (:func:`structured_columns`),
those the task's models may read (:func:`hhpulse.model.inputs.task_fields`): the salary
rows never carry ``salary_stated``.

On disk (:meth:`Dataset.save`) a dataset is a folder: ``<task>.parquet`` per task
(columns :data:`TASK_COLUMNS`, and the structured fields) and ``dataset.json`` (classes,
split boundaries, the label summary), written last, so a folder without it is an unfinished
write.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hhpulse.config import LabelConfig, SplitConfig
from hhpulse.data.store import atomic_write_bytes
from hhpulse.model.inputs import INPUT_FIELDS, STRUCTURED_FIELDS, STRUCTURED_NAMES, task_fields
from hhpulse.model.labels import build_labels

TASKS = ("salary", "demand")
TEXT_COLUMNS = ("id", "responsibility", "name", "requirement")
# Columns of each task's frame; ``salary_rub`` only in the salary task.
TASK_COLUMNS = (*TEXT_COLUMNS, "label", "part", "collected_at", "published_at")
PARTS = ("train", "val", "test")
PENDING = "pending"  # labelled demand rows too young for an unbiased test set (see demand_split)

log = logging.getLogger(__name__)


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


def _describe(df: pd.DataFrame, split: Split, time_cols: tuple[str, ...]) -> None:
    bounds = split.boundaries
    bounds.setdefault("sizes", {})
    for name, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        part = df.iloc[idx]
        bounds["sizes"][name] = len(idx)
        for col in time_cols:
            s = part[col].dropna()
            bounds[f"{name}_{col}"] = [str(s.min()), str(s.max())] if len(s) else [None, None]


def _cut(order: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The newest ``test_fraction`` of ``order`` for test, the ``val_fraction`` before it for val."""
    n = len(order)
    n_test = max(1, int(round(n * config.test_fraction))) if n >= 1 else 0
    n_val = max(1, int(round(n * config.val_fraction))) if n >= 2 else 0
    n_val = min(n_val, n - n_test)
    return order[: n - n_val - n_test], order[n - n_val - n_test : n - n_test], order[n - n_test :]


def demand_split(
    df: pd.DataFrame, config: SplitConfig, *, observed_until: pd.Timestamp | None, low_days: float
) -> tuple[Split, np.ndarray]:
    """(split, pending) of resolved demand rows: columns ``id``, ``label``, ``demand_start``.

    The settled rows (``demand_start`` at least ``low_days`` before ``observed_until``)
    are ordered by start, then id, and the newest are the test set. When they do not
    hold every cohort the rows hold (the first weeks of a schedule), every cohort's rows
    are split alone, newest to test. ``pending`` are the positions of the rows left out.
    """
    n = len(df)
    if n < 3:
        raise DatasetError(f"need at least 3 labelled rows to split, got {n}")
    start = pd.to_datetime(df["demand_start"], utc=True)
    keys = pd.DataFrame({"s": start.values, "id": df["id"].astype(str).values, "i": np.arange(n)})
    keys = keys.sort_values(["s", "id", "i"], kind="stable", na_position="first")
    horizon = None if observed_until is None else observed_until - pd.Timedelta(days=low_days)
    settled_mask = np.ones(n, dtype=bool) if horizon is None else (start <= horizon).to_numpy()
    labels = df["label"].astype(str).to_numpy()
    held = sorted(set(labels))
    settled_order = keys["i"].to_numpy()[settled_mask[keys["i"].to_numpy()]]
    settled_cohorts = set(labels[settled_order])
    bounds: dict[str, Any] = {
        "settled_until": None if horizon is None else str(horizon),
        "observed_until": None if observed_until is None else str(observed_until),
    }
    if settled_cohorts == set(held) and len(settled_order) >= 3:
        train, val, test = _cut(settled_order, config)
        pending = keys["i"].to_numpy()[~settled_mask[keys["i"].to_numpy()]]
        bounds["method"] = "time (demand start: publication), settled rows only"
        if len(set(labels[test])) < len(held):  # a small test window: fall back per cohort
            train, val, test, pending = (*_per_cohort(keys, labels, held, config), np.array([], dtype=int))
            bounds["method"] = "time per cohort (the settled window's test set lacked a cohort)"
    else:
        train, val, test = _per_cohort(keys, labels, held, config)
        pending = np.array([], dtype=int)
        bounds["method"] = "time per cohort (the settled window does not hold every cohort yet)"
        log.warning(
            "demand split: the vacancies that opened %g+ days before the last run (settled) hold cohorts %s of %s; "
            "each cohort's newest rows are its test set, so the test mix follows the labels' mix, which "
            "favours fast closes until %g days have been observed",
            low_days,
            sorted(settled_cohorts),
            held,
            low_days,
        )
    bounds["pending"] = len(pending)
    split = Split(train, val, test, bounds)
    frame = df.assign(demand_start=start)
    _describe(frame, split, ("demand_start",))
    return split, pending


def _per_cohort(
    keys: pd.DataFrame, labels: np.ndarray, held: list[str], config: SplitConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts: list[list[np.ndarray]] = [[], [], []]
    ordered = keys["i"].to_numpy()
    for cohort in held:
        for k, idx in enumerate(_cut(ordered[labels[ordered] == cohort], config)):
            parts[k].append(idx)
    train, val, test = (np.concatenate(p) if p else np.array([], dtype=int) for p in parts)
    return train, val, test


def _column(history: pd.DataFrame, name: str) -> pd.Series:
    return (
        history[name]
        if name in history
        else pd.Series([None] * len(history), index=history.index, dtype=object)
    )


def structured_columns(history: pd.DataFrame, task: str) -> pd.DataFrame:
    """The structured fields of history rows that ``task``'s models may read, named as in an
    instance (:data:`hhpulse.model.inputs.STRUCTURED_FIELDS`): ``area`` is the area's name,
    ``employer`` its id (its name where a dump kept no id), ``professional_roles`` the ids
    joined by ``|`` (None when there is none); None where missing (a history folded before a
    field was parsed has it missing)."""
    employer = _column(history, "employer_id")
    employer = employer.where(employer.notna(), _column(history, "employer_name"))
    roles = _column(history, "professional_roles")
    salary_stated = _column(history, "salary_from").notna() | _column(history, "salary_to").notna()
    every = {
        "experience": _column(history, "experience"),
        "schedule": _column(history, "schedule"),
        "employment": _column(history, "employment"),
        "area": _column(history, "area_name"),
        "employer": employer,
        "professional_roles": roles.where(roles.astype(str).str.len() > 0, None),
        "key_skills_count": _column(history, "key_skills_count"),
        "has_test": _column(history, "has_test"),
        "response_letter_required": _column(history, "response_letter_required"),
        "salary_stated": salary_stated,
    }
    return structured_dtypes(
        pd.DataFrame({f.name: every[f.name] for f in task_fields(task)}, index=history.index)
    )


def structured_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The structured columns' dtypes, the same built or read back from parquet: flags
    nullable ``boolean``, counts ``float64``, the rest Python objects with None."""
    kinds = {f.name: f.kind for f in STRUCTURED_FIELDS}
    out = frame.copy()
    for c in out.columns:
        if c not in kinds:
            continue
        s = out[c]
        if kinds[c] == "flag":
            out[c] = s.astype(object).where(s.notna(), None).astype("boolean")
        elif kinds[c] == "count":
            out[c] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            s = s.astype(object)
            out[c] = s.where(s.notna(), None)
    return out


def instance_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns of dataset rows that a model reads: the text fields and the structured
    fields the rows carry (one instance's fields per row, as :meth:`Instance.as_dict` gives)."""
    return rows[[c for c in (*INPUT_FIELDS, *STRUCTURED_NAMES) if c in rows]].reset_index(drop=True)


def instances(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Dataset rows as instances (dicts) for :meth:`hhpulse.model.bundle.ModelBundle.predict_proba`."""
    frame = instance_frame(rows)
    return [
        {
            k: (None if _absent(v) else (v.split("|") if k == "professional_roles" else v))
            for k, v in r.items()
        }
        for r in frame.to_dict("records")
    ]


def _absent(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def sighting_time(frame: pd.DataFrame) -> pd.Series:
    """Each row's first sighting (``first_seen``, else ``collected_at``), UTC: the time
    :func:`time_order` orders rows by first."""
    return pd.to_datetime(frame["first_seen"] if "first_seen" in frame else frame["collected_at"], utc=True)


def time_order(frame: pd.DataFrame) -> np.ndarray:
    """Each row's rank in time (0: oldest): by first sighting (:func:`sighting_time`), then
    ``published_at``, then id; rows without a time sort first."""
    n = len(frame)
    keys = pd.DataFrame(
        {
            "c": sighting_time(frame).to_numpy(),
            "p": pd.to_datetime(frame["published_at"], utc=True).to_numpy(),
            "id": frame["id"].astype(str).to_numpy(),
            "i": np.arange(n),
        }
    )
    order = keys.sort_values(["c", "p", "id", "i"], kind="stable", na_position="first")["i"].to_numpy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def cohort_mix(frame: pd.DataFrame, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """{part: {cohort: rows}} for every part present (zeros included, so a gap shows)."""
    out = {}
    for part in (*PARTS, PENDING):
        labels = frame.loc[frame["part"] == part, "label"]
        if part == PENDING and labels.empty:
            continue
        counts = labels.value_counts()
        out[part] = {c: int(counts.get(c, 0)) for c in classes}
    return out


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
            tasks[t] = TaskData(t, list(m["classes"]), structured_dtypes(frame), m["boundaries"])
        return cls(tasks, meta["summary"])


def _first_sighting(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows keyed for the time split by their first sighting (``first_seen``, then
    ``first_published_at``) where history has them.

    A vacancy still open is re-collected, and often re-published, on every run, so its
    latest ``collected_at``/``published_at`` keep moving: a split on them put vacancies that
    yesterday's champion was trained on into today's test set (more than half of the salary
    test set after three daily runs), and the gate then favoured the champion. For a single
    dump the first sighting is the only one, so the split is the same as before.
    """
    if "first_seen" not in rows or "first_published_at" not in rows:
        return rows
    return rows.assign(collected_at=rows["first_seen"], published_at=rows["first_published_at"])


def label_sources(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per task, where the labels came from and how many (replay, gate verdict, run summary)."""
    res = summary.get("demand_resolution", {})
    return {
        "salary": {
            "sources": {"stated_salary": int(sum(summary.get("salary_counts", {}).values()))},
            "left_out": dict(summary.get("salary_left_out", {})),
        },
        "demand": {
            "sources": dict(summary.get("demand_sources", {})),
            "proxy": bool(summary.get("demand_proxy")),
            "proxy_reason": summary.get("demand_proxy_reason"),
            "unresolved": dict(res.get("unresolved", {})),
            "uncertain_share": res.get("uncertain_share"),
        },
    }


def _counts_text(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def label_lines(summary: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per task, where the labels came from, in plain sentences with counts: the ONE text the
    report, the model card and ``hhpulse run``'s summary all show (so they cannot disagree)."""
    lab = label_sources(summary)
    sal, dem = lab["salary"], lab["demand"]
    res = summary.get("demand_resolution", {})
    salary = [
        f"labels from the stated salary: {_counts_text(summary.get('salary_counts', {}))}; "
        f"left out (no usable salary): {_counts_text(sal['left_out'])}",
    ]
    demand = [
        f"labels: {_counts_text(summary.get('demand_counts', {}))} (sources: {_counts_text(dem['sources'])})",
    ]
    if dem["proxy"]:
        demand.append(
            "AGE PROXY: demand was learned from age at collection (collected_at - published_at), "
            f"not time-to-close, because {dem['proxy_reason'] or 'the resolved labels made no measurable task'}"
        )
    if dem["unresolved"]:
        demand.append(f"unresolved (no label yet, left out): {_counts_text(dem['unresolved'])}")
    if res.get("uncertain"):
        demand.append(
            f"{res['uncertain']} labels ({100 * (res.get('uncertain_share') or 0):.1f}%) have a close time "
            "whose uncertainty straddles a cohort edge (the runs' cadence sets it)"
        )
    return {"salary": salary, "demand": demand}


def young_level(summary: Mapping[str, Any], boundaries: Mapping[str, Any]) -> int:
    """How young a dataset's history is for demand: 2 on the age proxy, 1 while the settled
    window lacks a cohort (:func:`young_history`), 0 once it does not."""
    if summary.get("demand_proxy"):
        return 2
    return 1 if young_history(summary, boundaries) else 0


def resolved_labels(summary: Mapping[str, Any]) -> int:
    """How many demand labels a dataset learned from (0 on the age proxy, whose labels are not
    outcomes): the gate's measure of how much history a model has seen."""
    if summary.get("demand_proxy"):
        return 0
    return int(sum((summary.get("demand_counts") or {}).values()))


def young_history(summary: Mapping[str, Any], boundaries: Mapping[str, Any]) -> str | None:
    """Why a dataset's demand figures come from a **young history**, or None when they do not:
    demand on the age proxy, or a settled window (vacancies that opened ``low_days``+ days
    before the last run) that did not hold every cohort, so each cohort's newest rows were its
    test set. Such a test set holds the fast closes and the censored lows, the easy rows; its
    AUC overstates what the model does on every vacancy it serves (the replay measured held-out
    figures of 0.85 and more against live ones near 0.65). ``summary``/``boundaries``: a
    dataset's (or a bundle's ``metrics.json`` ``dataset``/``boundaries``)."""
    if summary.get("demand_proxy"):
        return "demand on the age proxy (too few resolved closes)"
    b = boundaries.get("demand") or {}
    if str(b.get("method") or "").startswith("time per cohort"):
        return (
            "the settled window did not hold every demand cohort: each cohort's newest rows were its "
            "test set (the fast closes and the censored lows), which overstates the figure"
        )
    if b.get("missing_cohorts"):
        return f"the demand labels held no {', '.join(b['missing_cohorts'])}"
    return None


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
    seen = (
        pd.to_datetime(history["last_seen"], utc=True) if "last_seen" in history else pd.Series(dtype=object)
    )
    observed_until = seen.max() if len(seen.dropna()) else None
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
        part = np.empty(len(rows), dtype=object)
        if task == "demand" and not proxy and not split_config.random:
            split, pending = demand_split(
                rows.assign(label=rows["demand_cohort"]),
                split_config,
                observed_until=observed_until,
                low_days=label_config.demand_low_days,
            )
            part[pending] = PENDING
        else:
            split = time_split(
                _first_sighting(rows), split_config, then_by="id_hash" if proxy else "published_at"
            )
            if not (proxy or split_config.random):
                split.boundaries["method"] = "time (first seen, then first published)"
        part[split.train], part[split.val], part[split.test] = "train", "val", "test"
        out = rows[list(TEXT_COLUMNS)].copy()
        out["label"] = rows[f"{task}_cohort"].astype(str)
        out["part"] = part
        out["collected_at"] = rows["collected_at"]
        out["published_at"] = rows["published_at"]
        out = pd.concat([out, structured_columns(rows, task)], axis=1)
        if "first_seen" in rows:
            out["first_seen"] = rows["first_seen"]
        if task == "salary":
            out["salary_rub"] = rows["salary_rub"]
        else:
            for col in ("demand_source", "demand_start", "lifetime_days", "demand_uncertain"):
                out[col] = rows[col]
        mix = cohort_mix(out, classes)
        split.boundaries["cohorts"] = mix
        held = [c for c in classes if sum(m[c] for m in mix.values())]
        missing = [c for c in held if not mix["test"][c]]
        split.boundaries["missing_test_cohorts"] = missing
        split.boundaries["missing_cohorts"] = [c for c in classes if c not in held]
        if missing:
            log.warning(
                "%s: the test set holds no %s although the labels do: its AUC covers %s only",
                task,
                ", ".join(missing),
                ", ".join(c for c in held if c not in missing),
            )
        if split.boundaries["missing_cohorts"]:
            log.warning(
                "%s: the labels hold no %s at all", task, ", ".join(split.boundaries["missing_cohorts"])
            )
        tasks[task] = TaskData(task, list(classes), out, split.boundaries)
    summary = dict(labeled.summary)
    summary["runs"] = sorted(set(history.get("last_run_id", pd.Series(dtype=str)).dropna()))
    summary["split"] = split_config.to_dict()
    return Dataset(tasks, summary)
