"""Settings for labels, features, splits, training and monitoring: frozen dataclasses, one home.

Nothing is read at import time. Every config serialises with ``to_dict()`` and loads
with ``from_dict()``, and each model bundle stores the configs it was built with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# the training window: the open vacancies plus those closed in this many days before the newest run
# (here, not in history_store, so the CLI builds its parser without pyarrow: the serving image)
DEFAULT_WINDOW_DAYS = 180

T = TypeVar("T")

DEMAND_COHORTS = ("high", "medium", "low")
TASKS = ("salary", "demand")
TEXT_FIELDS = ("responsibility", "name", "requirement")

DEFAULT_API_URL = "https://api.hh.ru"  # hh.ru's API root (``--api-url``)
DEFAULT_SETTLE_SECONDS = 300  # the monitor leaves the newest seconds to its next run


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


def _check_type(cls_name: str, name: str, value: Any, default: Any) -> Any:
    """Values from YAML/JSON must have the type of the field's default (ints pass as floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):  # lists from YAML/JSON arrive here as tuples
        ok = isinstance(value, tuple)
    else:
        return value
    if not ok:
        raise ConfigError(
            f"{cls_name}.{name}: expected {type(default).__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            kwargs[f.name] = _check_type(cls.__name__, f.name, value, f.default)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a comparison of a wrong type in __post_init__
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


@dataclass(frozen=True)
class LabelConfig:
    """How salary and demand labels are made.

    Salary bands are closed-open ``[lower, upper)`` on monthly gross RUB.
    ``income_tax`` converts net to gross: ``gross = net / (1 - income_tax)``.
    Demand bands are on lifetime in days: ``high < demand_high_days <= medium <
    demand_low_days <= low``.
    """

    salary_bands: tuple[tuple[str, float, float], ...] = (
        ("lt_100k", 0.0, 100_000.0),
        ("100k_150k", 100_000.0, 150_000.0),
        ("150k_200k", 150_000.0, 200_000.0),
        ("ge_200k", 200_000.0, math.inf),
    )
    income_tax: float = 0.13
    gross_when_unknown: bool = True  # salary.gross missing: take the figure as gross
    min_monthly_rub: float = 10_000.0  # below: quarantined as absurd (hourly rates, typos)
    max_monthly_rub: float = 3_000_000.0  # above: quarantined as absurd (annual figures, typos)
    demand_high_days: float = 10.0
    demand_low_days: float = 20.0
    min_closed: int = 30  # fewer closed vacancies than this: demand falls back to the age proxy
    allow_demand_proxy: bool = True  # False: never use the age proxy (demand keeps only real closes)

    def __post_init__(self) -> None:
        if not 0 <= self.income_tax < 1:
            raise ConfigError(f"income_tax must be in [0, 1), got {self.income_tax}")
        if not 0 <= self.min_monthly_rub < self.max_monthly_rub:
            raise ConfigError("absurd-value bounds must satisfy 0 <= min_monthly_rub < max_monthly_rub")
        if self.min_closed < 0:
            raise ConfigError(f"min_closed must be >= 0, got {self.min_closed}")
        if not self.salary_bands:
            raise ConfigError("salary_bands must not be empty")
        names = [b[0] for b in self.salary_bands]
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"salary band names must be unique non-empty strings, got {names}")
        edges = [(lo, hi) for _, lo, hi in self.salary_bands]
        for (lo, hi), (nlo, _) in zip(edges, edges[1:] + [(math.inf, math.inf)], strict=True):
            if not lo < hi or (nlo != math.inf and nlo != hi):
                raise ConfigError(f"salary bands must be contiguous and closed-open, got {self.salary_bands}")
        if not 0 < self.demand_high_days < self.demand_low_days:
            raise ConfigError("demand thresholds must satisfy 0 < high_days < low_days")

    @property
    def salary_cohorts(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.salary_bands)

    @property
    def demand_cohorts(self) -> tuple[str, ...]:
        return DEMAND_COHORTS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["salary_bands"] = [[n, lo, None if math.isinf(hi) else hi] for n, lo, hi in self.salary_bands]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"LabelConfig: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        if "salary_bands" in data:
            bands = data["salary_bands"]
            try:
                data["salary_bands"] = [
                    [n, float(lo), math.inf if hi is None else float(hi)] for n, lo, hi in bands
                ]
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"LabelConfig.salary_bands: expected [[name, lower, upper or null], ...], got {bands!r}"
                ) from exc
        return _from_dict(cls, data)


