"""Salary and demand labels, from the vacancy history and each run's currency rates.

Salary (monthly gross RUB, closed-open bands from :class:`~hhpulse.config.LabelConfig`):

1. the point is the midpoint of ``from`` and ``to``, or whichever one is given;
2. it is converted to RUB with the ``/dictionaries`` rates of the run the salary was
   collected in (``amount / rate``, rates being units per 1 RUR);
3. a net figure (``gross: false``) becomes gross: ``net / (1 - income_tax)``;
4. no salary means **no label** (hidden salary is not a salary level);
5. salaries that cannot be trusted are left out (quarantined) with a reason in
   ``salary_reason`` (see :data:`SALARY_REASONS`): ``from_gt_to`` (the range is
   reversed), ``no_currency``, ``no_rate:<CODE>`` (no rate for that currency in the
   salary's run), ``absurd_low`` / ``absurd_high`` (outside ``min_monthly_rub`` ..
   ``max_monthly_rub``: hourly rates, dollars typed as roubles, sums typed as roubles).

Demand (how fast such a vacancy closes; ``high`` < 10 days <= ``medium`` < 20 <= ``low``):

* ``closed``: lifetime = ``closed_at`` - (``initial_created_at``, else the first
  ``published_at``);
* ``censored_low``: still open but already at least 20 days old at its last sighting:
  censoring cannot change its band, so it is ``low``;
* a younger open vacancy is unknown and left out;
* ``proxy_age``: when the data holds no closes, or fewer than ``min_closed`` (a single
  imported dump; a couple of ``archived`` items cannot carry a label set), the
  prototype's proxy is used instead: age at collection (``collected_at`` -
  ``published_at``). This is flagged loudly (``summary["demand_proxy"]``, a WARNING
  log line, and the model card), because it measures how long ago a vacancy was
  (re)published, not how fast it closes. ``allow_demand_proxy=False`` turns the
  fallback off: demand then keeps only the rows that real closes can label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hhpulse.config import LabelConfig

log = logging.getLogger(__name__)

DAY = pd.Timedelta(days=1)

# Every value ``salary_reason`` can take (``no_rate:<CODE>`` names the currency).
SALARY_REASONS = ("no_salary", "from_gt_to", "no_currency", "no_rate:<CODE>", "absurd_low", "absurd_high")
DEMAND_SOURCES = ("closed", "censored_low", "proxy_age")


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA (what a salary field looks like after pandas/parquet)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-likes are not missing values
        return False


def salary_point(salary_from: float | None, salary_to: float | None) -> float | None:
    """The midpoint of a range, or whichever bound is given (None when neither is)."""
    lo = None if _missing(salary_from) else float(salary_from)  # type: ignore[arg-type]
    hi = None if _missing(salary_to) else float(salary_to)  # type: ignore[arg-type]
    if lo is not None and hi is not None:
        return (lo + hi) / 2
    return lo if lo is not None else hi


def to_monthly_gross_rub(
    amount: float, currency: str | None, gross: bool | None, rates: Mapping[str, float], config: LabelConfig
) -> tuple[float | None, str | None]:
    """(gross RUB, None) or (None, reason).

    ``rates`` are the collection run's ``/dictionaries`` rates, units per 1 RUR, so
    ``RUB = amount / rate``. RUR and RUB both mean roubles.
    """
    code = "" if _missing(currency) else str(currency).strip().upper()
    if not code:
        return None, "no_currency"
    rate = rates.get("RUR", 1.0) if code in ("RUB", "RUR") else rates.get(code)
    if rate is None or _missing(rate) or rate <= 0:
        return None, f"no_rate:{code}"
    rub = amount / rate
    is_gross = config.gross_when_unknown if _missing(gross) else bool(gross)
    if not is_gross:
        rub = rub / (1.0 - config.income_tax)
    return rub, None


def salary_cohort(value_rub: float, config: LabelConfig) -> str:
    """The band holding ``value_rub``; bands are closed-open, so 100k is ``100k_150k``."""
    for name, lo, hi in config.salary_bands:
        if lo <= value_rub < hi:
            return name
    raise ValueError(f"{value_rub} is below every salary band")


def demand_cohort(days: float, config: LabelConfig) -> str:
    if days < config.demand_high_days:
        return "high"
    if days < config.demand_low_days:
        return "medium"
    return "low"


@dataclass
class LabeledFrame:
    """History rows with labels. ``frame`` keeps every row; NaN labels mean "no label"."""

    frame: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def salary_labels(
    history: pd.DataFrame, rates_by_run: Mapping[str, Mapping[str, float]], config: LabelConfig
) -> pd.DataFrame:
    """Columns ``salary_rub``, ``salary_cohort`` and ``salary_reason`` for each history row."""
    rub: list[float] = []
    cohort: list[str | None] = []
    reason: list[str | None] = []
    runs = (
        history["currency_rates_run_id"]
        if "currency_rates_run_id" in history
        else pd.Series(None, index=history.index)
    )
    for f, t, cur, gross, run in zip(
        history["salary_from"],
        history["salary_to"],
        history["salary_currency"],
        history["salary_gross"],
        runs,
        strict=True,
    ):
        point = salary_point(f, t)
        if point is None:
            rub.append(np.nan), cohort.append(None), reason.append("no_salary")
            continue
        if not _missing(f) and not _missing(t) and f > t:
            rub.append(np.nan), cohort.append(None), reason.append("from_gt_to")
            continue
        rates = {} if _missing(run) else rates_by_run.get(run) or {}
        value, why = to_monthly_gross_rub(point, cur, gross, rates, config)
        if value is None:
            rub.append(np.nan), cohort.append(None), reason.append(why)
        elif value < config.min_monthly_rub:
            rub.append(value), cohort.append(None), reason.append("absurd_low")
        elif value > config.max_monthly_rub:
            rub.append(value), cohort.append(None), reason.append("absurd_high")
        else:
            rub.append(value), cohort.append(salary_cohort(value, config)), reason.append(None)
    return pd.DataFrame(
        {"salary_rub": rub, "salary_cohort": cohort, "salary_reason": reason}, index=history.index
    )


def demand_labels(history: pd.DataFrame, config: LabelConfig) -> tuple[pd.DataFrame, bool]:
    """Columns ``lifetime_days``, ``demand_cohort``, ``demand_source``; and whether the proxy was used."""
    start = history["initial_created_at"].fillna(history["first_published_at"])
    closed = history["closed_at"].notna()
    out = pd.DataFrame(index=history.index)
    out["lifetime_days"] = np.nan
    out["demand_cohort"] = None
    out["demand_source"] = None
    n_closed = int(closed.sum())
    proxy = n_closed < config.min_closed and config.allow_demand_proxy
    if n_closed < config.min_closed and not config.allow_demand_proxy:
        log.warning(
            "demand: only %d closed vacancies (< min_closed=%d) and the age proxy is off; "
            "demand labels come from closes and censoring alone",
            n_closed,
            config.min_closed,
        )
    if proxy:
        age = (history["collected_at"] - history["published_at"]) / DAY
        ok = age.notna() & (age >= 0)
        out.loc[ok, "lifetime_days"] = age[ok]
        out.loc[ok, "demand_source"] = "proxy_age"
        log.warning(
            "DEMAND PROXY: the data holds %d closed vacancies (< min_closed=%d), so demand labels use age at collection "
            "(collected_at - published_at), the prototype's proxy. It is not time-to-close.",
            n_closed,
            config.min_closed,
        )
    else:
        life = (history["closed_at"] - start) / DAY
        ok = closed & life.notna() & (life >= 0)
        out.loc[ok, "lifetime_days"] = life[ok]
        out.loc[ok, "demand_source"] = "closed"
        age_open = (history["last_seen"] - start) / DAY
        cens = ~closed & age_open.notna() & (age_open >= config.demand_low_days)
        out.loc[cens, "lifetime_days"] = age_open[cens]
        out.loc[cens, "demand_source"] = "censored_low"
    has = out["lifetime_days"].notna()
    out.loc[has, "demand_cohort"] = [demand_cohort(d, config) for d in out.loc[has, "lifetime_days"]]
    return out, proxy


def build_labels(
    history: pd.DataFrame, rates_by_run: Mapping[str, Mapping[str, float]], config: LabelConfig
) -> LabeledFrame:
    """Both label sets for every history row, plus a summary for metrics and the model card."""
    sal = salary_labels(history, rates_by_run, config)
    dem, proxy = demand_labels(history, config)
    frame = pd.concat([history, sal, dem], axis=1)
    times = pd.concat([frame["collected_at"], frame["published_at"]]).dropna()
    summary = {
        "rows": len(frame),
        "salary_counts": {k: int(v) for k, v in frame["salary_cohort"].value_counts().items()},
        "salary_left_out": {k: int(v) for k, v in frame["salary_reason"].value_counts().items()},
        "demand_counts": {k: int(v) for k, v in frame["demand_cohort"].value_counts().items()},
        "demand_sources": {k: int(v) for k, v in frame["demand_source"].value_counts().items()},
        "demand_proxy": proxy,
        "date_range": [str(times.min()) if len(times) else None, str(times.max()) if len(times) else None],
        "label_config": config.to_dict(),
    }
    return LabeledFrame(frame, summary)
