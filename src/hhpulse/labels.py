"""Salary and demand labels, from the vacancy history and each run's currency rates.

Salary (monthly gross RUB, closed-open bands from :class:`~hhpulse.config.LabelConfig`):

1. the point is the midpoint of ``from`` and ``to``, or whichever one is given;
2. it is converted to RUB with the ``/dictionaries`` rates of the run the salary was
   collected in (``amount / rate``, rates being units per 1 RUR);
3. a net figure (``gross: false``) becomes gross: ``net / (1 - income_tax)``;
4. no salary means **no label** (hidden salary is not a salary level);
5. absurd values (below ``min_monthly_rub`` or above ``max_monthly_rub``) and salaries in
   a currency without a rate are left out with a reason in ``salary_reason``.

Demand (how fast such a vacancy closes; ``high`` < 10 days <= ``medium`` < 20 <= ``low``):

* ``closed``: lifetime = ``closed_at`` - (``initial_created_at``, else the first
  ``published_at``);
* ``censored_low``: still open but already at least 20 days old at its last sighting:
  censoring cannot change its band, so it is ``low``;
* a younger open vacancy is unknown and left out;
* ``proxy_age``: when the data holds no closes, or fewer than ``min_closed`` (a single
  imported dump; a couple of ``archived`` items cannot carry a label set), the
  prototype's proxy is used instead: age at collection (``collected_at`` -
  ``published_at``). This is flagged loudly (``summary["demand_proxy"]``, a warning,
  and the model card), because it measures how long ago a vacancy was (re)published,
  not how fast it closes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hhpulse.config import LabelConfig

log = logging.getLogger(__name__)

DAY = pd.Timedelta(days=1)


def salary_point(salary_from: float | None, salary_to: float | None) -> float | None:
    """The midpoint of a range, or whichever bound is given."""
    lo = (
        None
        if salary_from is None or (isinstance(salary_from, float) and math.isnan(salary_from))
        else salary_from
    )
    hi = None if salary_to is None or (isinstance(salary_to, float) and math.isnan(salary_to)) else salary_to
    if lo is not None and hi is not None:
        return (lo + hi) / 2
    return lo if lo is not None else hi


def to_monthly_gross_rub(
    amount: float, currency: str | None, gross: bool | None, rates: Mapping[str, float], config: LabelConfig
) -> tuple[float | None, str | None]:
    """(gross RUB, None) or (None, reason)."""
    code = (currency or "").upper()
    rate = rates.get("RUR", 1.0) if code in ("RUB", "RUR") else rates.get(code)
    if not code:
        return None, "no_currency"
    if not rate or rate <= 0:
        return None, f"no_rate:{code}"
    rub = amount / rate
    is_gross = config.gross_when_unknown if gross is None else bool(gross)
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
        g = None if gross is None or (isinstance(gross, float) and math.isnan(gross)) else bool(gross)
        value, why = to_monthly_gross_rub(point, cur, g, rates_by_run.get(run) or {}, config)
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
    proxy = int(closed.sum()) < config.min_closed
    if proxy:
        age = (history["collected_at"] - history["published_at"]) / DAY
        ok = age.notna() & (age >= 0)
        out.loc[ok, "lifetime_days"] = age[ok]
        out.loc[ok, "demand_source"] = "proxy_age"
        log.warning(
            "DEMAND PROXY: the data holds %d closed vacancies (< min_closed=%d), so demand labels use age at collection "
            "(collected_at - published_at), the prototype's proxy. It is not time-to-close.",
            int(closed.sum()),
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
