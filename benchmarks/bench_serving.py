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

(g) side by side: a no-op ``kserve.Model`` (benchmarks/_noop_server.py) and the predictor with the
    linear winners and with the XGBoost winners, each its own server on this machine, the same
    client: v1, one instance per request (a text, its title and its structured fields: what the
    XGBoost winners' dense input reads), one sequential keep-alive connection, in interleaved rounds
    (HHPULSE_BENCH_ROUNDS, default 6, of HHPULSE_BENCH_ROUND_SECONDS, default 5, per server; the
    order rotates each round), each server pinned to the last CPU and the client to the others
    (HHPULSE_BENCH_PIN=0: not pinned). Beside them, the predictor's request path alone
    (benchmarks/_answered_predictor.py: the predictor whose model answers repeated instances from
    a memo), the ceiling for any model. It prints each server's median req/s, p50 and p99 over the rounds and
    the ratio of the medians against the no-op model (goal: >= 0.7), with the load average. The
    winners: each task's default candidate of that kind, trained and calibrated as the pipeline
    does, on the first HHPULSE_BENCH_VACANCIES (6000) vacancies of ../shared's real dump (the
    demo market when it is absent). With HHPULSE_BENCH_BASELINE_SRC=<a checkout's src folder>,
    that version's predictor serves the same bundles in the same rounds (before/after in one run).
    In process, per winner kind: ModelBundle.predict of one instance, repeated texts (the
    tokenizer's cache hits, as in the rounds) and texts it has not seen.

(h) v2, a batch of 100 texts per request: the JSON body and answer against the binary tensor
    extension (raw BYTES input after a JSON header, all outputs raw: what tritonclient sends
    and asks for by default), on one server, one sequential keep-alive client, interleaved
    rounds (HHPULSE_BENCH_ROUNDS, default 6, of HHPULSE_BENCH_ROUND_SECONDS, default 5, each);
    medians of the rounds and the ratio binary / JSON of req/s (goal: >= 1, binary not slower).
    HHPULSE_BENCH_ONLY=binary runs only (h); =side-by-side only (g).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._common import start_predictor

TEXTS = [
    "Разработка backend-сервисов на Python. Проектирование REST API",
    "Доставка заказов клиентам. Приём оплаты от клиентов",
    "Руководство командой. Найм и развитие сотрудников. Администрирование Kubernetes-кластеров",
    "Ведение бухгалтерского и налогового учёта. Подготовка отчётности",
]
# (g)'s requests: each text as a full instance, with a title and structured fields (which the
# XGBoost winners' dense input reads; the linear winners and the no-op model ignore them)
INSTANCES = [
    {"responsibility": TEXTS[0], "name": "Python-разработчик", "experience": "between3And6", "schedule": "remote",
     "employment": "full", "area": "Москва", "employer": "1740", "professional_roles": ["96"],
     "has_test": False, "response_letter_required": False},
    {"responsibility": TEXTS[1], "name": "Курьер", "experience": "noExperience", "schedule": "shift",
     "employment": "part", "area": "Санкт-Петербург", "employer": "unseen-1", "has_test": False},
    {"responsibility": TEXTS[2], "name": "Руководитель отдела", "experience": "moreThan6", "area": "Москва",
     "professional_roles": ["104", "96"], "response_letter_required": True},
    {"responsibility": TEXTS[3], "name": "Бухгалтер", "experience": "between1And3", "schedule": "fullDay",
     "employment": "full", "area": "Казань"},
]  # fmt: skip


def _bundle(root: Path) -> Path:
    from dataclasses import replace

    from hhpulse.config import load_candidates
    from hhpulse.data.collect import collect
    from hhpulse.data.history_store import load_history, rates_by_run, rebuild_history
    from hhpulse.data.sources import make_source
    from hhpulse.data.store import LocalStore
    from hhpulse.flows.workflow import train_from_history

    store = LocalStore(root / "store")
    for _ in range(2):
        collect(make_source("demo", demo_size=100), store, progress=False)
    rebuild_history(store)
    out = root / "bundle"
    # XGBoost trained on one thread: on a busy machine, far quicker than on all (the same trees)
    candidates = [
        replace(c, params={**c.params, "nthread": 1}) if c.kind == "xgboost" else c for c in load_candidates()
    ]
    train_from_history(load_history(store), rates_by_run(store), out, candidates=candidates, device="cpu")
    return out


def _load(
    url_port: int,
    body: bytes | list[bytes] | None,
    seconds: float,
    clients: int = 4,
    verb: str = "predict",
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[float, np.ndarray, int]:
    """``clients`` keep-alive connections POSTing ``body`` (a list: each in turn) to :predict
    (or to ``path`` with ``headers``; with ``body=None``, GETting /v2/health/ready) for
    ``seconds``: (requests/s, latencies in ms, errors)."""
    path = path or f"/v1/models/hhpulse:{verb}"
    headers = headers if headers is not None else {"Content-Type": "application/json"}
    bodies = body if isinstance(body, list) else [body]
    lat: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            body = bodies[len(mine) % len(bodies)]
            if body is None:
                conn.request("GET", "/v2/health/ready")
            else:
                conn.request("POST", path, body, headers)
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


def free_port() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipelines.e2e import free_port as free

    return free()


def _start_predictor(
    bundle_dir: Path, port: int, *, workers: str = "1", src: str | None = None
) -> subprocess.Popen:
    """``python -m hhpulse.serving`` on ``port`` (with ``src`` first on PYTHONPATH: that checkout's hhpulse)."""
    env = {}
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    return start_predictor(bundle_dir, port, "--workers", workers, env=env)


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} was not ready in {timeout:.0f} s")


def main() -> None:
    only = os.environ.get("HHPULSE_BENCH_ONLY")
    if only == "binary":
        binary_against_json()
        return
    if only != "side-by-side":
        predictor_under_load()
        binary_against_json()
    side_by_side()


# -- (h) v2: the binary tensor extension against JSON, a batch of 100 texts ------------------------------

V2_PATH = "/v2/models/hhpulse/infer"


def v2_bodies(texts: list[str]) -> tuple[bytes, tuple[bytes, dict[str, str]]]:
    """The same request as a v2 JSON body, and as the binary extension (the texts as one raw
    BYTES tensor, every output asked for raw) with its headers."""
    tensor = {"name": "responsibility", "datatype": "BYTES", "shape": [len(texts)]}
    as_json = json.dumps({"inputs": [{**tensor, "data": texts}]}, ensure_ascii=False).encode()
    raw = b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts))
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return as_json, (header + raw, {"Inference-Header-Content-Length": str(len(header))})


