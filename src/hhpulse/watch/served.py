"""The served prediction log: what the predictor answered, one JSON record per prediction.

Who writes it: ``hhpulse logsink`` (KServe's logger posts each request and response as a
CloudEvent; the sink pairs them and turns them into records with :func:`records_from_v1`),
and ``hhpulse replay`` (its live hook logs the simulated day's predictions the same way).
Who reads it: ``hhpulse monitor`` and the pipeline's monitoring step (:func:`read_served`).

Key layout, one gzipped JSON-lines object per batch::

    served/<YYYY-MM-DD>/<HH>-<uuid4 hex>.jsonl.gz

where the date and hour are UTC, those of the batch's first record. One record a line::

    {"time": "2026-03-01T09:15:02.120Z",      # ISO-8601 UTC: when the prediction was made
     "model_version": "20260301-0700-ab12cd",  # the bundle that answered
     "request_id": "5f0c...",                  # the CloudEvent id (or the request's id)
     "id": "91234567" | null,                  # the vacancy id, when the caller sent one
     "instance": {"responsibility": "...", "name"?: "...", "requirement"?: "...", "id"?: "..."},
     "salary": {"cohort": "mid", "probabilities": {"low": 0.2, "mid": 0.5, "high": 0.3}},
     "demand": {"cohort": "high", "probabilities": {"high": 0.6, "medium": 0.3, "low": 0.1}}}

:class:`ServedLogWriter` buffers records and writes a batch when it holds ``max_records``
records or ``max_bytes`` bytes, when its oldest record is ``max_seconds`` old (on the next
:meth:`~ServedLogWriter.add` or :meth:`~ServedLogWriter.flush_due`), and on
:meth:`~ServedLogWriter.flush`. Each batch is one atomic store write (a new key, never an
overwrite). Memory is bounded: when the buffer is full and the store refuses the write, the
writer raises :class:`ServedLogFull` and keeps what it holds, so the caller can answer 503 and
have the records sent again. Nothing is dropped in silence.

Pure core: no kserve, no pandas; the store is the only I/O.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import threading
import time as _time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hhpulse.config import TASKS, TEXT_FIELDS
from hhpulse.data.store import Store, StoreError

SERVED_PREFIX = "served/"
SUFFIX = ".jsonl.gz"
RECORD_KEYS = ("time", "model_version", "request_id", "id", "instance", *TASKS)
INSTANCE_KEYS = (*TEXT_FIELDS, "id")

DEFAULT_MAX_RECORDS = 5000
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # of encoded (uncompressed) JSON lines
DEFAULT_MAX_SECONDS = 60.0
BUFFER_BATCHES = 4  # batches an add(write=False) buffer holds while the store writes (or refuses)

_KEY_RE = re.compile(r"^served/(\d{4}-\d{2}-\d{2})/(\d{2})-([0-9a-f]{32})\.jsonl\.gz$")
_FRACTION_RE = re.compile(r"\.(\d+)")


class ServedLogError(ValueError):
    """A record, a request/response pair or a stored batch that breaks the log's format."""


class ServedLogFull(StoreError):
    """The writer's buffer is full and the store refused the batch: retry later (HTTP 503)."""


# -- time ------------------------------------------------------------------------------------


