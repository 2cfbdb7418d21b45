"""What watching the model costs: the log sink's throughput, and the predictor with its input metrics on and off.

(a) ``hhpulse logsink`` (its own process, a local store): request and response CloudEvents
    with KServe's agent's headers and hhpulse's real v1 bodies (one instance each), posted by 4
    keep-alive clients as fast as the sink answers: events/s and records/s, p50/p99 latency,
    and the batches written. The in-process core alone (parse + pair + writer, no HTTP) is the
    ceiling measured in the same run.
(b) The predictor (``python -m hhpulse.serving``, one worker) twice, with the input histograms on
    (the default) and off (``--no-input-metrics``), side by side: both servers up at once,
    single-instance v1 requests from 4 clients, in interleaved rounds (on, off, on, off, ...) so
    that load from elsewhere on the machine hits both alike; req/s per round and the on/off ratio.
(c) The same handler in process (``VacancyModel.predict``, no HTTP), on and off in interleaved
    1-second rounds: microseconds per call, the metrics' own cost without the servers' noise.

The server processes and the clients share the machine's cores (2 here), so the figures are
the whole system's. XGBoost's OpenMP threads are limited to HHPULSE_BENCH_OMP_THREADS (default
1; 0: the library's default) in (b) and (c): see OMP_THREADS below. Duration per round: HHPULSE_BENCH_SECONDS (default 20) / 4; rounds:
HHPULSE_BENCH_ROUNDS (default 4). The model is trained on the synthetic demo market.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks._common import start_predictor, timed_request
from benchmarks.bench_serving import TEXTS, _bundle, _load

CLIENTS = 4
# XGBoost's OpenMP threads, in the servers and in (c): on a loaded machine its default (every
# core) made one single-instance predict 80x slower (112 ms instead of 1.4 ms, load 15 on 2
# cores), which drowned the metrics' cost in noise. HHPULSE_BENCH_OMP_THREADS=0: the default.
OMP_THREADS = os.environ.get("HHPULSE_BENCH_OMP_THREADS", "1")


def _wait(port: int, path: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not become ready")


def _exchanges(bundle_dir: Path, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (request body, response body) pairs as hhpulse's predictor answers them (v1)."""
    from hhpulse.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    preds = bundle.predict(TEXTS)
    out = []
    for i in range(n):
        k = i % len(TEXTS)
        req = {"instances": [{"responsibility": TEXTS[k], "id": str(90000000 + i)}]}
        out.append(
            (json.dumps(req, ensure_ascii=False).encode(), json.dumps({"predictions": [preds[k]]}).encode())
        )
    return out


def _post_events(
    port: int, exchanges: list[tuple[bytes, bytes]], seconds: float
) -> tuple[float, np.ndarray, int]:
    """4 keep-alive clients post request then response event of successive exchanges: (events/s, latencies ms, errors)."""
    from hhpulse.watch.logsink import REQUEST, RESPONSE, agent_headers

    now = datetime.now(timezone.utc)
    lock, counter, lat, errors = threading.Lock(), [0], [], [0]
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            with lock:
                i = counter[0]
                counter[0] += 1
            req, resp = exchanges[i % len(exchanges)]
            eid = f"bench-{w}-{i}"
            for kind, body in ((REQUEST, req), (RESPONSE, resp)):
                seconds_taken, status = timed_request(
                    conn, "POST", "/", body, agent_headers(eid, kind, time=now)
                )
                mine.append(seconds_taken)
                errors[0] += status != 200
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat) / (time.monotonic() - start), np.array(lat) * 1000, errors[0]


def _core_ceiling(exchanges: list[tuple[bytes, bytes]], seconds: float, root: Path) -> float:
    """Events/s through parse_event + LogSink.accept + the writer, in process, no HTTP."""
    from hhpulse.data.store import LocalStore
    from hhpulse.watch.logsink import REQUEST, RESPONSE, agent_headers, make_sink, parse_event

    sink = make_sink(
        LocalStore(root / "core-store"), batch_records=5000, batch_bytes=4 << 20, batch_seconds=60
    )
    assert sink.try_store()  # the first write (a heartbeat) makes it ready, as its server's timer does
    now = datetime.now(timezone.utc)
    heads = {
        kind: {k.lower(): v for k, v in agent_headers("x", kind, time=now).items()}
        for kind in (REQUEST, RESPONSE)
    }
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        req, resp = exchanges[n % len(exchanges)]
        eid = f"core-{n}"
        for kind, body in ((REQUEST, req), (RESPONSE, resp)):
            sink.accept(parse_event({**heads[kind], "ce-id": eid}, body))
        n += 1
    elapsed = time.perf_counter() - start
    sink.close()
    return 2 * n / elapsed


