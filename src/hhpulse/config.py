"""Settings for labels, features, splits and training: frozen dataclasses, one home.

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

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


def _from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = (
                tuple(tuple(v) if isinstance(v, list) else v for v in value)
                if isinstance(value, list)
                else value
            )
    return cls(**kwargs)


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

    def __post_init__(self) -> None:
        if not 0 <= self.income_tax < 1:
            raise ConfigError(f"income_tax must be in [0, 1), got {self.income_tax}")
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
        return ("high", "medium", "low")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["salary_bands"] = [[n, lo, None if math.isinf(hi) else hi] for n, lo, hi in self.salary_bands]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelConfig:
        data = dict(data)
        if "salary_bands" in data:
            data["salary_bands"] = [
                [n, float(lo), math.inf if hi is None else float(hi)] for n, lo, hi in data["salary_bands"]
            ]
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
        unknown = set(self.fields) - {"responsibility", "name", "requirement"}
        if unknown:
            raise ConfigError(f"unknown text fields {sorted(unknown)}")
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError("ngram_max and min_df must be at least 1")

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

    def __post_init__(self) -> None:
        if self.task not in ("salary", "demand"):
            raise ConfigError(f"candidate {self.name!r}: task must be salary or demand, got {self.task!r}")
        if self.kind not in ("xgboost", "logreg"):
            raise ConfigError(f"candidate {self.name!r}: kind must be xgboost or logreg, got {self.kind!r}")

    @property
    def needs_gpu(self) -> bool:
        return self.kind == "xgboost"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateConfig:
        return cls(
            name=data["name"], task=data["task"], kind=data["kind"], params=dict(data.get("params") or {})
        )


def defaults_path(name: str) -> Path:
    return Path(__file__).parent / "defaults" / name


def load_candidates(path: str | Path | None = None) -> list[CandidateConfig]:
    """Candidates from a YAML/JSON file (default: the packaged defaults/candidates.yaml)."""
    import yaml

    p = Path(path) if path else defaults_path("candidates.yaml")
    try:
        doc = (
            yaml.safe_load(p.read_text(encoding="utf-8"))
            if p.suffix in (".yaml", ".yml")
            else json.loads(p.read_text())
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read candidates from {p}: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("candidates"), list):
        raise ConfigError(f"{p}: expected a mapping with a 'candidates' list")
    out = [CandidateConfig.from_dict(c) for c in doc["candidates"]]
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: candidate names must be unique")
    return out
