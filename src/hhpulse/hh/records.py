"""Typed vacancy records parsed from hh.ru API search items.

This is where the original prototype's parsing bugs are fixed:

* ``salary_to`` comes from ``salary.to`` (the prototype copied ``salary.from``);
* ``employer_name`` comes from ``employer.name`` (the prototype stored the id);
* duplicate ids are detected on the id *values* (see :func:`dedup_items`), not on a
  pandas index.

Parsing is tolerant of missing or null nested objects (older dumps, third-party
exports); type errors in fields we rely on raise :class:`RecordError` with the
field name, so validation can quarantine the row with an exact reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

# Known hh.ru currency codes (RUR is the API's code for the rouble).
KNOWN_CURRENCIES = frozenset({"RUR", "USD", "EUR", "KZT", "BYR", "UZS", "KGS", "AZN", "GEL", "UAH"})


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
        experience=_str(_obj(item, "experience").get("id"), "experience.id"),
        schedule=_str(_obj(item, "schedule").get("id"), "schedule.id"),
        employment=_str(_obj(item, "employment").get("id"), "employment.id"),
        professional_roles=tuple(
            str(r.get("id")) for r in roles if isinstance(r, Mapping) and r.get("id") is not None
        ),
        collected_at=parse_datetime(item.get("collected_at") or collected_at, "collected_at"),
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