def _inprocess_cost(bundle_dir: Path, rounds: int) -> dict[str, list[float]]:
    """Microseconds per single-instance ``VacancyModel.predict`` (the handler that observes the
    metrics) with the input histograms on and off, in interleaved 1-second rounds: the metrics'
    own cost without HTTP's noise."""
    from hhpulse.model.bundle import load_bundle
    from hhpulse.model.inputs import Instance
    from hhpulse.serving.model import VacancyModel

    bundle = load_bundle(bundle_dir)
    models = {name: VacancyModel(bundle=bundle, input_metrics=name == "on") for name in ("on", "off")}
    for m in models.values():
        m.load()
    payloads = [{"protocol": "v1", "instances": [Instance(t)]} for t in TEXTS]
    out: dict[str, list[float]] = {"on": [], "off": []}
    with threadpool_limits(int(OMP_THREADS) or None):
        for r in range(2 * rounds):
            for name in ("on", "off") if r % 2 == 0 else ("off", "on"):
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < 1.0:
                    models[name].predict(payloads[n % len(payloads)])
                    n += 1
                out[name].append((time.perf_counter() - start) / n * 1e6)
    return out


def _start_predictor(bundle_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    return start_predictor(
        bundle_dir, port, *extra, env={"OMP_NUM_THREADS": OMP_THREADS} if OMP_THREADS != "0" else {}
    )


def main() -> None:
    import logging

    from hhpulse.data.store import LocalStore
    from hhpulse.watch.served import served_keys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import free_port

    logging.getLogger("hhpulse").setLevel(logging.WARNING)
    seconds = float(os.environ.get("HHPULSE_BENCH_SECONDS", "20"))
    rounds = int(os.environ.get("HHPULSE_BENCH_ROUNDS", "4"))
    with tempfile.TemporaryDirectory(prefix="hhpulse-monitor-bench-") as tmp:
        root = Path(tmp)
        bundle_dir = _bundle(root)
        exchanges = _exchanges(bundle_dir, 1000)
        ceiling = _core_ceiling(exchanges, min(seconds, 5), root)

        # (a) the sink over HTTP
        store_dir, port = root / "sink-store", free_port()
        sink = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hhpulse.cli",
                "logsink",
                "--store",
                str(store_dir),
                "--port",
                str(port),
                "--batch-records",
                "5000",
                "--drain-seconds",
                "0",
                "--log-level",
                "warning",
                # as the chart runs it: events checked against the InferenceService that agent_headers names
                "--inference-service",
                "hhpulse",
                "--namespace",
                "default",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(port, "/readyz", sink)
            _post_events(port, exchanges, 2)  # warm up
            eps, lat, errors = _post_events(port, exchanges, seconds)
        finally:
            sink.terminate()
            sink.wait(timeout=60)
        batches = len(served_keys(LocalStore(store_dir)))

        inproc = _inprocess_cost(bundle_dir, rounds)

        # (b) the predictor, input metrics on and off, interleaved rounds
        ports = {"on": free_port(), "off": free_port()}
        servers = {
            "on": _start_predictor(bundle_dir, ports["on"]),
            "off": _start_predictor(bundle_dir, ports["off"], "--no-input-metrics"),
        }
        rps: dict[str, list[float]] = {"on": [], "off": []}
        p99: dict[str, list[float]] = {"on": [], "off": []}
        try:
            for name, proc in servers.items():
                _wait(ports[name], "/v2/health/ready", proc)
            single = json.dumps({"instances": [TEXTS[0]]}).encode()
            for name in servers:
                _load(ports[name], single, 2)  # warm up
            for r in range(rounds):
                for name in ("on", "off") if r % 2 == 0 else ("off", "on"):
                    x, lat_ms, err = _load(ports[name], single, seconds / 4, clients=CLIENTS)
                    if err:
                        raise RuntimeError(f"{err} errors from the predictor with input metrics {name}")
                    rps[name].append(x)
                    p99[name].append(float(np.percentile(lat_ms, 99)))
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    print(
        f"(a) logsink core in process (parse + pair + write, no HTTP): {ceiling:8.0f} events/s  (the ceiling)"
    )
    print(
        f"    logsink over HTTP, {CLIENTS} keep-alive clients:          {eps:8.0f} events/s  "
        f"({eps / 2:.0f} records/s, one instance per call)  p50 {np.percentile(lat, 50):5.2f} ms  "
        f"p99 {np.percentile(lat, 99):5.2f} ms  errors {errors}  batches written {batches}"
    )
    print(f"    HTTP/core = {eps / ceiling:.2f}")
    print(
        f"(b) predictor, single-instance v1, {CLIENTS} clients, {rounds} interleaved rounds of {seconds / 4:.0f} s, OMP_NUM_THREADS={OMP_THREADS}:"
    )
    for name in ("on", "off"):
        print(
            f"    input metrics {name:>3}: "
            + " ".join(f"{x:6.0f}" for x in rps[name])
            + f" req/s  median {np.median(rps[name]):6.0f}  p99 median {np.median(p99[name]):5.1f} ms"
        )
    ratio = np.median(rps["on"]) / np.median(rps["off"])
    print(f"    on/off = {ratio:.3f} (median req/s; 1.0 = the input histograms cost nothing measurable)")
    on_us, off_us = np.median(inproc["on"]), np.median(inproc["off"])
    print(
        f"(c) in process, VacancyModel.predict of one instance, {2 * rounds} interleaved 1 s rounds: "
        f"metrics on {on_us:6.1f} us, off {off_us:6.1f} us (medians): the input metrics cost "
        f"{on_us - off_us:+.1f} us a call ({(on_us / off_us - 1) * 100:+.1f}%)"
    )
