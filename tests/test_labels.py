"""Salary and demand labels: cohort edges, currencies, net/gross, censoring, the proxy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import ConfigError, LabelConfig
from hhpulse.model.labels import build_labels, salary_cohort, salary_point, to_monthly_gross_rub

CFG = LabelConfig()
RATES = {
    "RUR": 1.0,
    "USD": 0.01,
    "EUR": 0.008,
    "KZT": 5.0,
    "BYR": 0.04,
    "UZS": 140.0,
    "KGS": 1.0,
    "AZN": 0.02,
    "GEL": 0.03,
    "UAH": 0.5,
}


@pytest.mark.parametrize(
    ("value", "cohort"),
    [
        (0, "lt_100k"),
        (99_999.99, "lt_100k"),
        (100_000, "100k_150k"),
        (149_999, "100k_150k"),
        (150_000, "150k_200k"),
        (199_999.9, "150k_200k"),
        (200_000, "ge_200k"),
        (5e6, "ge_200k"),
    ],
)
def test_cohort_edges_are_closed_open(value, cohort):
    assert salary_cohort(value, CFG) == cohort


def test_point_is_midpoint_or_the_given_bound():
    assert salary_point(100, 200) == 150
    assert salary_point(100, None) == 100
    assert salary_point(None, 200) == 200
    assert salary_point(float("nan"), 50) == 50
    assert salary_point(None, None) is None


@pytest.mark.parametrize("code", sorted(RATES))
def test_each_currency_converts_with_the_run_rate(code):
    rub, why = to_monthly_gross_rub(RATES[code] * 120_000, code, True, RATES, CFG)
    assert why is None and rub == pytest.approx(120_000)


def test_rur_rub_aliases_unknown_and_missing_currency():
    assert to_monthly_gross_rub(1000, "RUB", True, {}, CFG) == (1000, None)
    assert to_monthly_gross_rub(1000, "XYZ", True, RATES, CFG) == (None, "no_rate:XYZ")
    assert to_monthly_gross_rub(1000, None, True, RATES, CFG) == (None, "no_currency")


def test_net_to_gross():
    rub, _ = to_monthly_gross_rub(87_000, "RUR", False, RATES, CFG)
    assert rub == pytest.approx(100_000)
    rub, _ = to_monthly_gross_rub(87_000, "RUR", None, RATES, CFG)  # unknown: taken as gross
    assert rub == pytest.approx(87_000)
    assert to_monthly_gross_rub(80_000, "RUR", False, RATES, LabelConfig(income_tax=0.2))[0] == pytest.approx(
        100_000
    )


def test_config_validates_and_round_trips():
    with pytest.raises(ConfigError):
        LabelConfig(income_tax=1.0)
    with pytest.raises(ConfigError):
        LabelConfig(salary_bands=(("a", 0, 100), ("b", 150, math.inf)))
    assert LabelConfig.from_dict(CFG.to_dict()) == CFG


def _hist(**cols):
    n = len(next(iter(cols.values())))
    base = {
        "id": [str(i) for i in range(n)],
        "salary_from": [None] * n,
        "salary_to": [None] * n,
        "salary_currency": [None] * n,
        "salary_gross": [None] * n,
        "currency_rates_run_id": ["r"] * n,
        "initial_created_at": [pd.NaT] * n,
        "first_published_at": [pd.NaT] * n,
        "published_at": [pd.NaT] * n,
        "collected_at": [pd.NaT] * n,
        "last_seen": [pd.NaT] * n,
        "closed_at": [pd.NaT] * n,
    }
    base.update(cols)
    df = pd.DataFrame(base)
    for c in (
        "initial_created_at",
        "first_published_at",
        "published_at",
        "collected_at",
        "last_seen",
        "closed_at",
    ):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def test_salary_labels_leave_out_missing_and_absurd():
    h = _hist(
        salary_from=[None, 5, 50_000_000, 90_000, 50],
        salary_to=[None, 5, None, 110_000, None],
        salary_currency=[None, "RUR", "RUR", "RUR", "USD"],
        salary_gross=[None, True, True, True, True],
    )
    f = build_labels(h, {"r": RATES}, CFG).frame
    assert f["salary_cohort"].tolist()[:4] == [None, None, None, "100k_150k"]
    assert f["salary_reason"].tolist() == ["no_salary", "absurd_low", "absurd_high", None, "absurd_low"]


def test_demand_from_closes_and_censoring():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    day = pd.Timedelta(days=1)
    h = _hist(
        first_published_at=[t0] * 5,
        initial_created_at=[t0 - 5 * day, pd.NaT, pd.NaT, pd.NaT, pd.NaT],
        closed_at=[t0 + 3 * day, t0 + 15 * day, t0 + 40 * day, pd.NaT, pd.NaT],
        last_seen=[t0 + 2 * day, t0 + 14 * day, t0 + 39 * day, t0 + 25 * day, t0 + 5 * day],
    )
    lab = build_labels(h, {}, LabelConfig(min_closed=1))
    f = lab.frame
    assert f["lifetime_days"].iloc[0] == pytest.approx(8)  # initial_created_at wins over first published
    assert f["demand_cohort"].tolist() == ["high", "medium", "low", "low", None]
    assert f["demand_source"].tolist() == ["closed", "closed", "closed", "censored_low", None]
    assert lab.summary["demand_proxy"] is False


def test_demand_falls_back_to_the_age_proxy_loudly(caplog):
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    h = _hist(
        published_at=[t0, t0, pd.NaT],
        collected_at=[t0 + pd.Timedelta(days=2), t0 + pd.Timedelta(days=12), t0],
    )
    lab = build_labels(h, {}, CFG)
    assert lab.summary["demand_proxy"] is True
    assert lab.frame["demand_cohort"].tolist() == ["high", "medium", None]
    assert set(lab.frame["demand_source"].dropna()) == {"proxy_age"}
    assert "DEMAND PROXY" in caplog.text
    assert np.isnan(lab.frame["lifetime_days"].iloc[2])


def test_cohort_edges_through_build_labels():
    values = [99_999.0, 100_000.0, 149_999.0, 150_000.0, 199_999.0, 200_000.0]
    h = _hist(
        salary_from=values,
        salary_to=[None] * 6,
        salary_currency=["RUR"] * 6,
        salary_gross=[True] * 6,
    )
    f = build_labels(h, {"r": RATES}, CFG).frame
    assert f["salary_cohort"].tolist() == [
        "lt_100k",
        "100k_150k",
        "100k_150k",
        "150k_200k",
        "150k_200k",
        "ge_200k",
    ]


def test_each_run_converts_with_its_own_rates():
    h = _hist(
        salary_from=[1000.0, 1000.0, 1000.0],
        salary_currency=["USD", "USD", "USD"],
        salary_gross=[True, True, True],
        currency_rates_run_id=["old", "new", "gone"],
    )
    rates = {"old": {"RUR": 1.0, "USD": 0.0125}, "new": {"RUR": 1.0, "USD": 0.01}}
    f = build_labels(h, rates, CFG).frame
    assert f["salary_rub"].iloc[0] == pytest.approx(80_000)
    assert f["salary_rub"].iloc[1] == pytest.approx(100_000)
    assert f["salary_cohort"].tolist() == ["lt_100k", "100k_150k", None]
    assert f["salary_reason"].iloc[2] == "no_rate:USD"  # that run recorded no rates


def test_net_foreign_currency_midpoint():
    h = _hist(
        salary_from=[1000.0],
        salary_to=[1400.0],
        salary_currency=["EUR"],
        salary_gross=[False],
    )
    f = build_labels(h, {"r": RATES}, CFG).frame
    # midpoint 1200 EUR / 0.008 = 150,000 RUB net -> / 0.87 = 172,414 gross
    assert f["salary_rub"].iloc[0] == pytest.approx(150_000 / 0.87)
    assert f["salary_cohort"].iloc[0] == "150k_200k"


def test_reversed_ranges_missing_values_and_pandas_nulls():
    h = _hist(
        salary_from=[200_000.0, np.nan, 120_000.0, 120_000.0],
        salary_to=[100_000.0, 130_000.0, None, None],
        salary_currency=["RUR", "RUR", np.nan, "rur"],
        salary_gross=[True, pd.NA, True, np.nan],
    )
    f = build_labels(h, {"r": RATES}, CFG).frame
    assert f["salary_reason"].tolist() == ["from_gt_to", None, "no_currency", None]
    assert f["salary_cohort"].tolist() == [None, "100k_150k", None, "100k_150k"]


def test_absurd_bounds_come_from_the_config():
    h = _hist(salary_from=[8_000.0], salary_currency=["RUR"], salary_gross=[True])
    assert build_labels(h, {}, CFG).frame["salary_reason"].iloc[0] == "absurd_low"
    loose = LabelConfig(min_monthly_rub=5_000.0)
    assert build_labels(h, {}, loose).frame["salary_cohort"].iloc[0] == "lt_100k"


def test_summary_counts_classes_reasons_and_dates():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    h = _hist(
        salary_from=[50_000.0, 120_000.0, None, 5.0],
        salary_currency=["RUR"] * 4,
        salary_gross=[True] * 4,
        published_at=[t0, t0, t0, t0 + pd.Timedelta(days=1)],
        collected_at=[t0 + pd.Timedelta(days=3)] * 4,
    )
    s = build_labels(h, {}, CFG).summary
    assert s["rows"] == 4
    assert s["salary_counts"] == {"lt_100k": 1, "100k_150k": 1}
    assert s["salary_left_out"] == {"no_salary": 1, "absurd_low": 1}
    assert s["demand_sources"] == {"proxy_age": 4} and s["demand_proxy"] is True
    assert s["date_range"] == [str(t0), str(t0 + pd.Timedelta(days=3))]
    assert LabelConfig.from_dict(s["label_config"]) == CFG


def test_demand_edges_are_closed_open():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    day = pd.Timedelta(days=1)
    lives = [9.99, 10.0, 19.99, 20.0]
    h = _hist(
        first_published_at=[t0] * 4,
        closed_at=[t0 + d * day for d in lives],
        last_seen=[t0 + d * day for d in lives],
    )
    f = build_labels(h, {}, LabelConfig(min_closed=1)).frame
    assert f["demand_cohort"].tolist() == ["high", "medium", "medium", "low"]


def test_open_vacancies_younger_than_the_low_edge_are_unknown():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    day = pd.Timedelta(days=1)
    h = _hist(
        first_published_at=[t0] * 4,
        closed_at=[t0 + 2 * day, pd.NaT, pd.NaT, t0 - day],
        last_seen=[t0 + 2 * day, t0 + 19.9 * day, t0 + 20 * day, t0],
    )
    f = build_labels(h, {}, LabelConfig(min_closed=1)).frame
    # open at 19.9 days could still close as medium: unknown; at 20 days it can only be low;
    # a close before the start is a data error and gets no label
    assert f["demand_cohort"].tolist() == ["high", None, "low", None]
    assert f["demand_source"].tolist() == ["closed", None, "censored_low", None]


def test_proxy_can_be_switched_off():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    day = pd.Timedelta(days=1)
    h = _hist(
        published_at=[t0, t0],
        first_published_at=[t0, t0],
        collected_at=[t0 + 2 * day, t0 + 2 * day],
        closed_at=[t0 + 3 * day, pd.NaT],
        last_seen=[t0 + 2 * day, t0 + 25 * day],
    )
    auto = build_labels(h, {}, CFG)  # one close < min_closed=30: proxy
    assert auto.summary["demand_proxy"] is True
    assert auto.frame["demand_source"].tolist() == ["proxy_age", "proxy_age"]
    strict = build_labels(h, {}, LabelConfig(allow_demand_proxy=False))
    assert strict.summary["demand_proxy"] is False
    assert strict.frame["demand_source"].tolist() == ["closed", "censored_low"]
    assert strict.frame["demand_cohort"].tolist() == ["high", "low"]


# -- resolution: a demand label is used only once no later observation can change it --------
def test_resolution_on_a_hand_made_history():
    """Closed, censored at 20+ days, young and open, a straddling close, an unobserved start."""
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    day = pd.Timedelta(days=1)
    since = t0 - day  # an earlier complete run of the same search did not list them
    h = _hist(
        first_published_at=[t0, t0, t0, t0, t0, t0 - 40 * day, t0 - 40 * day],
        observed_since=[since, since, since, since, since, pd.NaT, pd.NaT],
        # 0: closed in (4, 5] days: high, certain; 1: still open at 25 days: low (censored);
        # 2: open at 12 days: unresolved, never low; 3: closed in (9, 11] days: straddles the
        # 10-day edge; 4: closed in (17, 24]: straddles 20; 5: seen first by the first run
        # (start unknown), closed after 3..4 observed days: unresolved; 6: same, open 30 days: low
        closed_after=[t0 + 4 * day, pd.NaT, pd.NaT, t0 + 9 * day, t0 + 17 * day, t0 - 37 * day, pd.NaT],
        closed_by=[t0 + 5 * day, pd.NaT, pd.NaT, t0 + 11 * day, t0 + 24 * day, t0 - 36 * day, pd.NaT],
        closed_at=[t0 + 4.5 * day, pd.NaT, pd.NaT, t0 + 10 * day, t0 + 20.5 * day, t0 - 36.5 * day, pd.NaT],
        last_seen=[
            t0 + 4 * day,
            t0 + 25 * day,
            t0 + 12 * day,
            t0 + 9 * day,
            t0 + 17 * day,
            t0 - 37 * day,
            t0 - 10 * day,
        ],
    )
    for c in ("observed_since", "closed_after", "closed_by"):
        h[c] = pd.to_datetime(h[c], utc=True)
    lab = build_labels(h, {}, LabelConfig(min_closed=1))
    f = lab.frame
    assert f["demand_cohort"].tolist() == ["high", "low", None, "medium", "low", None, "low"]
    assert f["demand_source"].tolist() == [
        "closed",
        "censored_low",
        None,
        "closed",
        "closed",
        None,
        "censored_low",
    ]
    assert f["demand_status"].tolist() == [
        "resolved",
        "resolved",
        "open_young",
        "resolved",
        "resolved",
        "start_unknown",
        "resolved",
    ]
    assert f["demand_uncertain"].tolist() == [False, False, False, True, True, False, False]
    assert f["lifetime_min_days"].iloc[3] == pytest.approx(9) and f["lifetime_max_days"].iloc[
        3
    ] == pytest.approx(11)
    res = lab.summary["demand_resolution"]
    assert res["unresolved"] == {"open_young": 1, "start_unknown": 1}
    assert res["uncertain"] == 2 and res["uncertain_share"] == pytest.approx(2 / 5)
    assert lab.summary["demand_counts"] == {"low": 3, "high": 1, "medium": 1}


def test_an_unobserved_start_settles_low_only():
    # first seen by the first run: published_at may be a re-publication, so the observed
    # lifetime is a lower bound; 21+ observed days settle low, fewer settle nothing
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    day = pd.Timedelta(days=1)
    h = _hist(
        first_published_at=[t0, t0],
        observed_since=[pd.NaT, pd.NaT],
        closed_after=[t0 + 21 * day, t0 + 5 * day],
        closed_by=[t0 + 22 * day, t0 + 6 * day],
        closed_at=[t0 + 21.5 * day, t0 + 5.5 * day],
        last_seen=[t0 + 21 * day, t0 + 5 * day],
    )
    for c in ("observed_since", "closed_after", "closed_by"):
        h[c] = pd.to_datetime(h[c], utc=True)
    f = build_labels(h, {}, LabelConfig(min_closed=1, allow_demand_proxy=False)).frame
    assert f["demand_cohort"].tolist() == ["low", None]
    assert f["demand_status"].tolist() == ["resolved", "start_unknown"]
    assert not f["demand_start_known"].any()


def test_one_resolved_cohort_falls_back_to_the_flagged_proxy(caplog):
    # the first days of a schedule: only vacancies open 20+ days are resolved, all low;
    # demand cannot be measured on one cohort, so the (flagged) proxy is used
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    day = pd.Timedelta(days=1)
    n = 40
    h = _hist(
        first_published_at=[t0] * n,
        published_at=[t0 + (i % 25) * day for i in range(n)],
        collected_at=[t0 + 30 * day] * n,
        closed_at=[t0 + 25 * day] * n,
        last_seen=[t0 + 24 * day] * n,
    )
    lab = build_labels(h, {}, LabelConfig(min_closed=10))
    assert lab.summary["demand_proxy"] is True
    assert "one cohort" in lab.summary["demand_proxy_reason"] and "DEMAND PROXY" in caplog.text
    assert set(lab.frame["demand_source"].dropna()) == {"proxy_age"}