def binary_against_json() -> None:
    """(h)."""
    import logging

    logging.getLogger("hhpulse").setLevel(logging.WARNING)
    rounds = int(os.environ.get("HHPULSE_BENCH_ROUNDS", "6"))
    seconds = float(os.environ.get("HHPULSE_BENCH_ROUND_SECONDS", "5"))
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(100)]
    as_json, (binary, binary_headers) = v2_bodies(texts)
    kinds = {
        "JSON": (as_json, {"Content-Type": "application/json"}),
        "binary": (binary, binary_headers),
    }
    with tempfile.TemporaryDirectory(prefix="hhpulse-serve-bench-") as tmp:
        bundle_dir = _bundle(Path(tmp))
        port = free_port()
        server = _start_predictor(bundle_dir, port)
        try:
            _wait_ready(server, port)
            runs: dict[str, list[tuple[float, np.ndarray, int]]] = {k: [] for k in kinds}
            for name, (body, headers) in kinds.items():  # warm up, and check both are answered
                _, _, errors = _load(port, body, 1, clients=1, path=V2_PATH, headers=headers)
                if errors:
                    raise RuntimeError(f"the {name} request was refused")
            names = list(kinds)
            for r in range(rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    body, headers = kinds[name]
                    runs[name].append(_load(port, body, seconds, clients=1, path=V2_PATH, headers=headers))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"(h) v2, 100 texts per request ({len(as_json)} B as JSON, {len(binary)} B binary), 1 sequential "
        f"client; median of {rounds} interleaved rounds of {seconds:.0f} s"
    )
    rps = {}
    for name, rs in runs.items():
        rps[name] = float(np.median([x[0] for x in rs]))
        p50 = float(np.median([np.percentile(x[1], 50) for x in rs]))
        p99 = float(np.median([np.percentile(x[1], 99) for x in rs]))
        each = " ".join(f"{x[0]:.1f}" for x in rs)
        print(f"    {name:<7} {rps[name]:7.1f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
              f"errors {sum(x[2] for x in rs)}  (rounds: {each})")  # fmt: skip
    print(f"    binary / JSON req/s = {rps['binary'] / rps['JSON']:.2f} (goal >= 1: binary not slower)")
    print(f"    load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def predictor_under_load() -> None:
    """(a)-(f)."""
    import logging

    import psutil

    from hhpulse.model.bundle import load_bundle

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

        port = free_port()
        server = _start_predictor(bundle_dir, port, workers=os.environ.get("HHPULSE_BENCH_WORKERS", "1"))
        try:
            _wait_ready(server, port)
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


# -- (g) side by side with a no-op kserve.Model -------------------------------------------------------


def _winner_bundles(root: Path) -> tuple[dict[str, Path], str]:
    """A bundle with the linear winners and one with the XGBoost winners (each task's default
    candidate of that kind, on one vectorizer, calibrated on validation as the pipeline does),
    and a line on the data they were trained on."""
    from dataclasses import replace

    import pandas as pd

    from benchmarks._common import REAL_DUMP
    from hhpulse.config import TASKS, LabelConfig, load_candidates
    from hhpulse.model.bundle import build_bundle
    from hhpulse.model.calibration import calibrate_winners
    from hhpulse.model.dataset import build_dataset
    from hhpulse.model.train import featurize, fit_on

    if REAL_DUMP.is_file():
        from hhpulse.flows.workflow import history_from_data

        n = int(os.environ.get("HHPULSE_BENCH_VACANCIES", "6000"))
        history, rates, _ = history_from_data(str(REAL_DUMP))
        history = history.sort_values("id", key=lambda ids: pd.to_numeric(ids, errors="coerce")).head(n)
        about = f"the first {len(history)} vacancies (by id) of {REAL_DUMP.name}"
    else:
        from hhpulse.data.collect import collect
        from hhpulse.data.history_store import load_history, rates_by_run, rebuild_history
        from hhpulse.data.sources import make_source
        from hhpulse.data.store import LocalStore

        store = LocalStore(root / "demo-store")
        for _ in range(2):
            collect(make_source("demo", demo_size=300), store, progress=False)
        rebuild_history(store)
        history, rates = load_history(store), rates_by_run(store)
        about = f"the demo market ({len(history)} vacancies; real data not found at {REAL_DUMP})"
    dataset = build_dataset(history, rates)
    vec, sets = featurize(dataset)
    out = {}
    for kind, label in (("logreg", "linear"), ("xgboost", "XGBoost")):
        models = {}
        for task in TASKS:
            config = next(c for c in load_candidates() if c.task == task and c.kind == kind)
            if kind == "xgboost":  # trained on one thread: on a busy machine, far quicker than on all
                config = replace(config, params={**config.params, "nthread": 1})
            models[task] = fit_on(sets[task], config, device="cpu")
        calibrators, _ = calibrate_winners(dataset, vec, models)
        out[label] = build_bundle(
            root / kind,
            vectorizer=vec,
            models=models,
            cohorts={t: dataset.tasks[t].classes for t in TASKS},
            label_config=LabelConfig().to_dict(),
            metrics={},
            card={},
            calibrators=calibrators,
        )
    sizes = {t: len(dataset.tasks[t].frame) for t in TASKS}
    return out, f"{about}: {sizes} labelled rows, {vec.n_features} features"


def _in_process(bundle_dir: Path) -> tuple[float, float]:
    """ModelBundle.predict of one instance (:data:`INSTANCES`), ms: repeated texts (cache hits),
    and unseen ones."""
    from hhpulse.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    for i in range(200):
        bundle.predict([INSTANCES[i % len(INSTANCES)]])
    lat = []
    for i in range(2000):
        t = time.perf_counter()
        bundle.predict([INSTANCES[i % len(INSTANCES)]])
        lat.append(time.perf_counter() - t)
    fresh = []
    for i in range(1000):  # never seen by the tokenizer's cache: a counter makes each text new
        inst = INSTANCES[i % len(INSTANCES)]
        inst = {**inst, "responsibility": f"{inst['responsibility']} {i} и {i * 7 % 1000} задача{i}"}
        t = time.perf_counter()
        bundle.predict([inst])
        fresh.append(time.perf_counter() - t)
    return float(np.median(lat) * 1000), float(np.median(fresh) * 1000)


def _in_process_elsewhere(bundle_dir: Path, src: str) -> tuple[float, float]:
    """:func:`_in_process` with the hhpulse of another checkout's ``src`` folder."""
    code = "import sys; from benchmarks.bench_serving import _in_process; print(*_in_process(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle_dir)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=str(Path(__file__).resolve().parents[1]),
    ).stdout.split()
    return float(out[-2]), float(out[-1])


