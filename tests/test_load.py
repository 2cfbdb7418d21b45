"""16 clients at once on loopback, good requests mixed with hostile ones, against a real
predictor (``python -m hhpulse.serving``, a real kserve.ModelServer) and a real log sink.

Hostile: JSON nested thousands deep, NaN, a body over the size limit, a body cut off midway,
a body sent slowly. Every good request must be answered (0 failures, each on a keep-alive
connection that the hostile requests before it on the same connection must not break), and
the predictor's resident memory must not grow over 20,000 requests. The run is bounded in
time (:data:`DEADLINE_S`); the figures it measured are printed (``-s`` shows them).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import train_from_history
from test_serving import FAST, server_log, start_server, stop_server, wait_ready

CLIENTS = 16
REQUESTS = 20_000
DEADLINE_S = 360.0  # the whole load, at most (2 loaded cores do 20k in 60-200 s)
WARMUP = 2_000  # requests before the first memory reading
RSS_GROWTH_MAX = 24 * 1024 * 1024
JSON_HEAD = {"Content-Type": "application/json"}
PREDICT = "/v1/models/hhpulse:predict"
TEXTS = [
    "Разработка backend-сервисов на Python, проектирование API",
    "Водитель категории B, доставка заказов по городу",
    "Аналитика данных, SQL, построение отчётов в BI",
    "Продажи, работа с клиентами, ведение CRM",
]


@pytest.fixture(scope="module")
def predictor(demo_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("load") / "bundle"
    train_from_history(load_history(demo_store), rates_by_run(demo_store), out, candidates=FAST, device="cpu")
    proc, url = start_server(out)
    try:
        wait_ready(proc, url)
        yield proc, url
    finally:
        stop_server(proc)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Load:
    """The shared tally of one load run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.kinds: Counter[str] = Counter()
        self.failures: list[str] = []
        self.rss: list[tuple[int, int]] = []

    def take(self, kind: str) -> int | None:
        """The next request's number, or None when the run is over."""
        with self.lock:
            if self.sent >= REQUESTS:
                return None
            self.sent += 1
            self.kinds[kind] += 1
            return self.sent

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _answer(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
    r = conn.getresponse()
    return r.status, r.read()


def _raw(host: str, port: int, head: bytes, parts: list[bytes], pause: float = 0.0) -> bytes:
    """Send a request by hand (its head, then its body in ``parts``), return what comes back."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head)
        for part in parts:
            if pause:
                time.sleep(pause)
            sock.sendall(part)
        chunks = []
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                chunks.append(got)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


NESTED = b"[" * 9000 + b"]" * 9000
NAN = b'{"instances": [{"responsibility": "x", "score": NaN}]}'


def client(url: str, n: int, load: Load, pid: int) -> None:
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    conn = http.client.HTTPConnection(host, port, timeout=60)
    i = n
    while True:
        i += 1
        step = i % 20
        kind = {
            3: "nested",
            7: "nan",
            11: "oversized",
            13: "truncated",
            17: "slow",
        }.get(step, "good")
        number = load.take(kind)
        if number is None:
            break
        if number % 1000 == 0:
            with load.lock:
                load.rss.append((number, rss(pid)))
        text = TEXTS[i % len(TEXTS)]
        good = json.dumps({"instances": [{"responsibility": f"{text} {i}"}]}).encode()
        try:
            if kind in ("nested", "nan"):  # on the keep-alive connection: it must go on after
                conn.request("POST", PREDICT, body=NESTED if kind == "nested" else NAN, headers=JSON_HEAD)
                status, body = _answer(conn)
                if status != 400:
                    load.fail(f"{kind}: {status} {body[:200]!r}")
            elif kind == "oversized":  # declared over the limit: 413 at once, then the server closes
                answer = _raw(host, port, _head(PREDICT, 10_000_000), [b"[" * 65536])
                if not answer.startswith(b"HTTP/1.1 413"):
                    load.fail(f"oversized: {answer[:200]!r}")
            elif kind == "truncated":  # a body cut off: the client hangs up; nothing to answer
                with socket.create_connection((host, port), timeout=30) as sock:
                    sock.sendall(_head(PREDICT, len(good)) + good[: len(good) // 2])
            elif kind == "slow":  # a good body, sent in three pieces 30 ms apart
                third = len(good) // 3
                parts = [good[:third], good[third : 2 * third], good[2 * third :]]
                answer = _raw(host, port, _head(PREDICT, len(good)), parts, pause=0.03)
                if not answer.startswith(b"HTTP/1.1 200") or b"predictions" not in answer:
                    load.fail(f"slow (good): {answer[:200]!r}")
            else:
                conn.request("POST", PREDICT, body=good, headers=JSON_HEAD)
                status, body = _answer(conn)
                if status != 200 or b"predictions" not in body:
                    load.fail(f"good: {status} {body[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            load.fail(f"{kind}: {type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sixteen_clients_good_and_hostile_no_good_request_fails_and_memory_stays_flat(predictor):
    proc, url = predictor
    if not Path(f"/proc/{proc.pid}/status").exists():
        pytest.skip("needs /proc (Linux)")
    load = Load()
    start = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(url, n, load, proc.pid), daemon=True) for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, DEADLINE_S - (time.monotonic() - start)))
    seconds = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), f"the load did not finish in {DEADLINE_S:.0f} s"
    good = load.kinds["good"] + load.kinds["slow"]
    print(
        f"\n{load.sent} requests from {CLIENTS} clients in {seconds:.1f} s ({load.sent / seconds:.0f} req/s): "
        f"{dict(load.kinds)}; RSS (MiB) by request: "
        + ", ".join(f"{n}: {b / 2**20:.1f}" for n, b in load.rss)
    )
    assert load.sent == REQUESTS
    assert load.failures == [], (
        f"{len(load.failures)} of {good} good or {load.sent} in all: {load.failures[:10]}"
    )
    assert proc.poll() is None, server_log(proc)[-3000:]
    readings = dict(load.rss)
    warm = max(n for n in readings if n <= WARMUP)
    growth = readings[max(readings)] - readings[warm]
    assert growth < RSS_GROWTH_MAX, (
        f"RSS grew {growth / 2**20:.1f} MiB from request {warm} to {max(readings)}"
    )
    log = server_log(proc)
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]


SINK_EXCHANGES = 3_000  # request + response events each


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_log_sink_under_sixteen_clients_with_hostile_events_loses_no_good_exchange(tmp_path):
    """Each client pairs its good exchanges on one keep-alive connection, between hostile
    events on that same connection (nested, NaN: 400 and the connection goes on) and on their
    own (a negative or oversized Content-Length: 400 at once; a body cut off). Every good
    exchange is answered 200 and is in the served log afterwards."""
    from hhpulse.data.store import LocalStore
    from hhpulse.watch.logsink import REQUEST, RESPONSE, agent_headers
    from hhpulse.watch.served import read_served
    from test_logsink import T0, Sink, v1_pair

    store = LocalStore(tmp_path / "store")
    s = Sink(store, batch_records=500)
    request, response = (json.dumps(b).encode() for b in v1_pair(1))
    counter = iter(range(10**9))
    lock = threading.Lock()
    failures: list[str] = []
    kinds: Counter[str] = Counter()

    def post(conn, eid, kind, body):  # type: ignore[no-untyped-def]
        conn.request("POST", "/", body=body, headers=agent_headers(eid, kind, time=T0))
        return _answer(conn)

    def run(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        while True:
            with lock:
                i = next(counter)
            if i >= SINK_EXCHANGES:
                break
            kind = {3: "nested", 7: "nan", 11: "negative", 13: "oversized", 17: "truncated"}.get(
                i % 20, "good"
            )
            with lock:
                kinds[kind] += 1
            eid = f"c{n}-{i}"
            try:
                if kind == "nested":
                    status, body = post(conn, eid, REQUEST, NESTED)
                    assert status == 400 and b"deeper than" in body, (status, body)
                elif kind == "nan":
                    status, body = post(conn, eid, RESPONSE, response.replace(b"0.5", b"NaN"))
                    assert status == 400 and b"NaN" in body, (status, body)
                elif kind in ("negative", "oversized"):
                    length = -1 if kind == "negative" else 10**9
                    head = "".join(f"{k}: {v}\r\n" for k, v in agent_headers(eid, REQUEST, time=T0).items())
                    raw = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{head}\r\n".encode()
                    answer = _raw("127.0.0.1", s.port, raw, [])
                    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
                elif kind == "truncated":
                    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
                        head = "".join(
                            f"{k}: {v}\r\n" for k, v in agent_headers(eid, REQUEST, time=T0).items()
                        )
                        sock.sendall(
                            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(request)}\r\n{head}\r\n".encode()
                        )
                        sock.sendall(request[:10])
                else:
                    first = post(conn, eid, REQUEST, request)
                    second = post(conn, eid, RESPONSE, response)
                    assert (first[0], second[0]) == (200, 200), (first, second)
                    assert json.loads(second[1])["status"] == "paired"
            except (AssertionError, OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(f"{kind} {eid}: {exc!r}"[:300])
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    seconds = time.monotonic() - start
    assert s.stop() == 0
    logged = Counter(r["request_id"] for r in read_served(store))
    print(f"\nlog sink: {SINK_EXCHANGES} exchanges from {CLIENTS} clients in {seconds:.1f} s: {dict(kinds)}")
    assert failures == [], failures[:10]
    assert len(logged) == kinds["good"] and set(logged.values()) == {1}  # each good exchange once