@dataclass(frozen=True)
class FeatureConfig:
    """The text vectorizer: TF-IDF over razdel tokens, one vocabulary per field."""

    fields: tuple[str, ...] = ("responsibility", "name", "requirement")
    ngram_max: int = 2
    min_df: int = 2
    max_features: tuple[tuple[str, int], ...] = (
        ("responsibility", 30000),
        ("name", 5000),
        ("requirement", 20000),
    )
    sublinear_tf: bool = True
    field_dropout: bool = True  # also train on responsibility alone, so either input works

    def __post_init__(self) -> None:
        if "responsibility" not in self.fields:
            raise ConfigError("the responsibility field is required")
        unknown = set(self.fields) - set(TEXT_FIELDS)
        if unknown:
            raise ConfigError(f"unknown text fields {sorted(unknown)}")
        if len(set(self.fields)) != len(self.fields):
            raise ConfigError(f"fields must be unique, got {list(self.fields)}")
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError("ngram_max and min_df must be at least 1")
        if any(n < 1 for _, n in self.max_features):
            raise ConfigError("max_features must be at least 1 per field")

    def max_features_for(self, name: str) -> int:
        return dict(self.max_features).get(name, 20000)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fields"] = list(self.fields)
        d["max_features"] = [list(x) for x in self.max_features]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SplitConfig:
    """Time-ordered split: the newest rows are the test set, as in production."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    random: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        if not (
            0 < self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError("val_fraction and test_fraction must be in (0, 1) and sum below 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class CandidateConfig:
    """One model candidate for one task (``salary`` or ``demand``)."""

    name: str
    task: str
    kind: str  # "xgboost" | "logreg"
    params: Mapping[str, Any] = field(default_factory=dict)
    # train on the field-dropout copies too (FeatureConfig.field_dropout); False: the rows as they are
    field_dropout: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"candidate {self.name!r}: task must be salary or demand, got {self.task!r}")
        if self.kind not in ("xgboost", "logreg"):
            raise ConfigError(f"candidate {self.name!r}: kind must be xgboost or logreg, got {self.kind!r}")
        if not isinstance(self.field_dropout, bool):
            raise ConfigError(f"candidate {self.name!r}: field_dropout must be true or false")

    @property
    def needs_gpu(self) -> bool:
        return self.kind == "xgboost"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "kind": self.kind,
            "params": dict(self.params),
            "field_dropout": self.field_dropout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a candidate must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("name", "task", "kind") if k not in data]
        if missing:
            raise ConfigError(f"candidate {data.get('name', '?')!r}: missing keys {missing}")
        unknown = sorted(set(data) - {"name", "task", "kind", "params", "field_dropout"})
        if unknown:
            raise ConfigError(f"candidate {data['name']!r}: unknown keys {unknown}")
        params = data.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"candidate {data['name']!r}: params must be a mapping")
        return cls(
            name=data["name"],
            task=data["task"],
            kind=data["kind"],
            params=dict(params),
            field_dropout=data.get("field_dropout", True),
        )


BASELINE_SUFFIX = "-baseline"


def baseline_candidate(task: str) -> CandidateConfig:
    """The yardstick every task's winner must match: plain TF-IDF + logistic regression.

    scikit-learn's defaults (C 1, no class weights) on the task's training rows as they are
    (no field-dropout copies), over the same TF-IDF features as the other candidates. The
    training step always fits it next to the configured candidates, and it competes with
    them on validation (:func:`hhpulse.model.train.select_winner`): it wins when no candidate
    ranks at least as well.
    """
    return CandidateConfig(
        name=f"{task}{BASELINE_SUFFIX}",
        task=task,
        kind="logreg",
        params={"C": 1.0, "class_weight": "none", "max_iter": 1000},
        field_dropout=False,
    )


@dataclass(frozen=True)
class DataConfig:
    """Everything that turns history into a model's inputs: labels, text features, split.

    Stored with each model, so a model can be rebuilt and its labels explained.
    """

    labels: LabelConfig = field(default_factory=LabelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels.to_dict(),
            "features": self.features.to_dict(),
            "split": self.split.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """Missing sections and keys take their defaults; unknown ones are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"DataConfig: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"labels", "features", "split"})
        if unknown:
            raise ConfigError(
                f"DataConfig: unknown sections {unknown}; known: ['features', 'labels', 'split']"
            )
        return cls(
            labels=LabelConfig.from_dict(data.get("labels") or {}),
            features=FeatureConfig.from_dict(data.get("features") or {}),
            split=SplitConfig.from_dict(data.get("split") or {}),
        )


