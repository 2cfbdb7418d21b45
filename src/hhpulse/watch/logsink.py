"""The prediction log sink's core: KServe's logger CloudEvents in, served-log batches out.

KServe's agent (``spec.predictor.logger``, ``mode: all``) posts two CloudEvents per
inference call, in binary mode (kserve ``pkg/logger/worker.go``, 0.20 and 0.21 alike):

=================================  ===========================================================
header                             value
=================================  ===========================================================
``ce-specversion``                 ``1.0``
``ce-id``                          the request's ``Ce-Id`` header, or a new UUID: the SAME id
                                   on the request and the response event
``ce-type``                        ``org.kubeflow.serving.inference.request`` / ``.response``
``ce-source``                      the agent's ``--source-uri`` (the pod's name)
``ce-time``                        when the request arrived / the response was complete
``ce-recordedtime``                when the event was sent
``ce-inferenceservicename``        the InferenceService
``ce-namespace``, ``ce-component``, ``ce-endpoint``   its namespace, ``predictor``, endpoint
``ce-metadata``                    JSON of the logged request headers (``metadataHeaders``)
``Content-Type``                   the REQUEST's Content-Type, on both events
body                               the raw request body / the raw response body
=================================  ===========================================================

The response event is sent only for a 200 answer; the two events travel on separate worker
goroutines, so either may come first. This module pairs them by id and turns each pair into
served-log records (:mod:`hhpulse.watch.served`): v1 exchanges with
:func:`hhpulse.watch.served.records_from_v1`, v2 exchanges converted to the v1 shape first.

What happens to each event (:meth:`LogSink.accept`):

* not a CloudEvent of those two types, a body that is not JSON, not an inference request or
  answer, a duplicate id, or a pair that does not fit together: :class:`BadEvent` (HTTP 400
  with the reason; the pair's first half is dropped with it, and counted);
* a body that is not strict JSON (``NaN``, ``Infinity``) or nests deeper than
  :data:`hhpulse.model.inputs.MAX_JSON_DEPTH`: :class:`BadEvent` (400) too;
* no room (``max_pending`` halves waiting for their partner, ``max_pending_bytes`` of their
  bodies, or the writer's buffer full while the store refuses writes), or a store that does
  not take writes (not yet, or not any more) for an event that starts a new exchange:
  :class:`SinkFull` (HTTP 503 with Retry-After). NOTE: KServe 0.21's agent does not resend a refused event
  (the context it sends with sets no retry policy, and cloudevents sdk-go retries only when
  one is set; the agent logs "Sent with status code 503"), so a
  503 is visible in the agent's log and in the sink's ``refused`` counter, not silent;
* a half whose partner has not come within ``pair_timeout`` seconds (a request the predictor
  did not answer with 200, or a partner that went to another sink replica) is dropped by
  :meth:`LogSink.expire` and counted as ``unpaired``, with one summary log line per sweep.

Batches go out through one :class:`~hhpulse.watch.served.ServedLogWriter`: on size (records,
bytes), on time (:meth:`LogSink.flush_due`, called on a timer) and on :meth:`LogSink.close`
(SIGTERM). A batch the store refuses stays buffered and is retried with backoff; what the
store still refuses on close goes to a spill file in ``spill_dir`` (the pod's emptyDir), which
the next start writes before anything else. On close, halves still waiting for their partner
are dropped and counted (they cannot be logged without it); a crash (SIGKILL, OOM) loses the
writer's unflushed buffer: what came since the last batch (``max_records`` records or
``max_seconds`` of traffic), or up to :data:`hhpulse.watch.served.BUFFER_BATCHES` batches
while the store refuses writes.

Who may write (:class:`Origin`): a sink configured with the InferenceService it serves refuses,
with :class:`Forbidden` (HTTP 403, counted by reason, never written), an event whose
``ce-inferenceservicename`` or ``ce-namespace`` names another one, or none. KServe's agent takes
both from its own pod: ``--inference-service`` is the pod's ``serving.kserve.io/inferenceservice``
label, ``--namespace`` the pod's namespace (kserve ``pkg/webhook/admission/pod/agent_injector.go``).

Pure core: no HTTP server, no kserve import; :mod:`hhpulse.watch.logsink_http` serves it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time as _time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hhpulse.config import TASKS, TEXT_FIELDS
from hhpulse.data.store import Store, StoreError, json_bytes
from hhpulse.model.inputs import JSONRefused, loads_strict
from hhpulse.watch.served import (
    ServedLogError,
    ServedLogFull,
    ServedLogWriter,
    SpillResult,
    parse_time,
    records_from_v1,
    replay_spilled,
    spilled,
)

log = logging.getLogger("hhpulse.watch.logsink")

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
EVENT_TYPES = (REQUEST, RESPONSE)
SPEC_VERSION = "1.0"
EXTENSIONS = ("inferenceservicename", "namespace", "component", "endpoint")

DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
DEFAULT_PAIR_TIMEOUT = 120.0


class BadEvent(ValueError):
    """An event the sink cannot take (HTTP 400): ``str()`` says why."""


class SinkFull(RuntimeError):
    """No room for the event now (HTTP 503): the buffers are full, or the store does not take
    writes. ``retry_after``: the seconds to wait before sending it again."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


