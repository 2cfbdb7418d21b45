"""``hhpulse logsink``'s HTTP server: the standard library's threading server around :class:`LogSink`.

Routes:

* ``POST`` any path: one CloudEvent (binary mode) from KServe's logger. 200 ``{"status":
  "waiting"|"paired"}``; 400 ``{"error": reason}`` for a bad event; 403 for an event from
  another InferenceService than the sink's (:class:`hhpulse.watch.logsink.Origin`); 503 with
  ``Retry-After`` when the sink is full or shutting down;
* ``GET /healthz``: 200 while the process serves (liveness);
* ``GET /readyz``: 200 once the store has taken a write (the spilled batches of an earlier
  process, or a heartbeat) and while it takes them; 503 before, while the store refuses
  writes, and once SIGTERM came (readiness);
* ``GET /metrics``: Prometheus text: events by outcome, records written, batches, unpaired
  halves dropped, halves waiting, the writer's buffer and the events refused as foreign.

With ``metrics_port``, a second listener serves ``GET /metrics`` and nothing else (a POST is
405), so that a NetworkPolicy can open it to Prometheus without opening the event port.

A request is refused at once, before its body is read, when its ``Content-Length`` is
missing or not a number (411), negative or over ``max_event_bytes`` (400); the connection is
then closed, as its body cannot be skipped.

On SIGTERM (or SIGINT) the server stops being ready, keeps taking events for ``drain``
seconds (the partners of requests in flight, while the endpoints controller removes the pod
from the Service), stops, and closes the sink (writes the last batch, or spills it to a
local file when the store refuses it; see :meth:`hhpulse.watch.logsink.LogSink.close`). One
JSON log line says what was written, spilled and dropped.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hhpulse.data.store import StoreError
from hhpulse.watch.logsink import BadEvent, Forbidden, LogSink, Origin, SinkFull, parse_event
from hhpulse.watch.served import SpillResult

log = logging.getLogger("hhpulse.watch.logsink")

RETRY_AFTER = "5"
TICK_SECONDS = 0.5


def metrics_text(sink: LogSink) -> str:
    """The sink's counters and gauges in Prometheus' text format (no client library needed)."""
    c = sink.counts
    lines = [
        "# HELP hhpulse_logsink_events_total Inference events by outcome",
        "# TYPE hhpulse_logsink_events_total counter",
    ]
    for outcome in ("paired", "waiting", "bad", "refused"):
        lines.append(f'hhpulse_logsink_events_total{{outcome="{outcome}"}} {c[outcome]}')
    lines += [
        "# HELP hhpulse_logsink_unpaired_total Events dropped because their partner never came, by type",
        "# TYPE hhpulse_logsink_unpaired_total counter",
        f'hhpulse_logsink_unpaired_total{{type="request"}} {c["unpaired_request"]}',
        f'hhpulse_logsink_unpaired_total{{type="response"}} {c["unpaired_response"]}',
        "# HELP hhpulse_logsink_records_total Served-log records handed to the writer",
        "# TYPE hhpulse_logsink_records_total counter",
        f"hhpulse_logsink_records_total {c['records']}",
        "# HELP hhpulse_logsink_batches_total Batches written to the store",
        "# TYPE hhpulse_logsink_batches_total counter",
        f"hhpulse_logsink_batches_total {len(sink.writer.written)}",
        "# HELP hhpulse_logsink_pending_events Events waiting for their partner",
        "# TYPE hhpulse_logsink_pending_events gauge",
        f"hhpulse_logsink_pending_events {sink.pending}",
        "# HELP hhpulse_logsink_buffered_records Records buffered, not yet written",
        "# TYPE hhpulse_logsink_buffered_records gauge",
        f"hhpulse_logsink_buffered_records {sink.writer.pending}",
        "# HELP hhpulse_logsink_store_ready 1 while the store takes writes, 0 before its first and after a refusal",
        "# TYPE hhpulse_logsink_store_ready gauge",
        f"hhpulse_logsink_store_ready {int(sink.ready)}",
    ]
    return "\n".join(lines) + "\n"


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    # the agent's Go client keeps connections open; a slow client must not hold a thread forever
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        sink: LogSink,
        *,
        max_event_bytes: int,
        origin: Origin | None = None,
        handler: type[BaseHTTPRequestHandler] | None = None,
    ) -> None:
        super().__init__(address, handler or _Handler)
        self.sink = sink
        self.origin = origin or Origin()
        self.max_event_bytes = max_event_bytes
        self.ready = True  # /readyz; False from SIGTERM on (events are still taken while draining)
        self.accepting = True  # False once draining is over: later events get 503
        self._inflight = 0
        self._idle = threading.Condition()

    def begin(self) -> bool:
        """Count an event in; False when the sink no longer takes events."""
        with self._idle:
            if not self.accepting:
                return False
            self._inflight += 1
            return True

    def end(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def stop_taking(self, timeout: float = 10.0) -> int:
        """Take no more events, and wait for those being handled; how many were still in flight."""
        with self._idle:
            self.accepting = False
            self._idle.wait_for(lambda: self._inflight == 0, timeout)
            return self._inflight


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the agent's client expects
    # the status line and headers, then the body, are two writes: without TCP_NODELAY the
    # second waits for the client's delayed ACK (40 ms a response on Linux)
    disable_nagle_algorithm = True
    server: SinkServer
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per refusal below; accepted events are counted, not logged

    def _answer(
        self,
        status: int,
        doc: dict[str, Any] | str,
        content_type: str = "application/json",
        retry_after: int | None = None,
    ) -> None:
        # compact, as the predictor's (kserve's) answers: one error-body style for every hhpulse server
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) if isinstance(doc, dict) else doc
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", str(retry_after or RETRY_AFTER))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        if path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif path == "/readyz":
            sink = self.server.sink
            ok = self.server.ready and sink.ready
            status = (
                "ready"
                if ok
                else "draining"
                if not self.server.ready
                else "the store has not taken a write yet"
                if sink.store_ok is None
                else "the store refuses writes"
            )
            self._answer(200 if ok else 503, {"status": status}, retry_after=sink.retry_after())
        elif path == "/metrics":
            self._metrics()
        else:
            self._answer(404, {"error": f"no such path {path}; POST CloudEvents to /"})

    def _metrics(self) -> None:
        text = metrics_text(self.server.sink) + "\n".join(self.server.origin.metrics_lines()) + "\n"
        self._answer(200, text, "text/plain; version=0.0.4")

    def do_POST(self) -> None:  # noqa: N802
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            self.close_connection = True
            self._answer(411, {"error": "Content-Length is required"})
            return
        if length < 0:
            self.close_connection = True  # no body can be read: this connection cannot go on
            self._refuse(400, f"Content-Length {length} is negative")
            return
        if length > self.server.max_event_bytes:
            self.close_connection = True  # the body is not read: this connection cannot go on
            self._refuse(
                400, f"the event body is {length} bytes, over the limit of {self.server.max_event_bytes}"
            )
            return
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up (or timed out) midway: nobody to answer
            self.close_connection = True
            return
        try:
            self.server.origin.check(headers)
        except Forbidden as exc:
            self._refuse(403, str(exc))
            return
        if not self.server.begin():
            self._answer(503, {"error": "the sink is shutting down"})
            return
        try:
            event = parse_event(headers, body, max_bytes=self.server.max_event_bytes)
            status = self.server.sink.accept(event)
        except BadEvent as exc:
            self._refuse(400, str(exc))
            return
        except SinkFull as exc:
            self._refuse(503, str(exc), retry_after=exc.retry_after)
            return
        finally:
            self.server.end()
        self._answer(200, {"status": status})

    def _refuse(self, status: int, reason: str, retry_after: int | None = None) -> None:
        level = logging.ERROR if status >= 500 else logging.WARNING
        message = f"refused an event ({status}): {reason}"
        # the JSON formatter writes the fields in place of the message: the reason goes in them
        log.log(level, message, extra={"fields": {"message": message, "status": status}})
        self._answer(status, {"error": reason}, retry_after=retry_after)


class _MetricsHandler(_Handler):
    """The metrics listener: ``GET /metrics`` only; it takes no events."""

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/metrics":
            self._metrics()
        else:
            self._answer(404, {"error": f"no such path {path}; this port serves GET /metrics only"})

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True  # the body is not read
        body = b'{"error": "this port serves GET /metrics only; events go to the event port"}'
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_server(
    sink: LogSink,
    *,
    host: str,
    port: int,
    max_event_bytes: int,
    drain: float = 3.0,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
    origin: Origin | None = None,
    metrics_port: int | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); 0 when the last batch was written or
    spilled, 1 when it was lost (the log line says how many records). ``origin``: the
    InferenceService whose events are taken (default: any); ``metrics_port``: also serve
    ``GET /metrics`` alone on this port."""
    origin = origin or Origin()
    server = SinkServer((host, port), sink, max_event_bytes=max_event_bytes, origin=origin)
    metrics = (
        None
        if metrics_port is None
        else SinkServer((host, metrics_port), sink, max_event_bytes=0, origin=origin, handler=_MetricsHandler)
    )
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    def timer() -> None:
        """Every store write of the sink happens here, never in a handler thread: at once the
        spilled batches of an earlier process (or a heartbeat), then every TICK_SECONDS, and
        at once when a batch is full (``sink.wake``)."""
        while not stop.is_set():
            sink.tick()
            sink.wake.wait(TICK_SECONDS)
            sink.wake.clear()

    threads = [
        threading.Thread(target=server.serve_forever, daemon=True),
        threading.Thread(target=timer, daemon=True),
    ]
    if metrics is not None:
        threads.append(threading.Thread(target=metrics.serve_forever, daemon=True))
    for t in threads:
        t.start()
    log.info("logsink listening on http://%s:%d", host, server.server_address[1])
    if metrics is not None:
        log.info("metrics alone on http://%s:%d/metrics", host, metrics.server_address[1])
    if origin.checked:
        log.info("taking events only from InferenceService %s", origin)
    else:
        log.warning("taking events from any InferenceService (no --inference-service and --namespace)")
    if ready is not None:
        ready.set()
    stop.wait()
    sink.wake.set()  # let the timer thread see the stop
    server.ready = False
    log.info("stopping: not ready; taking the last events for %.1fs", drain)
    threading.Event().wait(drain)
    late = server.stop_taking()
    if late:
        log.error("%d events were still being handled after 10 s; they may be lost", late)
    server.shutdown()
    server.server_close()
    if metrics is not None:
        metrics.shutdown()
        metrics.server_close()
    waiting = sink.pending
    try:
        last = sink.close()
    except (StoreError, OSError) as exc:
        log.error("the last batch was not written (%d records lost): %s", sink.writer.pending, exc)
        return 1
    if isinstance(last, SpillResult):
        log.warning(
            "the store refused the last batch: %d records spilled to %s; the next start writes "
            "them to %s first",
            last.records,
            last.path,
            last.key,
        )
    log.info(
        "stopped: %d records in %d batches, last %s; %d events waited unpaired and were dropped",
        sink.counts["records"],
        len(sink.writer.written),
        (last.path if isinstance(last, SpillResult) else last) or "(nothing left to write)",
        waiting,
    )
    return 0