def defaults_path(name: str) -> Path:
    """A file in the packaged ``hhpulse/defaults`` folder."""
    return Path(__file__).parent / "defaults" / name


def read_document(path: str | Path) -> Any:
    """A YAML (``.yaml``/``.yml``) or JSON document; unreadable files raise :class:`ConfigError`."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        return yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc


def load_config(path: str | Path | None = None) -> DataConfig:
    """Label, feature and split settings from a YAML/JSON file (default: defaults/config.yaml).

    A file may set only some sections or keys; the rest keep their defaults.
    """
    p = Path(path) if path else defaults_path("config.yaml")
    doc = read_document(p)
    try:
        return DataConfig.from_dict(doc or {})
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def load_candidates(path: str | Path | None = None) -> list[CandidateConfig]:
    """Candidates from a YAML/JSON file (default: the packaged defaults/candidates.yaml)."""
    p = Path(path) if path else defaults_path("candidates.yaml")
    doc = read_document(p)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("candidates"), list):
        raise ConfigError(f"{p}: expected a mapping with a 'candidates' list")
    out = [CandidateConfig.from_dict(c) for c in doc["candidates"]]
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: candidate names must be unique")
    reserved = sorted(n for n in names if n.endswith(BASELINE_SUFFIX))
    if reserved:
        raise ConfigError(
            f"{p}: candidate names ending in {BASELINE_SUFFIX!r} are reserved for the TF-IDF + logistic "
            f"regression baseline that every run trains anyway: rename {reserved}"
        )
    return out


# -- when the monitor flags a drift (hhpulse.watch.monitor) ---------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When the monitor flags a drift (each is an option of ``hhpulse monitor``).

    Attributes:
        min_records: a window with fewer served records is not judged (too few to tell).
        cohort_psi: PSI of a task's served mix (mean probabilities) against its training mix;
            0.25 is the usual "major shift" line of the PSI.
        length_psi: PSI of the responsibility length against the training rows.
        unseen_increase: how much the share of unknown tokens may exceed the training rows'.
        min_live: resolved live predictions needed before live accuracy is judged.
        auc_drop: how far the live demand AUC may fall below the champion's held-out test AUC.
    """

    min_records: int = 50
    cohort_psi: float = 0.25
    length_psi: float = 0.25
    unseen_increase: float = 0.10
    min_live: int = 100
    auc_drop: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


THRESHOLD_HELP = {
    "min_records": "judge a window of at least this many served records",
    "cohort_psi": "PSI of a task's served mix (mean probabilities) against its training mix",
    "length_psi": "PSI of the responsibility length against the training rows",
    "unseen_increase": "rise of the unknown-token share over the training rows'",
    "min_live": "resolved live predictions needed to judge live accuracy",
    "auc_drop": "live demand AUC below the champion's held-out test AUC by this much",
}
