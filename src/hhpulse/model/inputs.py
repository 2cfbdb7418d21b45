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
  ``empty_responsibility``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INPUT_FIELDS = ("responsibility", "name", "requirement")
FALLBACK_FIELDS = ("name", "requirement")
ID_KEY = "id"  # the vacancy id an object may carry; not an input of the model
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class Instance:
    """One input: the responsibility text (required) and the optional title and requirement."""

    responsibility: str
    name: str | None = None
    requirement: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"responsibility": self.responsibility, "name": self.name, "requirement": self.requirement}


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
            )
        return Instance(
            str(value.get("responsibility") or ""), _opt(value.get("name")), _opt(value.get("requirement"))
        )
    raise TypeError(f"an instance must be a string or an object, got {type(value).__name__}")


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
        else:
            if not api_items:
                unknown = sorted(set(value) - {*INPUT_FIELDS, ID_KEY})
                if unknown:
                    raise InputError(
                        "unknown_field",
                        f"{prefix}unknown field(s) {unknown}; allowed: {[*INPUT_FIELDS, ID_KEY]}",
                    )
                _check_id(value.get(ID_KEY), _where(where, ID_KEY))
            texts = {f: value.get(f) for f in INPUT_FIELDS}
            where_of = {}
        texts = {
            f: check_text(v, _where(where, where_of.get(f, f)), max_chars=max_chars) for f, v in texts.items()
        }
    else:
        raise InputError("bad_instance", f"{prefix}must be a string or an object, got {type(value).__name__}")
    inst = Instance(texts.get("responsibility") or "", texts.get("name"), texts.get("requirement"))
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