def parse_time(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime (naive means UTC) or an ISO-8601 string
    (``Z`` or an offset; more than six fractional digits, as Go writes them, are cut)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        text = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ServedLogError(f"time {value!r} is not an ISO-8601 timestamp") from None
    if not isinstance(value, datetime):
        raise ServedLogError(f"time must be a datetime or an ISO-8601 string, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def format_time(value: datetime | str) -> str:
    """The log's time format: ISO-8601 UTC with milliseconds and ``Z``."""
    return parse_time(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def served_key(first_time: datetime | str, uid: str | None = None) -> str:
    """The key of a batch whose first record has ``first_time``."""
    t = parse_time(first_time)
    return f"{SERVED_PREFIX}{t:%Y-%m-%d}/{t:%H}-{uid or uuid.uuid4().hex}{SUFFIX}"


def key_hour(key: str) -> datetime | None:
    """The UTC hour a batch key names (its first record's), or None for a key of another shape."""
    m = _KEY_RE.match(key)
    if not m:
        return None
    return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00:00+00:00")


# -- records ---------------------------------------------------------------------------------


def _vacancy_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ServedLogError(f"{where}: 'id' must be a string or an integer, got {type(value).__name__}")
    text = str(value).strip()
    return text or None


def _instance(value: Any, where: str) -> dict[str, str]:
    """The logged form of one request instance: a string is its responsibility text."""
    if isinstance(value, str):
        return {"responsibility": value}
    if not isinstance(value, Mapping):
        raise ServedLogError(
            f"{where}: an instance must be a string or an object, got {type(value).__name__}"
        )
    out: dict[str, str] = {"responsibility": ""}
    for f in TEXT_FIELDS:
        v = value.get(f)
        if v is None:
            continue
        if not isinstance(v, str):
            raise ServedLogError(f"{where}.{f}: must be a string, got {type(v).__name__}")
        out[f] = v
    vid = _vacancy_id(value.get("id"), where)
    if vid is not None:
        out["id"] = vid
    return out


def _task_answer(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ServedLogError(f"{where}: must be an object with 'cohort' and 'probabilities'")
    cohort, probs = value.get("cohort"), value.get("probabilities")
    if not isinstance(cohort, str) or not isinstance(probs, Mapping) or not probs:
        raise ServedLogError(f"{where}: must be an object with 'cohort' and 'probabilities'")
    out = {}
    for c, p in probs.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ServedLogError(f"{where}.probabilities[{c!r}]: must be a number, got {type(p).__name__}")
        if not math.isfinite(p):  # NaN or infinity would make every later mix and PSI NaN
            raise ServedLogError(f"{where}.probabilities[{c!r}]: must be a finite number, got {p}")
        out[str(c)] = float(p)
    if cohort not in out:
        raise ServedLogError(f"{where}: cohort {cohort!r} is not among its probabilities {sorted(out)}")
    return {"cohort": cohort, "probabilities": out}


def make_record(
    *,
    time: datetime | str,
    model_version: str,
    request_id: str,
    instance: Any,
    prediction: Mapping[str, Any],
    where: str = "record",
) -> dict[str, Any]:
    """One log record from a request instance and the prediction the model gave for it
    (``{"salary": {...}, "demand": {...}}``, as ``ModelBundle.predict`` returns it)."""
    if not isinstance(model_version, str) or not model_version:
        raise ServedLogError(f"{where}: model_version must be a non-empty string")
    if not isinstance(request_id, str) or not request_id:
        raise ServedLogError(f"{where}: request_id must be a non-empty string")
    if not isinstance(prediction, Mapping):
        raise ServedLogError(f"{where}: a prediction must be an object, got {type(prediction).__name__}")
    inst = _instance(instance, f"{where}.instance")
    rec: dict[str, Any] = {
        "time": format_time(time),
        "model_version": model_version,
        "request_id": request_id,
        "id": inst.get("id"),
        "instance": inst,
    }
    for t in TASKS:
        rec[t] = _task_answer(prediction.get(t), f"{where}.{t}")
    return rec


def check_record(rec: Any, where: str = "record") -> dict[str, Any]:
    """Validate a record as read back or handed to the writer; returns it normalised."""
    if not isinstance(rec, Mapping):
        raise ServedLogError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        raise ServedLogError(f"{where}: missing key(s) {missing}")
    out = make_record(
        time=rec["time"],
        model_version=rec["model_version"],
        request_id=rec["request_id"],
        instance=rec["instance"],
        prediction=rec,
        where=where,
    )
    vid = _vacancy_id(rec["id"], where)
    if vid != out["id"]:
        raise ServedLogError(f"{where}: 'id' {vid!r} differs from the instance's {out['id']!r}")
    return out


def records_from_v1(
    request_body: Mapping[str, Any],
    response_body: Mapping[str, Any],
    *,
    time: datetime | str,
    model_version: str | None,
    request_id: str,
) -> list[dict[str, Any]]:
    """The records of one KServe v1 exchange: ``{"instances": [...]}`` and the predictor's
    ``{"predictions": [...]}``, paired by position.

    ``model_version`` is the fallback: a prediction that names its own ``model_version`` (as
    hhpulse's predictor's do) is logged with that one. Raises :class:`ServedLogError` when
    the pair does not fit (the sink answers 400).
    """
    if not isinstance(request_body, Mapping) or not isinstance(request_body.get("instances"), list):
        raise ServedLogError("the request is not a v1 body: it has no 'instances' list")
    if not isinstance(response_body, Mapping) or not isinstance(response_body.get("predictions"), list):
        raise ServedLogError("the response is not a v1 answer: it has no 'predictions' list")
    instances, predictions = request_body["instances"], response_body["predictions"]
    if len(instances) != len(predictions):
        raise ServedLogError(
            f"the request has {len(instances)} instances but the response {len(predictions)} predictions"
        )
    out = []
    for i, (inst, pred) in enumerate(zip(instances, predictions, strict=True)):
        if not isinstance(pred, Mapping):
            raise ServedLogError(f"predictions[{i}]: must be an object, got {type(pred).__name__}")
        version = pred.get("model_version") or model_version
        if not version:
            raise ServedLogError(f"predictions[{i}]: no model_version, and none was given")
        out.append(
            make_record(
                time=time,
                model_version=str(version),
                request_id=request_id,
                instance=inst,
                prediction=pred,
                where=f"instances[{i}]",
            )
        )
    return out


def encode_record(rec: Mapping[str, Any]) -> bytes:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def encode_batch(lines: Iterable[bytes]) -> bytes:
    """Gzip the JSON lines (mtime 0: the same records give the same bytes)."""
    return gzip.compress(b"".join(lines), compresslevel=6, mtime=0)


# -- writer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlushResult:
    key: str
    records: int
    bytes: int


class ServedLogWriter:
    """Buffers records and writes them to the store in batches (see the module docstring).

    Args:
        store: where ``served/...`` batches go.
        max_records: a batch is written when the buffer holds this many records.
        max_bytes: ... or this many bytes of encoded JSON lines.
        max_seconds: ... or when its oldest record has waited this long (checked by
            :meth:`add` and :meth:`flush_due`; a sink calls :meth:`flush_due` on a timer).
        clock: seconds, monotonic (``time.monotonic`` by default; tests pass their own).

    The buffer never holds more than ``max_records`` records and ``max_bytes`` bytes, except
    that one :meth:`add` of more than that is taken whole and written at once. With
    ``add(..., write=False)`` (a caller whose timer writes, while :meth:`add` must never wait
    on the store) it holds up to :data:`BUFFER_BATCHES` batches, and :meth:`flush` writes the
    oldest batch's worth at a time. The writer is thread-safe.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        clock: Callable[[], float] = _time.monotonic,
    ) -> None:
        if max_records < 1 or max_bytes < 1 or max_seconds <= 0:
            raise ValueError("max_records, max_bytes and max_seconds must be positive")
        self.store = store
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.clock = clock
        self._lines: list[bytes] = []
        self._times: list[str] = []  # each line's record time (a batch's key is its first's)
        self._size = 0
        self._since: float | None = None
        self._lock = threading.RLock()  # the buffer
        self._flush_lock = threading.RLock()  # one store write at a time; taken before _lock
        self._inflight = 0  # records of the batch being written
        self.written: list[FlushResult] = []  # every batch this writer wrote, in order
        # called after every store write it tries: None when it was written, else the error
        self.on_write: Callable[[StoreError | None], None] | None = None

    @property
    def pending(self) -> int:
        """Records buffered and not yet written (the batch being written included)."""
        return len(self._lines) + self._inflight

    @property
    def pending_bytes(self) -> int:
        return self._size

    def _fits(self, n: int, size: int, batches: int = 1) -> bool:
        return (
            len(self._lines) + n <= batches * self.max_records
            and self._size + size <= batches * self.max_bytes
        )

    def _append(self, lines: list[bytes], time: str) -> None:
        if not self._lines:
            self._since = self.clock()
        self._lines += lines
        self._times += [time] * len(lines)
        self._size += sum(map(len, lines))

    def add(self, records: Sequence[Mapping[str, Any]], *, write: bool = True) -> list[str]:
        """Buffer ``records`` (validated first; a bad one rejects the whole call with
        :class:`ServedLogError`) and write whatever batches are due. Returns the keys written.

        Raises :class:`ServedLogFull` when the records do not fit and the store refuses the
        batch that would make room: nothing of this call is kept, nothing earlier is lost.

        ``write=False`` only buffers, never calling the store (an HTTP handler that must not
        wait on it; a timer writes, see :attr:`full`), up to :data:`BUFFER_BATCHES` batches:
        records that do not fit then raise :class:`ServedLogFull` at once (into an empty
        buffer, one call larger than that is taken whole).
        """
        checked = [check_record(r, f"records[{i}]") for i, r in enumerate(records)]
        if not checked:
            return []
        lines = [encode_record(r) for r in checked]
        size = sum(map(len, lines))
        time = checked[0]["time"]
        written: list[str] = []
        if not write:
            with self._lock:
                if not self._fits(len(lines), size, BUFFER_BATCHES) and self._lines:
                    raise ServedLogFull(
                        f"the served log buffer is full ({self.pending} records, {self.pending_bytes} "
                        "bytes) until the store takes the batches waiting"
                    )
                self._append(lines, time)
            return written
        with self._flush_lock, self._lock:
            if not self._fits(len(lines), size) and self._lines:
                written += self._flush_or_full()
            if not self._fits(len(lines), size):  # one call larger than a batch: write it whole
                try:
                    written.append(self._write(lines, time).key)
                except StoreError as exc:
                    raise ServedLogFull(
                        f"{len(lines)} records are more than one batch holds and the store refused "
                        f"them: {exc}"
                    ) from exc
                return written
            self._append(lines, time)
            if self.full or self._is_due():
                written += self._flush_quietly()
        return written

    @property
    def full(self) -> bool:
        """Whether the buffer holds a whole batch (``max_records`` or ``max_bytes``)."""
        return len(self._lines) >= self.max_records or self._size >= self.max_bytes

    def _flush_or_full(self) -> list[str]:
        try:
            key = self.flush()
        except StoreError as exc:
            raise ServedLogFull(
                f"the served log buffer is full ({self.pending} records, {self.pending_bytes} bytes) "
                f"and the store refused the batch: {exc}"
            ) from exc
        return [key] if key else []

    def _flush_quietly(self) -> list[str]:
        """A flush the caller did not ask for: when the store fails, the records stay
        buffered (the next add or flush tries again, and a full buffer raises)."""
        try:
            key = self.flush()
        except StoreError:
            return []
        return [key] if key else []

    def _is_due(self) -> bool:
        return self._since is not None and self.clock() - self._since >= self.max_seconds

    def flush_due(self) -> str | None:
        """Write the buffer's whole batches, and the rest too once its oldest record has waited
        ``max_seconds``; the last key written, or None."""
        last = None
        with self._flush_lock:
            while True:
                with self._lock:
                    due = self.full or self._is_due()
                if not due:
                    return last
                key = self.flush()
                if key is None:
                    return last
                last = key

    def _write(self, lines: list[bytes], first_time: str) -> FlushResult:
        data = encode_batch(lines)
        key = served_key(first_time)
        try:
            self.store.put_bytes(key, data)  # atomic; a new uuid key, so never an overwrite
        except StoreError as exc:
            if self.on_write is not None:
                self.on_write(exc)
            raise
        result = FlushResult(key=key, records=len(lines), bytes=len(data))
        self.written.append(result)
        if self.on_write is not None:
            self.on_write(None)
        return result

    def _take(self) -> int:
        """How many lines from the front make the next batch: up to ``max_records`` records
        and ``max_bytes`` bytes, at least one."""
        n, size = 0, 0
        for line in self._lines[: self.max_records]:
            if n and size + len(line) > self.max_bytes:
                break
            n, size = n + 1, size + len(line)
        return n

    def flush(self) -> str | None:
        """Write the oldest batch's worth of buffered records (all of them, unless the buffer
        holds more than a batch); its key, or None when there was nothing. On a store error
        the records stay buffered (ahead of any added meanwhile) and the error propagates.
        While the batch is being written, :meth:`add` goes on buffering."""
        with self._flush_lock:
            with self._lock:
                if not self._lines:
                    return None
                n = self._take()
                lines, times = self._lines[:n], self._times[:n]
                size, since = sum(map(len, lines)), self._since
                self._lines, self._times = self._lines[n:], self._times[n:]
                self._size -= size
                self._since = since if self._lines else None
                self._inflight = n
            try:
                result = self._write(lines, times[0])
            except BaseException:
                with self._lock:  # back in front, in order: nothing is lost
                    self._lines, self._times = lines + self._lines, times + self._times
                    self._size += size
                    self._since = since if self._since is None else min(since or 0.0, self._since)
                raise
            finally:
                self._inflight = 0
            return result.key

    def close(self) -> str | None:
        """Flush what is left (a sink calls this on SIGTERM); the last key written, or None."""
        key = None
        with self._flush_lock:
            while self._lines:
                key = self.flush()
        return key

    def __enter__(self) -> ServedLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spill(self, folder: str | os.PathLike[str]) -> SpillResult | None:
        """Write the buffered records to a local file in ``folder`` instead of the store (the
        store refuses writes and the process is ending): one batch, named after the store key
        it will get, written atomically (fsynced, renamed into place). The buffer is emptied.
        :func:`replay_spilled` writes it to the store later. None when nothing was buffered."""
        from hhpulse.data.store import atomic_write_bytes

        with self._flush_lock, self._lock:
            if not self._lines:
                return None
            key = served_key(self._times[0])
            path = Path(folder) / spill_name(key)
            atomic_write_bytes(path, encode_batch(self._lines))
            result = SpillResult(path=path, key=key, records=len(self._lines))
            self._lines, self._times, self._size, self._since = [], [], 0, None
            return result


# -- spill files: a batch kept on local disk until the store takes it --------------------------

SPILL_SUFFIX = ".jsonl.gz"


@dataclass(frozen=True)
class SpillResult:
    path: Path
    key: str
    records: int


def spill_name(key: str) -> str:
    """The spill file's name for the batch key ``served/<date>/<HH>-<uuid>.jsonl.gz``:
    ``<date>_<HH>-<uuid>.jsonl.gz`` (the key is recovered from it: :func:`spill_key`)."""
    m = _KEY_RE.match(key)
    if not m:
        raise ServedLogError(f"{key!r} is not a served-log batch key")
    return f"{m.group(1)}_{m.group(2)}-{m.group(3)}{SPILL_SUFFIX}"


def spill_key(name: str) -> str | None:
    """The batch key a spill file will be written to, or None for a file of another name."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})_(\d{2})-([0-9a-f]{32})\.jsonl\.gz", name)
    return f"{SERVED_PREFIX}{m.group(1)}/{m.group(2)}-{m.group(3)}{SUFFIX}" if m else None


def spilled(folder: str | os.PathLike[str]) -> list[Path]:
    """The spill files waiting in ``folder``, oldest batch first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and spill_key(p.name) is not None)


def replay_spilled(store: Store, folder: str | os.PathLike[str]) -> list[FlushResult]:
    """Write every spill file in ``folder`` to the store, each under the key it was named for
    (so a replay cut off after the write and before the file's removal writes the same
    object again, never a second copy), and remove it. A store error propagates; the files
    not yet written stay for the next try. A file that is not a readable batch is renamed
    ``*.bad`` and left (never written, never removed)."""
    done = []
    for path in spilled(folder):
        key = spill_key(path.name)
        assert key is not None
        data = path.read_bytes()
        try:
            count = gzip.decompress(data).count(b"\n")
        except (OSError, EOFError):
            path.rename(path.with_name(path.name + ".bad"))
            continue
        store.put_bytes(key, data)
        path.unlink()
        done.append(FlushResult(key=key, records=count, bytes=len(data)))
    return done


# -- reader ----------------------------------------------------------------------------------


def served_keys(store: Store, *, until: datetime | str | None = None) -> list[str]:
    """The batch keys, oldest hour first; with ``until``, batches that start after it are left out."""
    end = parse_time(until) if until is not None else None
    keys = []
    for key in store.list(SERVED_PREFIX):
        hour = key_hour(key)
        if hour is None:
            continue  # not a batch (a stray file): never read it as one
        if end is not None and hour > end:
            continue
        keys.append(key)
    return keys


def read_batch(store: Store, key: str) -> list[dict[str, Any]]:
    """The records of one batch; :class:`ServedLogError` names the key and line of a bad one."""
    try:
        text = gzip.decompress(store.get_bytes(key)).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ServedLogError(f"{store.uri(key)}: not a gzipped UTF-8 JSON-lines batch: {exc}") from exc
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ServedLogError(f"{store.uri(key)} line {n}: not JSON: {exc}") from exc
        out.append(check_record(rec, f"{store.uri(key)} line {n}"))
    return out


def read_served(
    store: Store,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    errors: str = "raise",
    bad: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every logged record with ``since <= time < until`` (either bound optional), batch by batch:
    hours in order, the batches of one hour in key order (not by time), each batch's records
    in the order they were added.

    ``errors="raise"`` (the default) stops at a bad batch with :class:`ServedLogError`;
    ``errors="skip"`` leaves it out and appends its message to ``bad`` (when given).
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    start = parse_time(since) if since is not None else None
    end = parse_time(until) if until is not None else None
    for key in served_keys(store, until=end):
        try:
            records = read_batch(store, key)
        except ServedLogError as exc:
            if errors == "raise":
                raise
            if bad is not None:
                bad.append(str(exc))
            continue
        for rec in records:
            t = parse_time(rec["time"])
            if (start is None or t >= start) and (end is None or t < end):
                yield rec
