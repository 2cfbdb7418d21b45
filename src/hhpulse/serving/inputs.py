"""Pure request parsing and response building for the predictor (no kserve imports).

Every rejection raises :class:`RequestError` with an exact message and a short
``reason`` label (used for the ``hhpulse_rejected_requests_total`` counter).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hhpulse.bundle import INPUT_FIELDS, Instance


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


def _text(value: Any, where: str, limits: Limits, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise RequestError("missing_responsibility", f"{where}: 'responsibility' is required")
        return None
    if not isinstance(value, str):
        raise RequestError("non_string_field", f"{where}: must be a string, got {type(value).__name__}")
    if len(value) > limits.max_text_chars:
        raise RequestError(
            "text_too_long", f"{where}: {len(value)} characters, over the limit of {limits.max_text_chars}"
        )
    if required and not value.strip():
        raise RequestError("empty_responsibility", f"{where}: the responsibility text is empty")
    return value


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError("no_instances", "the request holds no instances")
    if n > limits.max_instances:
        raise RequestError(
            "too_many_instances", f"{n} instances, over the limit of {limits.max_instances} per request"
        )


def parse_v1(payload: Any, limits: Limits) -> list[Instance]:
    """``{"instances": [str | {"responsibility", "name"?, "requirement"?}, ...]}``."""
    if not isinstance(payload, Mapping):
        raise RequestError("bad_body", f"the body must be a JSON object, got {type(payload).__name__}")
    if "instances" not in payload:
        raise RequestError("missing_instances", "the body has no 'instances' list (v1 protocol)")
    items = payload["instances"]
    if not isinstance(items, list):
        raise RequestError("bad_instances", f"'instances' must be a list, got {type(items).__name__}")
    _check_count(len(items), limits)
    out = []
    for i, item in enumerate(items):
        where = f"instances[{i}]"
        if isinstance(item, str):
            out.append(Instance(_text(item, where, limits, required=True)))  # type: ignore[arg-type]
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - set(INPUT_FIELDS))
            if unknown:
                raise RequestError(
                    "unknown_field", f"{where}: unknown field(s) {unknown}; allowed: {list(INPUT_FIELDS)}"
                )
            out.append(
                Instance(
                    _text(item.get("responsibility"), f"{where}.responsibility", limits, required=True),  # type: ignore[arg-type]
                    _text(item.get("name"), f"{where}.name", limits, required=False),
                    _text(item.get("requirement"), f"{where}.requirement", limits, required=False),
                )
            )
        else:
            raise RequestError(
                "bad_instance", f"{where}: must be a string or an object, got {type(item).__name__}"
            )
    return out


def v1_predictions(preds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"predictions": list(preds)}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


def parse_v2(tensors: Sequence[Tensor], limits: Limits) -> list[Instance]:
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
        return _text(v, f"{name}[{i}]", limits, required=name == "responsibility")

    return [Instance(col("responsibility", i), col("name", i), col("requirement", i)) for i in range(n)]  # type: ignore[arg-type]


def request_id(given: str | None) -> str:
    return given or str(uuid.uuid4())
