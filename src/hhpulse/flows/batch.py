"""Batch prediction over JSON lines: every row that can be predicted is, the rest get an error.

Each non-blank line is checked by the shared input contract (:mod:`hhpulse.model.inputs`, the
same check the HTTP predictor makes) and becomes, in order, either a prediction
``{"id"?, "salary", "demand", "model_version", "fields_used"}`` or an error record
``{"id", "line", "reason", "error"}``. A line that is not JSON, not UTF-8, not an object or
a string, has a field of the wrong type, or has no text the model reads, is such an error;
it never stops the batch unless ``strict`` is set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from hhpulse.data.store import gunzipped
from hhpulse.model.bundle import ModelBundle
from hhpulse.model.inputs import InputError, Instance, check_instance, fields_used


class BatchError(ValueError):
    """``strict`` mode: the first row that cannot be predicted."""


@dataclass
class BatchTally:
    """What a batch did: rows read, predicted, failed by reason, predicted without responsibility."""

    rows: int = 0
    predicted: int = 0
    fallback: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def all_failed(self) -> bool:
        return self.rows > 0 and self.predicted == 0

    def summary(self) -> str:
        text = f"{self.rows} rows: {self.predicted} predicted"
        if self.fallback:
            text += f" ({self.fallback} from name/requirement, without a responsibility)"
        text += f", {self.failed_total} failed"
        if self.failed:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.failed.items())) + ")"
        return text


def open_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream (a file or stdin), gunzipped when it starts with gzip's magic."""
    yield from gunzipped(stream)


def parse_line(raw: bytes, fields: Iterable[str]) -> tuple[str | None, Instance | InputError]:
    """(id, instance) of one non-blank line, or (id, the reason it cannot be predicted)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, InputError("bad_encoding", f"not valid UTF-8 at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return None, InputError("bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    vid = _id_of(obj)
    try:
        return vid, check_instance(obj, fields=tuple(fields), api_items=True)
    except InputError as exc:
        return vid, exc


def good_instances(lines: Iterable[bytes], fields: Iterable[str]) -> list[Instance]:
    """The instances of the lines that can be predicted (for a whole-input estimate such as EM priors)."""
    out = []
    for raw in lines:
        if raw.strip():
            inst = parse_line(raw, fields)[1]
            if isinstance(inst, Instance):
                out.append(inst)
    return out


def _id_of(obj: Any) -> str | None:
    if isinstance(obj, dict) and obj.get("id") is not None and not isinstance(obj["id"], (dict, list)):
        return str(obj["id"])
    return None


def predict_lines(
    bundle: ModelBundle,
    lines: Iterable[bytes],
    tally: BatchTally,
    *,
    batch_size: int = 2048,
    strict: bool = False,
    source: str = "input",
    priors: Mapping[str, Mapping[str, float]] | None = None,
    explain: bool = False,
) -> Iterator[list[dict[str, Any]]]:
    """Yield output records in input order, a batch at a time (predictions are vectorized per batch).

    ``tally`` is updated as rows go by. With ``strict``, the first bad row raises
    :class:`BatchError` naming ``source`` and the line number. ``priors`` shift the cohort
    priors (:meth:`ModelBundle.predict`); ``explain`` adds each prediction's ``explanation``.
    """
    fields = bundle.input_fields
    pending: list[tuple[int, str | None, Instance | InputError]] = []

    def flush() -> list[dict[str, Any]]:
        good = [inst for _, _, inst in pending if isinstance(inst, Instance)]
        preds = iter(bundle.predict(good, priors=priors) if good else [])
        explained = iter(bundle.explain(good) if good and explain else [])
        out: list[dict[str, Any]] = []
        for n, vid, inst in pending:
            if isinstance(inst, InputError):
                out.append({"id": vid, "line": n, "reason": inst.reason, "error": str(inst)})
                continue
            used = fields_used(inst, fields)
            tally.predicted += 1
            tally.fallback += "responsibility" not in used
            record = {**({"id": vid} if vid is not None else {}), **next(preds), "fields_used": used}
            if explain:
                record["explanation"] = {t: v for t, v in next(explained).items() if t != "model_version"}
            out.append(record)
        pending.clear()
        return out

    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        tally.rows += 1
        vid, inst = parse_line(raw, fields)
        if isinstance(inst, InputError):
            if strict:
                raise BatchError(f"{source}:{n}: {inst}")
            tally.failed[inst.reason] += 1
        pending.append((n, vid, inst))
        if len(pending) >= max(1, batch_size):
            yield flush()
    if pending:
        yield flush()
