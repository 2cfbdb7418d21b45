"""Typed vacancy records parsed from hh.ru API search items.

This is where the original prototype's parsing bugs are fixed:

* ``salary_to`` comes from ``salary.to`` (the prototype copied ``salary.from``);
* ``employer_name`` comes from ``employer.name`` (the prototype stored the id);
* duplicate ids are detected on the id *values* (see :func:`dedup_items`), not on a
  pandas index.

Parsing is tolerant of missing or null nested objects (older dumps, third-party
exports); type errors in fields we rely on raise :class:`RecordError` with the
field name, so validation can quarantine the row with an exact reason.

The structured fields the models read (see :mod:`hhpulse.model.inputs`) are parsed here
too: ``experience``, ``schedule`` and ``employment`` as their dictionary ids (hh.ru's
``/dictionaries``), also when a third-party export kept only the id or the Russian name in
``name`` (:func:`dictionary_id`); ``has_test`` and ``response_letter_required`` (every search
item has them); ``key_skills_count`` (only ``/vacancies/{id}`` objects carry ``key_skills``;
None elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

# Known hh.ru currency codes (RUR is the API's code for the rouble).
KNOWN_CURRENCIES = frozenset({"RUR", "USD", "EUR", "KZT", "BYR", "UZS", "KGS", "AZN", "GEL", "UAH"})

# hh.ru's /dictionaries: id -> Russian name, for the fields kept as ids (GET /dictionaries,
# 2020-06 and 2024-12 give the same entries)
DICTIONARIES: dict[str, dict[str, str]] = {
    "experience": {
        "noExperience": "Нет опыта",
        "between1And3": "От 1 года до 3 лет",
        "between3And6": "От 3 до 6 лет",
        "moreThan6": "Более 6 лет",
    },
    "schedule": {
        "fullDay": "Полный день",
        "shift": "Сменный график",
        "flexible": "Гибкий график",
        "remote": "Удаленная работа",
        "flyInFlyOut": "Вахтовый метод",
    },
    "employment": {
        "full": "Полная занятость",
        "part": "Частичная занятость",
        "project": "Проектная работа",
        "volunteer": "Волонтерство",
        "probation": "Стажировка",
    },
}
_BY_NAME = {k: {n.casefold(): i for i, n in d.items()} for k, d in DICTIONARIES.items()}


class RecordError(ValueError):
    """An item cannot be parsed; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def parse_datetime(value: Any, field_name: str = "datetime") -> datetime | None:
    """Parse hh.ru timestamps (``2025-11-06T12:22:05+0300``) into aware UTC datetimes.

    Naive timestamps (as in some dumps' ``collected_at``) are taken as UTC.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # hh.ru writes offsets without a colon (+0300); fromisoformat on 3.10 needs +03:00
        if len(text) >= 5 and text[-5] in "+-" and text[-4:].isdigit() and "T" in text:
            text = f"{text[:-2]}:{text[-2:]}"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise RecordError(field_name, f"unparseable timestamp {value!r}") from None
    else:
        raise RecordError(field_name, f"expected a timestamp string, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_datetime(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat() if dt is not None else None


def _obj(item: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(key, f"expected an object, got {type(value).__name__}")
    return value


def _str(value: Any, field_name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise RecordError(field_name, f"expected a string, got {type(value).__name__}")


def _num(value: Any, field_name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(field_name, "expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(" ", "").replace("\u00a0", ""))
        except ValueError:
            raise RecordError(field_name, f"expected a number, got {value!r}") from None
    raise RecordError(field_name, f"expected a number, got {type(value).__name__}")


def _bool(value: Any, field_name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(field_name, f"expected a boolean, got {type(value).__name__}")


def dictionary_id(kind: str, value: Any) -> str | None:
    """The dictionary id of an ``experience``/``schedule``/``employment`` object (or of a
    plain string): its ``id``; else its ``name`` when that is an id or a known Russian name
    (third-party exports keep only ``name``); else the name as it is (an entry of a newer
    dictionary stays its own value). None when absent."""
    if isinstance(value, Mapping):
        vid = _str(value.get("id"), f"{kind}.id")
        if vid:
            return vid
        value = value.get("name")
    text = _str(value, f"{kind}.name")
    if not text or not text.strip():
        return None
    text = text.strip()
    if text in DICTIONARIES[kind]:
        return text
    return _BY_NAME[kind].get(text.casefold(), text)


def role_keys(roles: Iterable[Any]) -> tuple[str, ...]:
    """Each professional role's id, or its name where an export kept no id (the shared dump)."""
    out = []
    for r in roles:
        if isinstance(r, Mapping):
            key = r.get("id") if r.get("id") is not None else r.get("name")
            if key is not None and str(key).strip():
                out.append(str(key).strip())
    return tuple(out)