_CLIENT_CPUS: set[int] | None = None  # this process's CPUs before _pin_apart


def _pin_apart(pids: list[int]) -> str:
    """Every thread of the servers ``pids`` on this machine's last CPU and the client (this
    process, whose load threads inherit it) on the others, so that no round's figure depends on
    where the scheduler put the client and the server (the rest of the spread between rounds
    stays: median them). HHPULSE_BENCH_PIN=0, or a single CPU, leaves placement to the
    scheduler. Says which."""
    global _CLIENT_CPUS
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if os.environ.get("HHPULSE_BENCH_PIN", "1") == "0" or len(cpus) < 2:
        return "not pinned to CPUs"
    server, client = {cpus[-1]}, set(cpus[:-1])
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), server)
    _CLIENT_CPUS = set(cpus)
    os.sched_setaffinity(0, client)
    return f"each server on CPU {cpus[-1]}, the client on CPU {','.join(map(str, sorted(client)))}"


def _unpin() -> None:
    global _CLIENT_CPUS
    if _CLIENT_CPUS is not None:
        os.sched_setaffinity(0, _CLIENT_CPUS)
        _CLIENT_CPUS = None


def side_by_side() -> None:
    """(g)."""
    import logging

    logging.getLogger("hhpulse").setLevel(logging.WARNING)
    rounds = int(os.environ.get("HHPULSE_BENCH_ROUNDS", "6"))
    seconds = float(os.environ.get("HHPULSE_BENCH_ROUND_SECONDS", "5"))
    baseline = os.environ.get("HHPULSE_BENCH_BASELINE_SRC")
    bodies = [json.dumps({"instances": [t]}, ensure_ascii=False).encode() for t in INSTANCES]
    with tempfile.TemporaryDirectory(prefix="hhpulse-serve-bench-") as tmp:
        bundles, about = _winner_bundles(Path(tmp))
        print(f"(g) side by side; the winners trained on {about}", flush=True)
        for label, path in bundles.items():
            cached, fresh = _in_process(path)
            print(f"    in process, {label} winners: predict of one instance {cached:.3f} ms (repeated texts), "
                  f"{fresh:.3f} ms (unseen texts)")  # fmt: skip
            if baseline:
                cached, fresh = _in_process_elsewhere(path, baseline)
                print(f"    in process, {label} winners, baseline: {cached:.3f} ms (repeated texts), "
                      f"{fresh:.3f} ms (unseen texts)")  # fmt: skip
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            port = free_port()
            noop = [sys.executable, "-m", "benchmarks._noop_server", "--http_port", str(port)]
            cwd = str(Path(__file__).resolve().parents[1])
            proc = subprocess.Popen(noop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
            servers["no-op kserve.Model"] = (proc, port)
            port = free_port()  # the predictor around a model that answers from a memo
            answered = [
                sys.executable,
                "-m",
                "benchmarks._answered_predictor",
                "--model_dir",
                str(bundles["linear"]),
            ]
            proc = subprocess.Popen(
                [*answered, "--http_port", str(port), "--workers", "1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
            )
            servers["hhpulse, request path alone"] = (proc, port)
            for label, path in bundles.items():
                port = free_port()
                servers[f"hhpulse, {label} winners"] = (_start_predictor(path, port), port)
                if baseline:
                    port = free_port()
                    servers[f"baseline, {label} winners"] = (_start_predictor(path, port, src=baseline), port)
            for proc, port in servers.values():
                _wait_ready(proc, port)
            pinned = _pin_apart([proc.pid for proc, _ in servers.values()])
            for _, port in servers.values():
                _load(port, bodies, 1, clients=1)  # warm up
            runs: dict[str, list[tuple[float, np.ndarray, int]]] = {name: [] for name in servers}
            names = list(servers)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    runs[name].append(_load(servers[name][1], bodies, seconds, clients=1))
        finally:
            _unpin()
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    noop_rps = float(np.median([rps for rps, _, _ in runs["no-op kserve.Model"]]))
    print(
        f"    v1, one instance (text, title, structured fields) per request, 1 sequential client; median of {rounds} "
        f"interleaved rounds of {seconds:.0f} s; {pinned}"
    )
    noop_p50 = float(np.median([np.percentile(x[1], 50) for x in runs["no-op kserve.Model"]]))
    print(f"    {'server':<28} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  req/s ratio to no-op "
          "(goal >= 0.7), and no-op p50 / p50")  # fmt: skip
    for name, rs in runs.items():
        rps = float(np.median([x[0] for x in rs]))
        p50 = float(np.median([np.percentile(x[1], 50) for x in rs]))
        p99 = float(np.median([np.percentile(x[1], 99) for x in rs]))
        errors = sum(x[2] for x in rs)
        ratio = "" if name.startswith("no-op") else f"{rps / noop_rps:.2f}x  {noop_p50 / p50:.2f}x"
        each = " ".join(f"{x[0]:.0f}" for x in rs)
        print(f"    {name:<28} {rps:7.0f} {p50:7.2f} {p99:7.2f} {errors:6d}  {ratio:<13} (rounds: {each})")
    print(f"    load average during the run (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
