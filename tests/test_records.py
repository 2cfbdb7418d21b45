"""Typed records: the prototype's parsing bugs stay fixed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hhpulse.hh.records import RecordError, dedup_items, parse_datetime, parse_item

ITEM = {
    "id": "127361571",
    "name": "Тестировщик",
    "salary": {"from": 150000, "to": 180000, "currency": "rur", "gross": False},
    "employer": {"id": "3646686", "name": "АЙФЭЛЛ"},
    "area": {"id": "1", "name": "Москва"},
    "snippet": {"responsibility": "Работа с <highlighttext>Data</highlighttext>", "requirement": None},
    "published_at": "2025-11-06T12:22:05+0300",
    "created_at": "2025-11-06T12:22:05+0300",
    "professional_roles": [{"id": "124", "name": "Тестировщик"}],
    "experience": {"id": "between1And3"},
}


def test_salary_to_and_employer_name_are_their_own_fields():
    rec = parse_item(ITEM, collected_at="2025-11-07T00:00:00")
    assert (rec.salary_from, rec.salary_to) == (150000.0, 180000.0)  # the prototype copied from into to
    assert rec.employer_name == "АЙФЭЛЛ" and rec.employer_id == "3646686"  # the prototype stored the id
    assert rec.salary_currency == "RUR" and rec.salary_gross is False
    assert rec.published_at == datetime(2025, 11, 6, 9, 22, 5, tzinfo=timezone.utc)
    assert rec.collected_at == datetime(2025, 11, 7, tzinfo=timezone.utc)  # naive means UTC
    assert rec.professional_roles == ("124",) and rec.experience == "between1And3"


def test_dedup_uses_id_values_not_an_index():
    items = [{"id": "1"}, {"id": 2}, {"id": "1", "name": "again"}, {"id": "2"}]
    assert [i["id"] for i in dedup_items(items)] == ["1", 2]


def test_tolerates_nulls_and_names_bad_fields():
    rec = parse_item({"id": 5, "salary": None, "snippet": None, "employer": None, "area": None})
    assert rec.id == "5" and rec.salary_from is None and rec.responsibility is None
    with pytest.raises(RecordError, match="salary.from"):
        parse_item({**ITEM, "salary": {"from": "lots"}})
    with pytest.raises(RecordError, match="published_at: unparseable"):
        parse_item({**ITEM, "published_at": "yesterday"})
    with pytest.raises(RecordError, match="id: missing"):
        parse_item({"name": "x"})
    assert parse_datetime("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_structured_fields_of_a_search_item_and_of_an_export_that_kept_only_names():
    item = {
        "id": "1",
        "experience": {"id": "between3And6", "name": "От 3 до 6 лет"},
        "schedule": {"id": None, "name": "Удаленная работа"},  # the shared dump keeps only names
        "employment": {"id": None, "name": "full"},  # ... or the id in the name
        "professional_roles": [{"id": "96", "name": "Программист"}, {"id": None, "name": "Аналитик"}],
        "has_test": True,
        "response_letter_required": False,
        "key_skills": [{"name": "SQL"}, {"name": "Python"}],
    }
    rec = parse_item(item)
    assert (rec.experience, rec.schedule, rec.employment) == ("between3And6", "remote", "full")
    assert rec.professional_roles == ("96", "Аналитик")
    assert (rec.has_test, rec.response_letter_required, rec.key_skills_count) == (True, False, 2.0)
    bare = parse_item({"id": "2"})
    assert (bare.has_test, bare.key_skills_count, bare.experience) == (None, None, None)
    assert parse_item({"id": "3", "schedule": {"name": "hybrid"}}).schedule == "hybrid"  # a newer value stays
    for bad, field in (({"has_test": "yes"}, "has_test"), ({"key_skills": "SQL"}, "key_skills")):
        with pytest.raises(RecordError) as err:
            parse_item({"id": "4", **bad})
        assert err.value.field == field
