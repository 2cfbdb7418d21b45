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

Demand (how fast such a vacancy closes; ``high`` < 10 days <= ``medium`` < 20 <= ``low``).
A demand label is used only once it is **resolved**, i.e. no later observation can change it:

* ``closed``: lifetime = ``closed_at`` - start, where start is ``initial_created_at``,
  else the first ``published_at``. The close is only known to lie in
  (``closed_after``, ``closed_by``] (two runs), so the lifetime lies in
  [``lifetime_min_days``, ``lifetime_max_days``]; ``closed_at`` is the midpoint. When
  that interval crosses a cohort edge, the label is kept (from the midpoint) and
  flagged ``demand_uncertain`` ("straddles an edge"); the summary and the model card
  give their share. A daily schedule keeps it small; a weekly one does not.
* ``censored_low``: still open but already observed open for at least 20 days (the
  ``low`` edge) at its last sighting: no later close can change its band, so it is ``low``.
* **unresolved** (no label, never counted as ``low``), ``demand_status`` says why:
  ``open_young``: still open and younger than the ``low`` edge, it may still close as
  ``high`` or ``medium``; ``start_unknown``: the start was not observed (see
  ``observed_since`` in :mod:`hhpulse.data.history`: the vacancy was already there when
  observation began, and hh.ru moves ``published_at`` on every re-publication), so its
  lifetime is only known to be *at least* the observed one; that settles ``low`` (then it
  is labelled) but nothing shorter; ``bad_dates``: a close before the start.
* ``proxy_age``: when real labels cannot make a measurable task (fewer than
  ``min_closed`` resolved closes, as in a single imported dump, or resolved labels of
  fewer than two cohorts, as in the first days of a schedule, when only vacancies open
  for 20+ days are resolved) the age proxy is used instead: age at collection
  (``collected_at`` - ``published_at``). This is flagged loudly
  (``summary["demand_proxy"]`` with ``demand_proxy_reason``, a WARNING log line, and
  the model card), because it measures how long ago a vacancy was (re)published, not
  how fast it closes. ``allow_demand_proxy=False`` turns the fallback off: demand then
  keeps only the resolved labels.
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
# Why a demand label is missing (``demand_status``); ``resolved`` rows have one.
DEMAND_UNRESOLVED = ("open_young", "start_unknown", "bad_dates", "no_dates")


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


def _col(history: pd.DataFrame, name: str) -> pd.Series:
    if name in history:
        return pd.to_datetime(history[name], utc=True)
    return pd.Series(pd.NaT, index=history.index, dtype="datetime64[ns, UTC]")