HEARTBEAT_KEY = "logsink/alive.json"  # the write that proves the store takes them (when nothing else is due)
RETRY_BASE_S = 0.5  # the first retry of a refused write; doubled after each refusal
RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class Event:
    """One inference CloudEvent as the agent sent it (binary mode)."""

    id: str
    type: str
    source: str
    time: datetime
    body: Mapping[str, Any]
    size: int  # bytes of the raw body
    extensions: Mapping[str, str]

    @property
    def is_request(self) -> bool:
        return self.type == REQUEST


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A ``ce-*`` header, percent-decoded as the HTTP binding (1.0.2, section 3.1.3.2) asks."""
    value = headers.get(name)
    return None if value is None else unquote(value.strip())


def parse_event(
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    now: datetime | None = None,
) -> Event:
    """The event in one binary-mode HTTP request (``headers`` with lower-case names).

    Raises :class:`BadEvent` with the reason for anything KServe's agent would not send.
    """
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/cloudevents+json" or ctype.startswith("application/cloudevents-batch"):
        raise BadEvent(
            f"structured or batched CloudEvents ({ctype}) are not taken: KServe's logger sends binary "
            "mode (the attributes in ce-* headers, the raw body as the data)"
        )
    spec = _header(headers, "ce-specversion")
    if spec is None:
        raise BadEvent("not a CloudEvent: the ce-specversion header is missing (binary mode)")
    if spec != SPEC_VERSION:
        raise BadEvent(f"ce-specversion {spec!r} is not supported; KServe's logger sends {SPEC_VERSION!r}")
    missing = [h for h in ("ce-id", "ce-type", "ce-source") if not _header(headers, h)]
    if missing:
        raise BadEvent(f"the CloudEvent has no {', '.join(missing)} header")
    etype = _header(headers, "ce-type") or ""
    if etype not in EVENT_TYPES:
        raise BadEvent(f"ce-type {etype!r} is not an inference event; expected one of {list(EVENT_TYPES)}")
    stamp = _header(headers, "ce-time")
    try:
        when = parse_time(stamp) if stamp else (now or datetime.now(timezone.utc))
    except ServedLogError:
        raise BadEvent(f"ce-time {stamp!r} is not an RFC 3339 timestamp") from None
    if len(body) > max_bytes:
        raise BadEvent(f"the event body is {len(body)} bytes, over the limit of {max_bytes}")
    try:  # strict: no NaN or Infinity (a probability of NaN would poison every later PSI), bounded depth
        doc = loads_strict(body)
    except JSONRefused as exc:
        if exc.reason == "invalid_json":
            raise BadEvent(f"the event body is not JSON ({ctype or 'no Content-Type'}): {exc}") from None
        raise BadEvent(f"the event body is refused: {exc}") from None
    kind = "request" if etype == REQUEST else "response"
    if not isinstance(doc, Mapping):
        raise BadEvent(f"the {kind} body must be a JSON object, got {type(doc).__name__}")
    expected = ("instances", "inputs") if etype == REQUEST else ("predictions", "outputs")
    if not any(isinstance(doc.get(k), list) for k in expected):
        raise BadEvent(
            f"the {kind} body is not a v1 or v2 inference {kind}: it has no {' or '.join(map(repr, expected))} list"
        )
    ext = {k: v for k in EXTENSIONS if (v := _header(headers, f"ce-{k}"))}
    return Event(
        str(_header(headers, "ce-id")), etype, str(_header(headers, "ce-source")), when, doc, len(body), ext
    )


def agent_headers(
    event_id: str,
    event_type: str,
    *,
    time: datetime,
    source: str = "hhpulse-predictor-0",
    inference_service: str = "hhpulse",
    namespace: str = "default",
    component: str = "predictor",
    endpoint: str = "default",
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers KServe's agent puts on one event (``pkg/logger/worker.go``, binary mode; Go
    canonicalises the names): for the e2e driver and the benchmark, which post as the agent
    would, and for the tests."""
    stamp = time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "Ce-Specversion": SPEC_VERSION,
        "Ce-Id": event_id,
        "Ce-Type": event_type,
        "Ce-Source": source,
        "Ce-Time": stamp,
        "Ce-Recordedtime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Ce-Inferenceservicename": inference_service,
        "Ce-Namespace": namespace,
        "Ce-Component": component,
        "Ce-Endpoint": endpoint,
        "Ce-Metadata": "{}",  # json.Marshal of the logged headers: none unless metadataHeaders is set
        "Content-Type": content_type,  # the request's, on the response event too
    }


