"""The input contract: what one vacancy to predict may look like, for batch and HTTP alike.

``hhpulse predict`` (JSON lines), the KServe predictor (v1 instances, v2 tensors) and the
pipeline all turn their input into an :class:`Instance` through
:func:`check_instance` (or :func:`check_text` for one field), so an input is accepted or
refused the same way everywhere, with the same reason label and text.

The contract:

* an instance is a string (the responsibility text), an object
  ``{"responsibility", "name"?, "requirement"?}``, or (batch only) an hh.ru API search item,
  whose ``snippet.responsibility``, ``snippet.requirement`` and ``name`` are read;
* an object may carry the vacancy's ``id`` (a string or an integer, at most
  :data:`MAX_ID_CHARS` characters; ``bad_id`` otherwise): the model ignores it, and the
  prediction log (KServe's logger, ``hhpulse logsink``) keeps it, so that live accuracy can
  be scored once the vacancy resolves;
* each field is a string or null; anything else is refused (``non_string_field``);
* a field may be at most ``max_chars`` characters when a limit is set (``text_too_long``);
* the responsibility is the main input. When it is missing or blank, the instance is still
  predicted from ``name`` and/or ``requirement`` if the model reads those fields (the
  fallback); :func:`fields_used` says which fields carried text. With no text in any field
  the model reads, the instance is refused (``missing_responsibility`` or
  ``empty_responsibility``);
* an object may also carry the vacancy's **structured fields** (:data:`STRUCTURED_FIELDS`:
  experience, schedule, employment, area, employer, professional roles, key skills count,
  has test, response letter, salary stated), which the XGBoost candidates read
  (:class:`hhpulse.model.features.DenseInput`). Each is optional: a missing one is missing
  (the trees have a branch for it), never an error; one of the wrong type is refused
  (``bad_field``). An API search item gives them from its own objects
  (:func:`item_fields`).

A field that states the salary (``salary_stated``) never feeds the salary task: each
structured field names the tasks that may read it (:attr:`StructuredField.tasks`), a field in
:data:`STATES_SALARY` cannot name the salary task, and the tree input of a task reads only
:func:`task_fields` of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

from hhpulse.hh.records import RecordError, dictionary_id, role_keys

INPUT_FIELDS = ("responsibility", "name", "requirement")
FALLBACK_FIELDS = ("name", "requirement")
ID_KEY = "id"  # the vacancy id an object may carry; not an input of the model
MAX_ID_CHARS = 64


TASK_NAMES = ("salary", "demand")
# Structured fields that state or imply the salary: never an input of the salary task
STATES_SALARY = frozenset({"salary_stated"})


@dataclass(frozen=True)
class StructuredField:
    """One structured field of a vacancy: its name in an instance (and in a dataset's rows),
    its kind (``category``: one value; ``categories``: a list; ``count``: an integer >= 0;
    ``flag``: a boolean), the tasks whose models may read it, and what it is."""

    name: str
    kind: str
    tasks: tuple[str, ...]
    doc: str

    def __post_init__(self) -> None:
        if self.kind not in ("category", "categories", "count", "flag"):
            raise ValueError(f"structured field {self.name}: unknown kind {self.kind!r}")
        if not set(self.tasks) <= set(TASK_NAMES):
            raise ValueError(f"structured field {self.name}: unknown tasks {self.tasks}")
        if self.name in STATES_SALARY and "salary" in self.tasks:
            raise ValueError(
                f"structured field {self.name} states the salary: it cannot feed the salary task"
            )


BOTH = ("salary", "demand")
STRUCTURED_FIELDS: tuple[StructuredField, ...] = (
    StructuredField("experience", "category", BOTH, "experience id: noExperience, between1And3, ..."),
    StructuredField("schedule", "category", BOTH, "schedule id: fullDay, remote, flexible, shift, ..."),
    StructuredField("employment", "category", BOTH, "employment id: full, part, project, probation, ..."),
    StructuredField("area", "category", BOTH, "the area's name as hh.ru writes it (area.name)"),
    StructuredField("employer", "category", BOTH, "the employer's hh.ru id (employer.id)"),
    StructuredField("professional_roles", "categories", BOTH, "professional role ids (or names)"),
    StructuredField("key_skills_count", "count", BOTH, "how many key skills the vacancy lists"),
    StructuredField("has_test", "flag", BOTH, "whether applying takes a test"),
    StructuredField("response_letter_required", "flag", BOTH, "whether a cover letter is required"),
    StructuredField("salary_stated", "flag", ("demand",), "whether the vacancy states a salary"),
)
STRUCTURED_NAMES = tuple(f.name for f in STRUCTURED_FIELDS)


def task_fields(task: str) -> tuple[StructuredField, ...]:
    """The structured fields the models of ``task`` may read (never one that states the salary
    for the salary task)."""
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}")
    out = tuple(f for f in STRUCTURED_FIELDS if task in f.tasks)
    assert task != "salary" or not {f.name for f in out} & STATES_SALARY
    return out


@dataclass(frozen=True)
class Instance:
    """One input: the responsibility text (required), the optional title and requirement, and
    the optional structured fields (None, or an empty tuple of roles: missing)."""

    responsibility: str
    name: str | None = None
    requirement: str | None = None
    experience: str | None = None
    schedule: str | None = None
    employment: str | None = None
    area: str | None = None
    employer: str | None = None
    professional_roles: tuple[str, ...] | None = None
    key_skills_count: int | None = None
    has_test: bool | None = None
    response_letter_required: bool | None = None
    salary_stated: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field (texts, then structured; None where missing; roles as a list)."""
        out: dict[str, Any] = {
            "responsibility": self.responsibility,
            "name": self.name,
            "requirement": self.requirement,
        }
        for f in STRUCTURED_NAMES:
            v = getattr(self, f)
            out[f] = list(v) if isinstance(v, tuple) else v
        return out

    def structured(self) -> dict[str, Any]:
        """The structured fields that are present."""
        return {f: v for f in STRUCTURED_NAMES if (v := getattr(self, f)) is not None}


assert tuple(f.name for f in dataclass_fields(Instance))[3:] == STRUCTURED_NAMES


def to_instance(value: Any) -> Instance:
    """A string, a ``{"responsibility", "name", "requirement"}`` mapping, or an API search item."""
    if isinstance(value, Instance):
        return value
    if isinstance(value, str):
        return Instance(value)
    if isinstance(value, Mapping):
        snippet = value.get("snippet")
        if isinstance(snippet, Mapping) and "responsibility" not in value:
            return Instance(
                str(snippet.get("responsibility") or ""),
                _opt(value.get("name")),
                _opt(snippet.get("requirement")),
                **_lenient(item_fields, value),
            )
        return Instance(
            str(value.get("responsibility") or ""),
            _opt(value.get("name")),
            _opt(value.get("requirement")),
            **_lenient(check_structured, value),
        )
    raise TypeError(f"an instance must be a string or an object, got {type(value).__name__}")


def _lenient(fn, value: Mapping[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """``fn(value)``, or no structured fields when they break the contract (to_instance takes
    what it is given; check_instance is where inputs are refused)."""
    try:
        return fn(value)  # type: ignore[no-any-return]
    except InputError:
        return {}


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)


class InputError(ValueError):
    """An input that breaks the contract: ``reason`` is a short label, ``str()`` the full text."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _where(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def check_text(value: Any, where: str, *, max_chars: int | None = None) -> str | None:
    """One text field: ``None`` or a string within ``max_chars``; ``where`` names it in messages."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("non_string_field", f"{where}: must be a string, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise InputError("text_too_long", f"{where}: {len(value)} characters, over the limit of {max_chars}")
    return value


def _structured_value(f: StructuredField, value: Any, where: str) -> Any:
    """One structured field checked and normalized (None: missing)."""
    if value is None:
        return None
    bad = None
    if f.kind == "category":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            bad = "a string"
        else:
            text = str(value).strip()
            if f.name in ("experience", "schedule", "employment"):
                text = dictionary_id(f.name, text) or ""
            return text or None
    elif f.kind == "categories":
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (str, int)) for v in value
        ):
            bad = "a list of strings"
        else:
            return tuple(str(v).strip() for v in value if str(v).strip())
    elif f.kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            bad = "an integer >= 0"
        else:
            return value
    elif not isinstance(value, bool):
        bad = "true or false"
    else:
        return value
    raise InputError("bad_field", f"{where}: must be {bad}, got {value!r}"[:300])


