"""The KServe predictor under load, against the in-process ceiling measured in the same run.

(a) in-process ModelBundle.predict of single instances per second (the ceiling);
(b) the server's single-instance v1 throughput and p50/p99 latency, 4 concurrent keep-alive clients;
(c) the same with 100-instance batches;
(d) the server's RSS after the load;
(e) the HTTP floor: GET /v2/health/ready under the same clients (the stack without the model);
(f) single-instance v1 :explain next to :predict: in process and over HTTP, p50/p99 (aim: explain
    p99 < 3x predict p99).
Duration per phase: HHPULSE_BENCH_SECONDS (default 20); server workers: HHPULSE_BENCH_WORKERS (1). The model is trained on the synthetic demo
market (so the benchmark needs no shared data); the client shares the machine's cores with the server.
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
from pathlib import Path

import numpy as np

TEXTS = [
    "Разработка backend-сервисов на Python. Проектирование REST API",
    "Доставка заказов клиентам. Приём оплаты от клиентов",
    "Руководство командой. Найм и развитие сотрудников. Администрирование Kubernetes-кластеров",
    "Ведение бухгалтерского и налогового учёта. Подготовка отчётности",
]


def _bundle(root: Path) -> Path:
    from hhpulse.collect import collect
    from hhpulse.config import load_candidates
    from hhpulse.hh.sources import make_source
    from hhpulse.history import load_history, rates_by_run, rebuild_history
    from hhpulse.store import LocalStore
    from hhpulse.workflow import train_from_history

    store = LocalStore(root / "store")
    for _ in range(2):
        collect(make_source("demo", demo_size=100), store, progress=False)
    rebuild_history(store)
    out = root / "bundle"
    train_from_history(
        load_history(store), rates_by_run(store), out, candidates=load_candidates(), device="cpu"
    )
    return out


def _load(
    url_port: int, body: bytes | None, seconds: float, clients: int = 4, verb: str = "predict"
) -> tuple[float, np.ndarray, int]:
    """``clients`` keep-alive connections POSTing ``body`` to :predict (or, with ``body=None``,
    GETting /v2/health/ready) for ``seconds``: (requests/s, latencies in ms, errors)."""
    lat: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            if body is None:
                conn.request("GET", "/v2/health/ready")
            else:
                conn.request("POST", f"/v1/models/hhpulse:{verb}", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t)
            if resp.status != 200:
                errors[0] += 1
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return len(lat) / elapsed, np.array(lat) * 1000, errors[0]


def main() -> None:
    import logging

    import psutil

    from hhpulse.bundle import load_bundle

    logging.getLogger("hhpulse").setLevel(logging.WARNING)
    seconds = float(os.environ.get("HHPULSE_BENCH_SECONDS", "20"))
    with tempfile.TemporaryDirectory(prefix="hhpulse-serve-bench-") as tmp:
        bundle_dir = _bundle(Path(tmp))
        bundle = load_bundle(bundle_dir)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min(seconds, 5):
            bundle.predict([TEXTS[n % len(TEXTS)]])
            n += 1
        ceiling = n / (time.perf_counter() - start)
        inproc = {}
        for verb, fn in (("predict", bundle.predict), ("explain", bundle.explain)):
            fn([TEXTS[0]])
            lat = []
            stop = time.perf_counter() + min(seconds, 5)
            while time.perf_counter() < stop:
                t = time.perf_counter()
                fn([TEXTS[len(lat) % len(TEXTS)]])
                lat.append((time.perf_counter() - t) * 1000)
            inproc[verb] = np.array(lat)
        kinds = {t: m.config.kind for t, m in bundle.models.items()}

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import free_port

        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hhpulse.serving",
                "--model_dir",
                str(bundle_dir),
                "--http_port",
                str(port),
                "--workers",
                os.environ.get("HHPULSE_BENCH_WORKERS", "1"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/v2/health/ready")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            single = json.dumps({"instances": [TEXTS[0]]}).encode()
            batch = json.dumps({"instances": [TEXTS[i % 4] for i in range(100)]}).encode()
            _load(port, single, 2)  # warm up
            rps1, lat1, err1 = _load(port, single, seconds)
            rps100, lat100, err100 = _load(port, batch, seconds)
            floor, lat0, _ = _load(port, None, min(seconds, 10))
            _, lat_p1, _ = _load(port, single, min(seconds, 10), clients=1)
            _, lat_e1, err_e = _load(port, single, min(seconds, 10), clients=1, verb="explain")
            rss = psutil.Process(server.pid).memory_info().rss
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"(a) in-process predict, single instances:       {ceiling:8.0f} /s  (the ceiling)")
    print(
        f"(b) server, single-instance v1, 4 clients:      {rps1:8.0f} req/s  p50 {np.percentile(lat1, 50):6.1f} ms  "
        f"p99 {np.percentile(lat1, 99):6.1f} ms  errors {err1}"
    )
    print(
        f"(c) server, 100-instance batches, 4 clients:    {rps100:8.1f} req/s  p50 {np.percentile(lat100, 50):6.1f} ms  "
        f"p99 {np.percentile(lat100, 99):6.1f} ms  ({rps100 * 100:.0f} instances/s)  errors {err100}"
    )
    print(f"(d) server RSS after load:                      {rss / 2**20:8.0f} MB")
    print(
        f"(e) HTTP floor: GET /v2/health/ready, 4 clients: {floor:6.0f} req/s  p50 {np.percentile(lat0, 50):6.1f} ms"
        "  (uvicorn, FastAPI, kserve's middlewares and the clients, without the model)"
    )
    p = {k: (np.percentile(v, 50), np.percentile(v, 99)) for k, v in inproc.items()}
    hp, he = (
        (np.percentile(lat_p1, 50), np.percentile(lat_p1, 99)),
        (np.percentile(lat_e1, 50), np.percentile(lat_e1, 99)),
    )
    print(f"(f) one instance, winners {kinds}:")
    print(
        f"    in process  predict p50 {p['predict'][0]:6.2f} ms p99 {p['predict'][1]:6.2f} ms | explain p50 "
        f"{p['explain'][0]:6.2f} ms p99 {p['explain'][1]:6.2f} ms | explain/predict p99 {p['explain'][1] / p['predict'][1]:.2f}x"
    )
    print(
        f"    HTTP, 1 client predict p50 {hp[0]:6.2f} ms p99 {hp[1]:6.2f} ms | explain p50 {he[0]:6.2f} ms p99 "
        f"{he[1]:6.2f} ms | explain/predict p99 {he[1] / hp[1]:.2f}x (aim < 3x)  errors {err_e}"
    )
    print(f"(b)/(a) = {rps1 / ceiling:.2f}   targets: single p99 < 20 ms, (b)/(a) >= 0.5, batch p50 < 50 ms")
    print(
        f"(b)/(e) = {rps1 / floor:.2f}: per request, the model costs {1000 / ceiling:.2f} ms in process; "
        f"the server spends {1000 / rps1 - 1000 / floor:.2f} ms more than the floor's {1000 / floor:.2f} ms "
        "(2 cores shared by the server and the 4 clients)"
    )