# -- v2 -> v1 -----------------------------------------------------------------------------------


def _tensor_rows(tensor: Mapping[str, Any]) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise BadEvent(f"tensor {tensor.get('name')!r} has no data list")
    flat: list[Any] = []
    for v in data:
        flat.extend(v if isinstance(v, list) else [v])
    return flat


def v2_as_v1(
    request: Mapping[str, Any], response: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A v2 exchange with hhpulse's predictor as its v1 form: instances from the ``responsibility``,
    ``name``, ``requirement`` (and ``id``) tensors; predictions from ``<task>_cohort`` and
    ``<task>_probabilities`` with their ``parameters.cohorts`` (the columns, in order)."""
    inputs = {t.get("name"): t for t in request.get("inputs") or [] if isinstance(t, Mapping)}
    if "responsibility" not in inputs:
        raise BadEvent("the v2 request has no 'responsibility' input tensor")
    columns = {f: _tensor_rows(inputs[f]) for f in (*TEXT_FIELDS, "id") if f in inputs}
    n = len(columns["responsibility"])
    instances = [
        {f: col[i] for f, col in columns.items() if i < len(col) and col[i] is not None} for i in range(n)
    ]
    outputs = {t.get("name"): t for t in response.get("outputs") or [] if isinstance(t, Mapping)}
    preds: list[dict[str, Any]] = [{} for _ in range(n)]
    for task in TASKS:
        cohort_t, prob_t = outputs.get(f"{task}_cohort"), outputs.get(f"{task}_probabilities")
        if cohort_t is None or prob_t is None:
            raise BadEvent(f"the v2 response has no {task}_cohort and {task}_probabilities outputs")
        names = str((prob_t.get("parameters") or {}).get("cohorts") or "").split(",")
        cohorts, probs = _tensor_rows(cohort_t), _tensor_rows(prob_t)
        if len(cohorts) != n or len(probs) != n * len(names):
            raise BadEvent(f"the v2 response's {task} outputs do not fit {n} instances and cohorts {names}")
        for i in range(n):
            row = probs[i * len(names) : (i + 1) * len(names)]
            preds[i][task] = {"cohort": cohorts[i], "probabilities": dict(zip(names, row, strict=True))}
    version = response.get("model_version") or (response.get("parameters") or {}).get("model_version")
    for p in preds:
        if version:
            p["model_version"] = version
    return {"instances": instances}, {"predictions": preds}


def records_of(request: Event, response: Event) -> list[dict[str, Any]]:
    """The served-log records of one request/response pair (v1, or v2 converted)."""
    req, resp = request.body, response.body
    if "inputs" in req and "instances" not in req:
        req, resp = v2_as_v1(req, resp)
    try:
        return records_from_v1(req, resp, time=request.time, model_version=None, request_id=request.id)
    except ServedLogError as exc:
        raise BadEvent(
            f"the request and response of id {request.id!r} do not make log records: {exc}"
        ) from None


# -- the sink -----------------------------------------------------------------------------------


class LogSink:
    """Pairs request and response events by id and writes their records in batches.

    Args:
        writer: the served-log writer (its ``max_records``/``max_bytes``/``max_seconds`` are
            the batch policy; its buffer is the bound on paired records).
        max_pending: halves waiting for their partner, at most.
        max_pending_bytes: bytes of their bodies, at most.
        pair_timeout: seconds a half waits for its partner before :meth:`expire` drops it.
        clock: monotonic seconds (tests pass their own).
        spill_dir: a local folder (the pod's emptyDir) for what the store would not take on
            :meth:`close`; :meth:`tick` writes what is there first, once the store takes writes.

    The store's health decides what the sink takes. It is ready (:attr:`ready`) only once the
    store took a write: the spilled batches of an earlier process, else a heartbeat
    (``logsink/alive.json``). While the store refuses writes, the batch is kept and retried
    by :meth:`tick` with a doubling backoff (0.5 s up to 30 s), and an event that starts a new
    exchange gets :class:`SinkFull` (503 with Retry-After): a 2xx is never sent for an event
    that would only be dropped. The second half of an exchange whose first half was taken is
    still taken while the buffer has room (it would otherwise make the first half useless).

    Thread-safe: the HTTP server calls :meth:`accept` from its handler threads and
    :meth:`tick` from a timer thread.
    """

    def __init__(
        self,
        writer: ServedLogWriter,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        pair_timeout: float = DEFAULT_PAIR_TIMEOUT,
        clock: Callable[[], float] = _time.monotonic,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_pending < 1 or max_pending_bytes < 1 or pair_timeout <= 0:
            raise ValueError("max_pending, max_pending_bytes and pair_timeout must be positive")
        self.writer = writer
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pair_timeout = pair_timeout
        self.clock = clock
        self._pending: OrderedDict[str, tuple[Event, float]] = OrderedDict()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        # events by outcome: paired, waiting, bad, refused; records written; halves dropped unpaired
        self.counts: Counter[str] = Counter()
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        # the store's health: None until it took a write, True while it does, False once refused
        self.store_ok: bool | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_BASE_S
        self._health = threading.Lock()
        self.wake = threading.Event()  # set when a batch is due now: the timer thread runs tick() at once
        writer.on_write = self._written

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    # -- the store's health ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the store has taken a write and takes them still."""
        return self.store_ok is True

    def retry_after(self) -> int:
        """Seconds until the next try of the store (at least 1), for Retry-After."""
        return max(1, math.ceil(self._retry_at - self.clock()))

    def _written(self, error: StoreError | None) -> None:
        """A write's result (the writer calls it after each try)."""
        with self._health:
            was = self.store_ok
            if error is None:
                self.store_ok, self._backoff, self._retry_at = True, RETRY_BASE_S, 0.0
                if was is False:
                    log.info("the store takes writes again: events are taken again")
                return
            self.store_ok = False
            self._retry_at = self.clock() + self._backoff
            log.error(
                "the store refused a write (%s); %d records kept, retried in %.1fs; new events get 503",
                error,
                self.writer.pending,
                self._backoff,
            )
            self._backoff = min(RETRY_MAX_S, self._backoff * 2)

    def try_store(self) -> bool:
        """One try of the store, when the backoff allows: the spill files first, then the
        buffered batch, else a heartbeat. Whether the store took it (see :attr:`ready`)."""
        if self.store_ok is not True and self.clock() < self._retry_at:
            return False
        replay = self.spill_dir is not None and bool(spilled(self.spill_dir))
        if not replay and self.writer.pending:
            try:
                self.writer.flush()  # the writer reports the result through _written
            except StoreError:
                return False
            return True
        try:
            if replay:
                for done in replay_spilled(self.writer.store, self.spill_dir):
                    log.info("wrote %d spilled records of an earlier process to %s", done.records, done.key)
            else:
                self.writer.store.put_bytes(HEARTBEAT_KEY, json_bytes(_heartbeat()))
        except StoreError as exc:
            self._written(exc)
            return False
        self._written(None)
        return True

    def accept(self, event: Event) -> str:
        """Take one event: ``"waiting"`` (its partner has not come yet) or ``"paired"`` (its
        records are in the writer). Raises :class:`BadEvent` or :class:`SinkFull`."""
        with self._lock:
            other = self._pending.get(event.id)
            if other is None:
                if not self.ready:
                    self.counts["refused"] += 1
                    what = "has not taken a write yet" if self.store_ok is None else "refuses writes"
                    raise SinkFull(
                        f"the store {what}: this event would not be written; send it again later",
                        self.retry_after(),
                    )
                return self._wait(event)
            if other[0].type == event.type:
                self.counts["bad"] += 1
                kind = "request" if event.is_request else "response"
                raise BadEvent(f"a second {kind} event with id {event.id!r} (the first is still waiting)")
            self._pop(event.id)
        request, response = (event, other[0]) if event.is_request else (other[0], event)
        try:
            records = records_of(request, response)
            self.writer.add(records, write=False)  # a handler never waits on the store: tick writes
        except BadEvent:
            self.counts["bad"] += 1
            self.counts["unpaired_" + ("response" if event.is_request else "request")] += 1
            raise
        except ServedLogError as exc:
            self.counts["bad"] += 1
            raise BadEvent(f"id {event.id!r}: {exc}") from None
        except (ServedLogFull, StoreError) as exc:
            with self._lock:  # put the first half back: the agent's next try can pair it
                self._pending[other[0].id] = other
                self._pending_bytes += other[0].size
            self.counts["refused"] += 1
            self.wake.set()
            why = "the store refuses writes" if self.store_ok is False else "a batch is being written"
            raise SinkFull(f"the served log buffer is full ({why}): {exc}", self.retry_after()) from exc
        self.counts["paired"] += 2
        self.counts["records"] += len(records)
        if self.writer.full:
            self.wake.set()  # a whole batch: the timer thread writes it now
        return "paired"

    def _wait(self, event: Event) -> str:
        if (
            len(self._pending) >= self.max_pending
            or self._pending_bytes + event.size > self.max_pending_bytes
        ):
            self.counts["refused"] += 1
            raise SinkFull(
                f"{len(self._pending)} events ({self._pending_bytes} bytes) wait for their partner, "
                f"the limit is {self.max_pending} events / {self.max_pending_bytes} bytes"
            )
        self._pending[event.id] = (event, self.clock())
        self._pending_bytes += event.size
        self.counts["waiting"] += 1
        return "waiting"

    def _pop(self, event_id: str) -> Event:
        event, _ = self._pending.pop(event_id)
        self._pending_bytes -= event.size
        return event

    def expire(self) -> dict[str, int]:
        """Drop the halves that waited longer than ``pair_timeout``; how many of each kind."""
        cutoff = self.clock() - self.pair_timeout
        dropped: Counter[str] = Counter()
        ids: list[str] = []
        with self._lock:
            while self._pending:
                event_id, (event, since) = next(iter(self._pending.items()))
                if since > cutoff:
                    break
                self._pop(event_id)
                dropped["request" if event.is_request else "response"] += 1
                ids.append(event_id)
        self._report_unpaired(dropped, ids, f"no partner within {self.pair_timeout:g}s")
        return dict(dropped)

    def _report_unpaired(self, dropped: Counter[str], ids: list[str], why: str) -> None:
        for kind, n in dropped.items():
            self.counts[f"unpaired_{kind}"] += n
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            log.warning(
                "dropped %d unpaired event(s) (%s): %s; requests the predictor did not answer with 200 "
                "have no response event; ids: %s",
                len(ids),
                ", ".join(f"{n} {k}" for k, n in sorted(dropped.items())),
                why,
                shown,
            )

    def flush_due(self) -> str | None:
        """Write the writer's buffer when its oldest record is due (the timer's call)."""
        return self.writer.flush_due()

    def tick(self) -> None:
        """The timer's work: expire old halves; while the store takes writes, write a due batch;
        until it does (at the start, or after a refusal), try it again when the backoff
        allows (:meth:`try_store`). A refused batch stays buffered."""
        self.expire()
        if self.store_ok is not True:
            self.try_store()
            return
        with contextlib.suppress(StoreError):  # _written logged it; the records stay buffered
            self.flush_due()

    def close(self) -> str | SpillResult | None:
        """Shut down: write what is buffered and drop, counted and logged, the halves still
        waiting for their partner. When the store refuses the last batch (or has been refusing
        writes: then it is not tried again) and there is a ``spill_dir``, the records go to a
        spill file there, which the next start writes first; returns the key written, the
        :class:`~hhpulse.watch.served.SpillResult`, or None. Without a spill dir a store error
        propagates (the caller says what was lost)."""
        with self._lock:
            dropped: Counter[str] = Counter()
            ids = list(self._pending)
            for event, _ in self._pending.values():
                dropped["request" if event.is_request else "response"] += 1
            self._pending.clear()
            self._pending_bytes = 0
        self._report_unpaired(dropped, ids, "the sink is shutting down before their partner came")
        if self.spill_dir is None:
            return self.writer.close()
        if self.store_ok is not False:
            try:
                return self.writer.close()
            except StoreError as exc:
                log.error("the store refused the last batch: %s", exc)
        return self.writer.spill(self.spill_dir)


def _heartbeat() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def make_sink(
    store: Store,
    *,
    batch_records: int,
    batch_bytes: int,
    batch_seconds: float,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    pair_timeout: float = DEFAULT_PAIR_TIMEOUT,
    spill_dir: str | os.PathLike[str] | None = None,
) -> LogSink:
    """A sink writing to ``store`` with this batch policy (and spilling to ``spill_dir``)."""
    writer = ServedLogWriter(
        store, max_records=batch_records, max_bytes=batch_bytes, max_seconds=batch_seconds
    )
    return LogSink(
        writer,
        max_pending=max_pending,
        max_pending_bytes=max_pending_bytes,
        pair_timeout=pair_timeout,
        spill_dir=spill_dir,
    )


# -- who may write ------------------------------------------------------------------------------

FORBIDDEN_REASONS = ("namespace", "inferenceservice", "unnamed")


class Forbidden(PermissionError):
    """An event from another InferenceService than the sink's (HTTP 403): ``reason`` is one of
    :data:`FORBIDDEN_REASONS`, ``str()`` says what the event named."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Origin:
    """The InferenceService whose logger may write to the sink, by name and namespace.

    Neither given: any event is taken (a sink on a laptop). Both given: :meth:`check` refuses
    an event that names another namespace (``namespace``), another InferenceService
    (``inferenceservice``) or none (``unnamed``), and counts it in :attr:`refused`.
    Thread-safe.
    """

    def __init__(self, inference_service: str | None = None, namespace: str | None = None) -> None:
        if bool(inference_service) != bool(namespace):
            raise ValueError("give both the InferenceService and its namespace, or neither")
        self.inference_service = inference_service or None
        self.namespace = namespace or None
        self.refused: Counter[str] = Counter(dict.fromkeys(FORBIDDEN_REASONS, 0))
        self._lock = threading.Lock()

    @property
    def checked(self) -> bool:
        return self.inference_service is not None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.inference_service}" if self.checked else "any InferenceService"

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`Forbidden` unless the event (``headers`` with lower-case names) comes
        from this sink's InferenceService."""
        if not self.checked:
            return
        name = _header(headers, "ce-inferenceservicename")
        namespace = _header(headers, "ce-namespace")
        if not name or not namespace:
            reason, said = "unnamed", "names no InferenceService (ce-inferenceservicename, ce-namespace)"
        elif namespace != self.namespace:
            reason, said = "namespace", f"comes from InferenceService {namespace}/{name}"
        elif name != self.inference_service:
            reason, said = "inferenceservice", f"comes from InferenceService {namespace}/{name}"
        else:
            return
        with self._lock:
            self.refused[reason] += 1
        raise Forbidden(reason, f"the event {said}; this sink takes events only from {self}")

    def metrics_lines(self) -> list[str]:
        """``hhpulse_logsink_forbidden_total{reason}`` in Prometheus' text format."""
        with self._lock:
            counts = dict(self.refused)
        return [
            "# HELP hhpulse_logsink_forbidden_total Events refused (403) as not from the sink's InferenceService, by reason",
            "# TYPE hhpulse_logsink_forbidden_total counter",
            *(f'hhpulse_logsink_forbidden_total{{reason="{r}"}} {counts[r]}' for r in FORBIDDEN_REASONS),
        ]
