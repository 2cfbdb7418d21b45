"""The local loop: ``hhpulse serve --store`` logs what it answers to the store's served log.

On a cluster, KServe's logger posts every request and response to ``hhpulse logsink``, which
writes them to ``served/`` in the store (:mod:`hhpulse.watch.served`), where ``hhpulse monitor``
and the pipeline's monitor step read them. A predictor started on this machine has no logger in
front of it, so it writes the same records itself, through the same writer: one record per
instance, with the text the model read, the vacancy ``id`` when the caller sent one, the
request id (``X-Request-Id``, else a new one), the model version and both answers.

Batches are written when the oldest buffered record is :data:`FLUSH_SECONDS` old (a timer
thread checks), when a batch is full, and when the server stops. Logging never fails an
answer: a store that refuses a batch costs a warning, as the cluster's logger would.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from hhpulse.data.store import StoreError, open_store
from hhpulse.model.inputs import Instance
from hhpulse.watch.served import ServedLogError, ServedLogWriter, make_record

log = logging.getLogger("hhpulse.serving.served_log")

FLUSH_SECONDS = 2.0  # a record reaches the store within about this long


def instance_ids(payload: Any) -> list[str | int | None] | None:
    """The vacancy ids a v1 body's instances carry (``{"id": ...}``), in order; None without any."""
    items = payload.get("instances") if isinstance(payload, Mapping) else None
    if not isinstance(items, list):
        return None
    ids = [item.get("id") if isinstance(item, Mapping) else None for item in items]
    ids = [i if isinstance(i, (str, int)) and not isinstance(i, bool) else None for i in ids]
    return ids if any(i is not None for i in ids) else None


class ServedRecorder:
    """Writes served predictions to ``served/`` in the store at ``location`` (see the module).

    Made once in the server's process; kserve's ``--workers N`` pickles it into each worker,
    where it opens its own store and writer on first use.
    """

    def __init__(self, location: str | None, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.location = location
        self.flush_seconds = flush_seconds
        self.uri = open_store(location).uri("served/")  # a bad location fails here, before serving
        self._writer: ServedLogWriter | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.recorded = 0
        self.dropped = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_writer=None, _pid=None, _stop=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stop, self._lock = threading.Event(), threading.Lock()

    def _writer_here(self) -> ServedLogWriter:
        with self._lock:
            if self._writer is None or self._pid != os.getpid():
                self._writer = ServedLogWriter(open_store(self.location), max_seconds=self.flush_seconds)
                self._pid = os.getpid()
                self._stop.clear()
                threading.Thread(target=self._flush_loop, name="served-log", daemon=True).start()
                atexit.register(self.close)
            return self._writer

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_seconds / 4):
            writer = self._writer
            if writer is None:
                return
            try:
                writer.flush_due()
            except StoreError as exc:  # the records stay buffered; the next tick tries again
                log.warning("cannot write the served log to %s: %s", self.uri, exc)

    def record(
        self,
        instances: Sequence[Instance],
        predictions: Sequence[Mapping[str, Any]],
        *,
        ids: Sequence[str | int | None] | None = None,
        request_id: str | None = None,
    ) -> int:
        """Buffer one request's records; how many were kept (0 when the log refused them)."""
        now = datetime.now(timezone.utc)
        rid = request_id or uuid.uuid4().hex
        try:
            records = []
            for i, (inst, pred) in enumerate(zip(instances, predictions, strict=True)):
                fields = {k: v for k, v in inst.as_dict().items() if v is not None}
                if ids is not None and i < len(ids) and ids[i] is not None:
                    fields["id"] = ids[i]
                records.append(
                    make_record(
                        time=now,
                        model_version=str(pred["model_version"]),
                        request_id=rid,
                        instance=fields,
                        prediction=pred,
                        where=f"instances[{i}]",
                    )
                )
            self._writer_here().add(records)
        except (ServedLogError, StoreError) as exc:  # ServedLogFull is a StoreError
            self.dropped += len(predictions)
            log.warning("%d predictions not logged to %s: %s", len(predictions), self.uri, exc)
            return 0
        self.recorded += len(records)
        return len(records)

    def close(self) -> None:
        """Write what is buffered and stop the timer (on the server's way out; idempotent)."""
        if self._stop is not None:
            self._stop.set()
        writer = self._writer
        if writer is None or self._pid != os.getpid():
            return
        try:
            writer.flush()
        except StoreError as exc:
            log.warning("%d predictions not logged to %s: %s", writer.pending, self.uri, exc)