def check_structured(value: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The structured fields of a plain instance object, checked (missing ones left out)."""
    out = {}
    for f in STRUCTURED_FIELDS:
        v = _structured_value(f, value.get(f.name), _where(where, f.name))
        if v is not None:
            out[f.name] = v
    return out


def item_fields(item: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The structured fields of an hh.ru API item (search item or ``/vacancies/{id}``), as
    :func:`hhpulse.hh.records.parse_item` reads them for the history (missing ones left out)."""

    def obj(key: str) -> Mapping[str, Any]:
        v = item.get(key)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise InputError("bad_field", f"{_where(where, key)}: must be an object, got {type(v).__name__}")
        return v

    try:
        raw: dict[str, Any] = {k: dictionary_id(k, obj(k)) for k in ("experience", "schedule", "employment")}
    except RecordError as exc:
        raise InputError("bad_field", f"{_where(where, exc.field)}: {exc}") from None
    employer = obj("employer")
    raw["area"] = obj("area").get("name")
    raw["employer"] = employer.get("id") if employer.get("id") is not None else employer.get("name")
    roles = item.get("professional_roles")
    if roles is not None:
        if not isinstance(roles, list):
            raise InputError("bad_field", f"{_where(where, 'professional_roles')}: must be a list")
        roles = list(role_keys(roles))
    raw["professional_roles"] = roles
    skills = item.get("key_skills")
    if skills is not None and not isinstance(skills, list):
        raise InputError("bad_field", f"{_where(where, 'key_skills')}: must be a list")
    raw["key_skills_count"] = None if skills is None else len(skills)
    raw["has_test"] = item.get("has_test")
    raw["response_letter_required"] = item.get("response_letter_required")
    salary = obj("salary")  # an item states no salary with "salary": null; one without the key says nothing
    raw["salary_stated"] = (
        (salary.get("from") is not None or salary.get("to") is not None) if "salary" in item else None
    )
    return check_structured(raw, where)


def _check_id(value: Any, where: str) -> None:
    """The optional vacancy id of an instance: a string or an integer (not a bool), not too long."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError("bad_id", f"{where}: must be a string or an integer, got {type(value).__name__}")
    if len(str(value)) > MAX_ID_CHARS:
        raise InputError("bad_id", f"{where}: over {MAX_ID_CHARS} characters")


def is_api_item(value: Mapping[str, Any]) -> bool:
    """An hh.ru search item keeps its texts in ``snippet``; the plain form has ``responsibility``."""
    return "snippet" in value and "responsibility" not in value


def check_instance(
    value: Any,
    where: str = "",
    *,
    fields: Sequence[str] = INPUT_FIELDS,
    max_chars: int | None = None,
    api_items: bool = False,
) -> Instance:
    """Check one input against the contract and return it as an :class:`Instance`.

    Args:
        value: a string, a ``{"responsibility", "name", "requirement"}`` object or, with
            ``api_items``, an hh.ru API search item.
        where: how messages name the instance (``instances[3]``, ``line 16``); may be empty.
        fields: the input fields the model reads (``ModelBundle.input_fields``); the
            fallback uses ``name``/``requirement`` only when they are among them.
        max_chars: the longest text allowed per field (None: no limit).
        api_items: accept API search items, and ignore keys other than the input fields
            (batch files carry ``id`` and the rest of the item). Without it (HTTP), an
            object with any other key is refused (``unknown_field``).
    """
    prefix = f"{where}: " if where else ""
    structured: dict[str, Any] = {}
    if isinstance(value, str):
        texts: dict[str, Any] = {"responsibility": check_text(value, where or "text", max_chars=max_chars)}
    elif isinstance(value, Mapping):
        if api_items and is_api_item(value):
            snippet = value.get("snippet")
            if snippet is None:
                snippet = {}
            if not isinstance(snippet, Mapping):
                raise InputError(
                    "bad_instance", f"{prefix}snippet must be an object, got {type(snippet).__name__}"
                )
            texts = {
                "responsibility": snippet.get("responsibility"),
                "name": value.get("name"),
                "requirement": snippet.get("requirement"),
            }
            where_of = {"responsibility": "snippet.responsibility", "requirement": "snippet.requirement"}
            structured = item_fields(value, where)
        else:
            if not api_items:
                allowed = [*INPUT_FIELDS, ID_KEY, *STRUCTURED_NAMES]
                unknown = sorted(set(value) - set(allowed))
                if unknown:
                    raise InputError(
                        "unknown_field", f"{prefix}unknown field(s) {unknown}; allowed: {allowed}"
                    )
                _check_id(value.get(ID_KEY), _where(where, ID_KEY))
            texts = {f: value.get(f) for f in INPUT_FIELDS}
            where_of = {}
            structured = check_structured(value, where)
        texts = {
            f: check_text(v, _where(where, where_of.get(f, f)), max_chars=max_chars) for f, v in texts.items()
        }
    else:
        raise InputError("bad_instance", f"{prefix}must be a string or an object, got {type(value).__name__}")
    inst = Instance(
        texts.get("responsibility") or "",
        texts.get("name"),
        texts.get("requirement"),
        **structured,
    )
    if not fields_used(inst, fields):
        fallback = [f for f in FALLBACK_FIELDS if f in fields]
        alt = ""
        if fallback and not isinstance(value, str):
            alt = f", and there is no {' or '.join(fallback)} to predict from"
        if texts.get("responsibility") is None and not isinstance(value, str):
            raise InputError("missing_responsibility", f"{prefix}'responsibility' is required{alt}")
        raise InputError("empty_responsibility", f"{prefix}the responsibility text is empty{alt}")
    return inst


def fields_used(inst: Instance, fields: Sequence[str] = INPUT_FIELDS) -> list[str]:
    """The model's input fields that carry text in ``inst``, in the contract's order."""
    values = inst.as_dict()
    return [f for f in INPUT_FIELDS if f in fields and (values.get(f) or "").strip()]


# -- JSON bodies: the HTTP servers' one parser -------------------------------------------------

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects an HTTP body may have. hhpulse's requests and
answers nest at most 5 deep (a v2 tensor of rows, a v1 prediction's probabilities); Python's
parser would recurse ~1000 levels deep before failing, inside the request's handler."""


class JSONRefused(ValueError):
    """A body that is not strict JSON (RFC 8259), or nests deeper than the limit: ``reason`` is
    the rejection label (``invalid_json``, ``json_too_deep``, ``not_finite``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _no_constant(name: str) -> Any:
    raise JSONRefused("not_finite", f"{name} is not a JSON number: numbers must be finite")


def _finite_float(text: str) -> float:
    import math

    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused("not_finite", f"the number {text[:40]} is too large to be a finite double")
    return value


def loads_strict(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse an HTTP body as strict JSON: no ``NaN``, ``Infinity``, ``-Infinity`` or numbers
    that overflow a double (``1e999``), and at most ``max_depth`` nested arrays and objects.
    Raises :class:`JSONRefused` (a ValueError) saying which."""
    import json

    try:
        doc = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONRefused(
            "json_too_deep", f"the body nests arrays or objects deeper than {max_depth} levels"
        ) from None
    except JSONRefused:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONRefused("invalid_json", f"the body is not valid JSON: {exc}") from None
    if _openings(body) > max_depth and json_depth(doc, max_depth) > max_depth:
        raise JSONRefused("json_too_deep", f"the body nests arrays or objects deeper than {max_depth} levels")
    return doc


def _openings(body: bytes | str) -> int:
    """How many ``[`` and ``{`` ``body`` holds (in strings too): no document of it nests deeper,
    so a body with no more than the limit needs no walk of its parsed document."""
    if isinstance(body, str):
        return body.count("[") + body.count("{")
    return body.count(b"[") + body.count(b"{")


def json_depth(doc: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``doc``'s arrays and objects nest (a scalar: 0), counted without recursion;
    stops counting past ``limit`` (returns ``limit + 1``)."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
