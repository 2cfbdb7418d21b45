"""Pure request parsing and response building for the predictor (no kserve imports).

Every rejection raises :class:`RequestError` with an exact message and a short
``reason`` label (used for the ``hhpulse_rejected_requests_total`` counter).

Besides v1 instances and v2 JSON tensors, it reads the raw tensors of the Open Inference
Protocol: the HTTP binary tensor extension (:func:`binary_request`: a JSON header of
``Inference-Header-Content-Length`` bytes, then each input's ``binary_data_size`` bytes) and
gRPC's ``raw_input_contents``, both through :func:`decode_raw`. A BYTES element there is a
4-byte little-endian length, then that many bytes; other datatypes are packed little-endian.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hhpulse.model.inputs import (
    INPUT_FIELDS,
    InputError,
    Instance,
    JSONRefused,
    check_instance,
    check_text,
    loads_strict,
)


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


# -- raw tensors: the HTTP binary extension and gRPC raw_input_contents ----------------------------

BINARY_HEADER = "inference-header-content-length"  # the length of the JSON header, in bytes

# struct codes of the protocol's fixed-size datatypes (BYTES is length-prefixed; BF16 has no code)
FIXED_SIZE = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_LENGTH = struct.Struct("<I")


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError("bad_shape", f"input {name!r}: 'shape' must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise RequestError("bad_shape", f"input {name!r}: shape {shape} has a negative dimension")
    return shape


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> list[Any]:
    """The elements of one raw tensor (row-major), checked against its datatype and shape.

    BYTES elements come back as ``bytes`` (:func:`parse_v2` decodes them as UTF-8 and says
    which one is not); a tensor whose bytes do not hold exactly ``prod(shape)`` elements is
    refused with what it holds."""
    count = math.prod(shape)
    if datatype == "BYTES":
        if count * _LENGTH.size > len(raw):
            raise RequestError(
                "bad_binary_tensor",
                f"input {name!r}: shape {list(shape)} needs {count} BYTES elements, "
                f"more than its {len(raw)} bytes can hold",
            )
        values, at, view = [], 0, memoryview(raw)
        for i in range(count):
            if at + _LENGTH.size > len(raw):
                raise RequestError(
                    "bad_binary_tensor",
                    f"input {name!r}: its {len(raw)} bytes end before element {i} of {count}",
                )
            (size,) = _LENGTH.unpack_from(raw, at)
            at += _LENGTH.size
            if at + size > len(raw):
                raise RequestError(
                    "bad_binary_tensor",
                    f"input {name!r}: element {i} declares {size} bytes, past the end of the tensor's {len(raw)}",
                )
            values.append(bytes(view[at : at + size]))
            at += size
        if at != len(raw):
            raise RequestError(
                "bad_binary_tensor",
                f"input {name!r}: {len(raw) - at} bytes left over after its {count} BYTES elements",
            )
        return values
    code = FIXED_SIZE.get(datatype)
    if code is None:
        raise RequestError(
            "bad_datatype", f"input {name!r}: unknown datatype {datatype!r}; known: {['BYTES', *FIXED_SIZE]}"
        )
    need = count * struct.calcsize("<" + code)
    if need != len(raw):
        raise RequestError(
            "bad_binary_tensor",
            f"input {name!r}: shape {list(shape)} of {datatype} needs {need} bytes, got {len(raw)}",
        )
    return list(struct.unpack(f"<{count}{code}", raw))


def binary_request(body: bytes, header_length: str, limits: Limits) -> dict[str, Any]:
    """Check a body of the HTTP binary tensor extension; returns its JSON header.

    ``header_length`` is the ``Inference-Header-Content-Length`` header. The JSON header must
    be a v2 request whose binary inputs (``parameters.binary_data_size``) declare, in order,
    exactly the bytes that follow it, each a whole tensor of its datatype and shape (a BYTES
    element must also be UTF-8, as the protocol's JSON strings are). Requested ``outputs``
    must be named. The whole body is already within ``limits.max_body_bytes``.
    """
    text = header_length.strip()
    if not text.isdigit():
        raise RequestError(
            "bad_binary_header",
            f"Inference-Header-Content-Length must be a byte count, got {header_length!r}",
        )
    n = int(text)
    if n > len(body):
        raise RequestError(
            "bad_binary_header",
            f"Inference-Header-Content-Length is {n}, but the body has only {len(body)} bytes",
        )
    try:  # strict JSON, nested at most MAX_JSON_DEPTH deep, as a JSON body
        header = loads_strict(body[:n])
    except JSONRefused as exc:
        raise RequestError(
            exc.reason, str(exc).replace("the body", "the JSON header of the binary request", 1)
        ) from None
    if not isinstance(header, Mapping):
        raise RequestError("bad_body", f"the JSON header must be a JSON object, got {type(header).__name__}")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("missing_inputs", "the JSON header has no 'inputs' list (v2 protocol)")
    at = n
    tensors: list[tuple[str, str, list[int], bytes]] = []
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping) or not isinstance(tensor.get("name"), str):
            raise RequestError("bad_inputs", f"inputs[{i}] must be an object with a 'name'")
        name = tensor["name"]
        if not isinstance(tensor.get("datatype"), str):
            raise RequestError("bad_inputs", f"input {name!r} has no 'datatype'")
        shape = check_shape(name, tensor.get("shape"))
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, Mapping) else None
        if size is None:
            if "data" not in tensor:
                raise RequestError(
                    "bad_inputs", f"input {name!r} has neither 'data' nor parameters.binary_data_size"
                )
            continue
        if "data" in tensor:
            raise RequestError(
                "bad_inputs", f"input {name!r} has both 'data' and parameters.binary_data_size"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(
                "bad_binary_size", f"input {name!r}: binary_data_size must be a byte count, got {size!r}"
            )
        if size > limits.max_body_bytes:
            raise RequestError(
                "bad_binary_size",
                f"input {name!r}: binary_data_size {size} is over the body limit of {limits.max_body_bytes} bytes",
            )
        tensors.append((name, tensor["datatype"].upper(), shape, body[at : at + size]))
        at += size
    if at != len(body):
        declared = at - n
        raise RequestError(
            "bad_binary_size",
            f"the binary inputs declare {declared} bytes (binary_data_size), "
            f"but {len(body) - n} follow the JSON header",
        )
    for name, datatype, shape, raw in tensors:
        values = decode_raw(name, datatype, shape, raw)
        if datatype == "BYTES":
            for j, v in enumerate(values):
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    raise RequestError("bad_encoding", f"{name}[{j}]: not valid UTF-8") from None
    outputs = header.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list)
        or not all(isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise RequestError("bad_outputs", "'outputs' must be a list of objects, each with a 'name'")
    return dict(header)


def requested_outputs(
    outputs: Sequence[tuple[str, Mapping[str, Any] | None]] | None,
    parameters: Mapping[str, Any] | None,
    allowed: Sequence[str],
) -> tuple[list[tuple[str, bool]], bool]:
    """The outputs a v2 request asks for, each with whether it goes in binary, and the
    default (``parameters.binary_data_output``); all of ``allowed`` when it names none.

    An output's own ``binary_data`` overrides the default, as in Triton's binary extension."""
    default = (parameters or {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise RequestError("bad_parameters", f"binary_data_output must be true or false, got {default!r}")
    if not outputs:
        return [(name, default) for name in allowed], default
    wanted = []
    for name, params in outputs:
        if name not in allowed:
            raise RequestError("unknown_output", f"unknown output {name!r}; allowed: {list(allowed)}")
        binary = (params or {}).get("binary_data", default)
        if binary is None:
            binary = default
        if not isinstance(binary, bool):
            raise RequestError(
                "bad_parameters", f"output {name!r}: binary_data must be true or false, got {binary!r}"
            )
        wanted.append((name, binary))
    return wanted, default
