"""The data contract: rules, the report, quarantine and the threshold."""

from __future__ import annotations

import gzip
import json

import pytest

from hhpulse.data.collect import collect
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore
from hhpulse.data.validate import ValidationFailed, check_item, validate_items, validate_run

GOOD = {
    "id": "1",
    "name": "Курьер",
    "salary": {"from": 50000, "to": 60000, "currency": "RUR", "gross": True},
    "snippet": {"responsibility": "Доставка заказов", "requirement": ""},
    "published_at": "2026-03-01T10:00:00+0300",
    "collected_at": "2026-03-02T00:00:00+00:00",
}


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ({"salary": {"from": 9, "to": 1, "currency": "RUR"}}, "salary_from_gt_to"),
        ({"salary": {"from": -5, "currency": "RUR"}}, "negative_salary"),
        ({"salary": {"from": 5, "currency": "XXX"}}, "unknown_currency"),
        ({"published_at": "2026-03-05T00:00:00+0300"}, "published_after_collected"),
        ({"published_at": "not a date"}, "parse:published_at"),
        ({"salary": {"from": "abc"}}, "parse:salary.from"),
        ({"name": "  "}, "missing_name"),
        ({"collected_at": None}, "missing_collected_at"),
        ({"snippet": {"responsibility": None}}, "missing_responsibility"),
    ],
)
def test_each_rule(patch, rule):
    assert check_item(GOOD) == []
    assert rule in check_item({**GOOD, **patch})


def test_report_counts_samples_and_warnings():
    items = [GOOD, {**GOOD, "id": "2", "salary": {"from": 9, "to": 1, "currency": "RUR"}}, {**GOOD}]
    items.append({**GOOD, "id": "4", "snippet": {}})
    report = validate_items(items, run_id="r")
    assert report.total == 4 and report.bad == 2  # the bad range and the duplicate id; the warning is kept
    assert report.rules["duplicate_id"].sample_ids == ["1"]
    assert report.rules["missing_responsibility"].severity == "warning"
    assert "| `salary_from_gt_to` | error | 1 | 2 |" in report.to_markdown()


def test_run_quarantines_and_fails_over_threshold(tmp_path):
    store = LocalStore(tmp_path)
    dump = tmp_path / "d.jsonl"
    rows = [{**GOOD, "id": str(i)} for i in range(6)] + [
        {**GOOD, "id": f"b{i}", "name": ""} for i in range(4)
    ]
    dump.write_text("\n".join(json.dumps(r) for r in rows))
    run = collect(make_source(f"file:{dump}"), store).run_id
    with pytest.raises(
        ValidationFailed,
        match=r"40.0% of 10 rows are bad, over the 20% threshold; top rules: missing_name \(4\)",
    ):
        validate_run(store, run)
    # the report and the quarantine were written before failing
    assert store.get_json(f"raw/{run}/validation.json")["passed"] is False
    bad = [
        json.loads(x)
        for x in gzip.decompress(store.get_bytes(f"quarantine/{run}/rows.jsonl.gz")).splitlines()
    ]
    assert {b["id"] for b in bad} == {"b0", "b1", "b2", "b3"} and bad[0]["_reasons"] == ["missing_name"]
    assert validate_run(store, "latest", max_bad_fraction=0.5).passed


def test_real_dump_passes_the_contract(shared_hh):
    with gzip.open(shared_hh / "vacancies_dev.api.jsonl.gz", "rt", encoding="utf-8") as fh:
        items = [json.loads(next(fh)) for _ in range(3000)]
    report = validate_items(items)
    assert report.passed and report.total == 3000
