"""Pure request parsing and response building for the predictor (no kserve imports).

Every rejection raises :class:`RequestError` with an exact message and a short
``reason`` label (used for the ``hhpulse_rejected_requests_total`` counter).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hhpulse.model.inputs import INPUT_FIELDS, InputError, Instance, check_instance, check_text


class RequestError(ValueError):
    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Request limits (all configurable on the command line)."""

    max_instances: int = 1000
    max_text_chars: int = 5000
    max_body_bytes: int = 2 * 1024 * 1024


def _checked(fn, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
    """Run a check of the shared input contract; its refusals become 400s with the same text."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        raise RequestError(exc.reason, str(exc)) from None


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError("no_instances", "the request holds no instances")
    if n > limits.max_instances:
        raise RequestError(
            "too_many_instances", f"{n} instances, over the limit of {limits.max_instances} per request"
        )


def parse_v1(payload: Any, limits: Limits, fields: Sequence[str] = INPUT_FIELDS) -> list[Instance]:
    """``{"instances": [str | {"responsibility", "name"?, "requirement"?}, ...]}``.

    Each instance is checked by :func:`hhpulse.model.inputs.check_instance`, as ``hhpulse predict``
    checks each line; ``fields`` are the model's input fields (for the name/requirement fallback).
    """
    if not isinstance(payload, Mapping):
        raise RequestError("bad_body", f"the body must be a JSON object, got {type(payload).__name__}")
    if "instances" not in payload:
        raise RequestError("missing_instances", "the body has no 'instances' list (v1 protocol)")
    items = payload["instances"]
    if not isinstance(items, list):
        raise RequestError("bad_instances", f"'instances' must be a list, got {type(items).__name__}")
    _check_count(len(items), limits)
    return [
        _checked(check_instance, item, f"instances[{i}]", fields=fields, max_chars=limits.max_text_chars)
        for i, item in enumerate(items)
    ]


def v1_predictions(preds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"predictions": list(preds)}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


def parse_v2(
    tensors: Sequence[Tensor], limits: Limits, fields: Sequence[str] = INPUT_FIELDS
) -> list[Instance]:
    """BYTES tensors ``responsibility`` (required), ``name`` and ``requirement`` of shape [N] or [N, 1]."""
    if not tensors:
        raise RequestError("missing_inputs", "the request has no 'inputs' (v2 protocol)")
    by_name: dict[str, Tensor] = {}
    for t in tensors:
        if t.name not in INPUT_FIELDS:
            raise RequestError(
                "unknown_input", f"unknown input tensor {t.name!r}; allowed: {list(INPUT_FIELDS)}"
            )
        if t.datatype != "BYTES":
            raise RequestError("bad_datatype", f"input {t.name!r} must have datatype BYTES, got {t.datatype}")
        if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            raise RequestError("bad_shape", f"input {t.name!r} must have shape [N] or [N, 1], got {t.shape}")
        if len(t.data) != t.shape[0]:
            raise RequestError("bad_shape", f"input {t.name!r}: shape {t.shape} but {len(t.data)} values")
        by_name[t.name] = t
    if "responsibility" not in by_name:
        raise RequestError("missing_responsibility", "the 'responsibility' input tensor is required")
    n = by_name["responsibility"].shape[0]
    for t in by_name.values():
        if t.shape[0] != n:
            raise RequestError(
                "bad_shape", f"input {t.name!r} has {t.shape[0]} rows, 'responsibility' has {n}"
            )
    _check_count(n, limits)

    def col(name: str, i: int) -> str | None:
        if name not in by_name:
            return None
        v = by_name[name].data[i]
        if isinstance(v, (bytes, bytearray)):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("bad_encoding", f"{name}[{i}]: not valid UTF-8") from None
        return _checked(check_text, v, f"{name}[{i}]", max_chars=limits.max_text_chars)  # type: ignore[no-any-return]

    return [
        _checked(
            check_instance, {f: col(f, i) for f in INPUT_FIELDS}, f"row {i}", fields=fields, max_chars=None
        )
        for i in range(n)
    ]


def request_id(given: str | None) -> str:
    return given or str(uuid.uuid4())