def demand_start(history: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(start, start_known) per row: when the vacancy opened, and whether that was observed.

    The start is ``initial_created_at``, else the first ``published_at``. It is known when
    ``initial_created_at`` is, or when the vacancy was first published after
    ``observed_since`` (an earlier complete run of the same search did not list it). A
    history without ``observed_since`` (built by hand) takes every start as known.
    """
    initial = _col(history, "initial_created_at")
    start = initial.fillna(_col(history, "first_published_at"))
    if "observed_since" not in history:
        return start, start.notna()
    since = _col(history, "observed_since")
    return start, initial.notna() | (since.notna() & (start > since))


def resolve_demand(history: pd.DataFrame, config: LabelConfig) -> pd.DataFrame:
    """Resolved demand labels from closes and censoring (no proxy); see the module docstring.

    Columns: ``lifetime_days``, ``lifetime_min_days``, ``lifetime_max_days``,
    ``demand_cohort``, ``demand_source``, ``demand_status`` (``resolved`` or a reason from
    :data:`DEMAND_UNRESOLVED`), ``demand_uncertain`` (the close-time interval straddles a
    cohort edge), ``demand_start`` and ``demand_start_known``.
    """
    start, known = demand_start(history)
    closed_at = _col(history, "closed_at")
    closed = closed_at.notna()
    after = _col(history, "closed_after").where(closed)
    by = _col(history, "closed_by").where(closed).fillna(closed_at)
    life = (closed_at - start) / DAY
    # an unknown lower bound (archived at the first sighting): it may have closed at once
    life_lo = ((after - start) / DAY).fillna(0.0).clip(lower=0.0).where(closed)
    life_hi = ((by - start) / DAY).where(closed)
    age = (_col(history, "last_seen") - start) / DAY
    low_edge = config.demand_low_days

    out = pd.DataFrame(index=history.index)
    out["lifetime_days"] = np.nan
    out["lifetime_min_days"] = np.nan
    out["lifetime_max_days"] = np.nan
    out["demand_cohort"] = None
    out["demand_source"] = None
    out["demand_status"] = "no_dates"
    out["demand_uncertain"] = False
    out["demand_start"] = start
    out["demand_start_known"] = known

    bad = closed & life.notna() & (life < 0)
    ok_close = closed & life.notna() & (life >= 0)
    # a known start: the midpoint's cohort; an unknown one: only a lower bound, so only low
    exact = ok_close & known
    floor_low = ok_close & ~known & (life_lo >= low_edge)
    lab_close = exact | floor_low
    out.loc[lab_close, "lifetime_days"] = life[lab_close]
    out.loc[lab_close, "lifetime_min_days"] = life_lo[lab_close]
    out.loc[exact, "lifetime_max_days"] = life_hi[exact]  # unknown start: no upper bound
    out.loc[lab_close, "demand_source"] = "closed"
    out.loc[lab_close, "demand_status"] = "resolved"
    out.loc[ok_close & ~lab_close, "demand_status"] = "start_unknown"
    out.loc[bad, "demand_status"] = "bad_dates"

    opened = ~closed & age.notna()
    cens = opened & (age >= low_edge)
    out.loc[cens, "lifetime_days"] = age[cens]
    out.loc[cens, "lifetime_min_days"] = age[cens]
    out.loc[cens, "demand_source"] = "censored_low"
    out.loc[cens, "demand_status"] = "resolved"
    out.loc[opened & ~cens, "demand_status"] = "open_young"

    if lab_close.any():
        out.loc[lab_close, "demand_cohort"] = [demand_cohort(d, config) for d in life[lab_close]]
    if cens.any():
        out.loc[cens, "demand_cohort"] = "low"
    if exact.any():
        lo_c = [demand_cohort(d, config) for d in life_lo[exact]]
        hi_c = [demand_cohort(d, config) for d in life_hi[exact]]
        out.loc[exact, "demand_uncertain"] = [a != b for a, b in zip(lo_c, hi_c, strict=True)]
    return out


def demand_labels(history: pd.DataFrame, config: LabelConfig) -> tuple[pd.DataFrame, bool]:
    """Demand columns (see :func:`resolve_demand`); and whether the age proxy was used.

    The reason for the proxy, when used, is in ``frame.attrs["proxy_reason"]``.
    """
    out = resolve_demand(history, config)
    resolved = out["demand_cohort"].notna()
    n_closed = int((out["demand_source"] == "closed").sum())
    cohorts = sorted(out.loc[resolved, "demand_cohort"].unique())
    why = None
    if n_closed < config.min_closed:
        why = f"only {n_closed} resolved closes (< min_closed={config.min_closed})"
    elif len(cohorts) < 2:
        why = f"resolved labels hold one cohort only ({', '.join(cohorts) or 'none'}): demand cannot be measured"
    if why and not config.allow_demand_proxy:
        log.warning("demand: %s and the age proxy is off; demand keeps the resolved labels alone", why)
        return out, False
    if why is None:
        return out, False
    age = (_col(history, "collected_at") - _col(history, "published_at")) / DAY
    ok = age.notna() & (age >= 0)
    proxy = out[["demand_start", "demand_start_known"]].copy()
    proxy["lifetime_days"] = age.where(ok)
    proxy["lifetime_min_days"] = np.nan
    proxy["lifetime_max_days"] = np.nan
    proxy["demand_cohort"] = None
    proxy.loc[ok, "demand_cohort"] = [demand_cohort(d, config) for d in age[ok]]
    proxy["demand_source"] = pd.Series("proxy_age", index=history.index).where(ok)
    proxy["demand_status"] = pd.Series("proxy", index=history.index).where(ok, "no_dates")
    proxy["demand_uncertain"] = False
    proxy = proxy[list(out.columns)]
    proxy.attrs["proxy_reason"] = why
    log.warning(
        "DEMAND PROXY: %s, so demand labels use the age proxy: age at collection "
        "(collected_at - published_at), not time-to-close.",
        why,
    )
    return proxy, True


def demand_resolution(dem: pd.DataFrame) -> dict[str, Any]:
    """Counts for the summary: resolved vs unresolved (by reason), and the straddling share."""
    status = dem["demand_status"].value_counts()
    closes = dem["demand_source"] == "closed"
    uncertain = int((dem["demand_uncertain"] & closes).sum())
    labelled = int(dem["demand_cohort"].notna().sum())
    return {
        "resolved": labelled,
        "unresolved": {str(k): int(v) for k, v in status.items() if k not in ("resolved", "proxy")},
        "uncertain": uncertain,
        "uncertain_share": round(uncertain / labelled, 4) if labelled else 0.0,
        "start_known": int(dem["demand_start_known"].sum()),
    }


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
        "demand_proxy_reason": dem.attrs.get("proxy_reason"),
        "demand_resolution": demand_resolution(dem),
        "date_range": [str(times.min()) if len(times) else None, str(times.max()) if len(times) else None],
        "label_config": config.to_dict(),
    }
    return LabeledFrame(frame, summary)