@dataclass(frozen=True)
class VacancyRecord:
    """One vacancy as seen in one collection run (flat, typed, UTC timestamps)."""

    id: str
    name: str | None
    responsibility: str | None  # raw snippet, may hold <highlighttext>; clean with hhpulse.model.text
    requirement: str | None
    salary_from: float | None
    salary_to: float | None
    salary_currency: str | None
    salary_gross: bool | None
    area_id: str | None
    area_name: str | None
    employer_id: str | None
    employer_name: str | None
    published_at: datetime | None
    created_at: datetime | None
    initial_created_at: datetime | None
    archived: bool | None
    experience: str | None
    schedule: str | None
    employment: str | None
    professional_roles: tuple[str, ...] = field(default_factory=tuple)
    collected_at: datetime | None = None
    has_test: bool | None = None
    response_letter_required: bool | None = None
    key_skills_count: float | None = None  # float: a nullable number survives parquet unchanged

    def to_row(self) -> dict[str, Any]:
        """A flat dict for DataFrames; roles are joined with ``|``."""
        row = asdict(self)
        row["professional_roles"] = "|".join(self.professional_roles)
        return row


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(VacancyRecord))


def parse_item(item: Mapping[str, Any], collected_at: datetime | str | None = None) -> VacancyRecord:
    """Parse one API search item (or ``/vacancies/{id}`` object) into a record.

    ``collected_at`` from the item itself wins over the argument (file imports
    carry their own).
    """
    if not isinstance(item, Mapping):
        raise RecordError("item", f"expected an object, got {type(item).__name__}")
    vid = _str(item.get("id"), "id")
    if not vid:
        raise RecordError("id", "missing")
    salary = _obj(item, "salary")
    snippet = _obj(item, "snippet")
    area = _obj(item, "area")
    employer = _obj(item, "employer")
    gross = salary.get("gross")
    if gross is not None and not isinstance(gross, bool):
        raise RecordError("salary.gross", f"expected a boolean, got {type(gross).__name__}")
    archived = item.get("archived")
    if archived is not None and not isinstance(archived, bool):
        raise RecordError("archived", f"expected a boolean, got {type(archived).__name__}")
    roles = item.get("professional_roles") or []
    if not isinstance(roles, list):
        raise RecordError("professional_roles", "expected a list")
    currency = _str(salary.get("currency"), "salary.currency")
    skills = item.get("key_skills")
    if skills is not None and not isinstance(skills, list):
        raise RecordError("key_skills", "expected a list")
    return VacancyRecord(
        id=vid,
        name=_str(item.get("name"), "name"),
        responsibility=_str(snippet.get("responsibility"), "snippet.responsibility"),
        requirement=_str(snippet.get("requirement"), "snippet.requirement"),
        salary_from=_num(salary.get("from"), "salary.from"),
        salary_to=_num(salary.get("to"), "salary.to"),
        salary_currency=currency.upper() if currency else None,
        salary_gross=gross,
        area_id=_str(area.get("id"), "area.id"),
        area_name=_str(area.get("name"), "area.name"),
        employer_id=_str(employer.get("id"), "employer.id"),
        employer_name=_str(employer.get("name"), "employer.name"),
        published_at=parse_datetime(item.get("published_at"), "published_at"),
        created_at=parse_datetime(item.get("created_at"), "created_at"),
        initial_created_at=parse_datetime(item.get("initial_created_at"), "initial_created_at"),
        archived=archived,
        experience=dictionary_id("experience", _obj(item, "experience")),
        schedule=dictionary_id("schedule", _obj(item, "schedule")),
        employment=dictionary_id("employment", _obj(item, "employment")),
        professional_roles=role_keys(roles),
        collected_at=parse_datetime(item.get("collected_at") or collected_at, "collected_at"),
        has_test=_bool(item.get("has_test"), "has_test"),
        response_letter_required=_bool(item.get("response_letter_required"), "response_letter_required"),
        key_skills_count=None if skills is None else float(len(skills)),
    )


def dedup_items(items: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Yield items whose ``id`` value was not seen before (first occurrence wins)."""
    seen: set[str] = set()
    for item in items:
        vid = str(item.get("id"))
        if vid in seen:
            continue
        seen.add(vid)
        yield item
