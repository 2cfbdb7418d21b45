"""The KServe predictor in a real kserve.ModelServer on a free port, over real HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from conftest import free_port
from hhpulse.config import CandidateConfig
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import train_from_history
from hhpulse.model.bundle import load_bundle

FAST = [
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig(
        "demand-xgb", "demand", "xgboost", {"max_depth": 3, "n_estimators": 20, "learning_rate": 0.3}
    ),
]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def bundle_dir(demo_store, tmp_path_factory):
    store = demo_store
    out = tmp_path_factory.mktemp("b") / "bundle"
    train_from_history(load_history(store), rates_by_run(store), out, candidates=FAST, device="cpu")
    return out


def start_server(model_dir, *extra):
    """Start ``python -m hhpulse.serving``; its output goes to a file (a pipe nobody reads
    fills up and stalls the server), read back with :func:`server_log`."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hhpulse.serving",
            "--model_dir",
            str(model_dir),
            "--http_port",
            str(port),
            "--max_instances",
            "50",
            "--max_text_chars",
            "300",
            "--max_body_bytes",
            "20000",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = log.name
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def server_log(proc):
    with open(proc.log_path, encoding="utf-8") as fh:
        return fh.read()


def stop_server(proc):
    proc.terminate()
    proc.wait(timeout=30)
    return server_log(proc)


def wait_ready(proc, url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {server_log(proc)}")
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.fixture(scope="module")
def server_proc(bundle_dir):
    proc, url = start_server(bundle_dir)
    try:
        wait_ready(proc, url)
        yield proc, url
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def server(server_proc):
    return server_proc[1]


def test_access_log_is_one_json_line_per_request_without_the_text(server_proc):
    proc, url = server_proc
    secret = "Уникальный текст для проверки журнала"
    r = requests.post(f"{url}/v1/models/hhpulse:predict", json={"instances": [secret, secret]}, timeout=10)
    assert r.status_code == 200
    time.sleep(0.3)
    lines = [json.loads(x) for x in server_log(proc).splitlines() if x.startswith("{")]
    requests_logged = [x for x in lines if x.get("event") == "request" and x["instances"] == 2]
    assert requests_logged and requests_logged[-1]["status"] == 200
    assert (
        requests_logged[-1]["latency_ms"] > 0 and requests_logged[-1]["path"] == "/v1/models/hhpulse:predict"
    )
    assert secret not in server_log(proc)
    # uvicorn's access line and kserve's timing lines would say the same again: muted below debug
    assert "uvicorn.access" not in server_log(proc) and "kserve.trace" not in server_log(proc)


def test_v1_round_trip_matches_hhpulse_predict(server, bundle_dir, tmp_path):
    instances = [
        "Доставка заказов клиентам",
        {"responsibility": "Руководство командой", "name": "Руководитель", "requirement": "Опыт от 5 лет"},
    ]
    r = requests.post(f"{server}/v1/models/hhpulse:predict", json={"instances": instances}, timeout=10)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "\n".join(
            json.dumps(i if isinstance(i, dict) else {"responsibility": i}, ensure_ascii=False)
            for i in instances
        )
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "predict",
            "--model",
            str(bundle_dir),
            "--input",
            str(inp),
            "--output",
            str(tmp_path / "out.jsonl"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    cli = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    cli = [{k: v for k, v in row.items() if k != "fields_used"} for row in cli]  # batch-only field
    assert preds == cli


def test_v2_round_trip_with_and_without_id(server, bundle_dir):
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": "responsibility",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["Доставка заказов", "Руководство командой"],
            },
            {"name": "name", "datatype": "BYTES", "shape": [2], "data": ["Курьер", "Руководитель"]},
        ],
    }
    r = requests.post(f"{server}/v2/models/hhpulse/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "hhpulse"
    got = {o["name"]: o for o in out["outputs"]}
    assert set(got) == {"salary_cohort", "salary_probabilities", "demand_cohort", "demand_probabilities"}
    assert (
        got["salary_probabilities"]["shape"] == [2, 4] and got["salary_probabilities"]["datatype"] == "FP64"
    )
    expected = load_bundle(bundle_dir).predict(
        [
            {"responsibility": "Доставка заказов", "name": "Курьер"},
            {"responsibility": "Руководство командой", "name": "Руководитель"},
        ]
    )
    assert got["salary_cohort"]["data"] == [p["salary"]["cohort"] for p in expected]
    # the probabilities as v1 gives them: 6 decimals, no float32 digits in the JSON
    cohorts = load_bundle(bundle_dir).cohorts["salary"]
    assert got["salary_probabilities"]["data"] == [
        p["salary"]["probabilities"][c] for p in expected for c in cohorts
    ]
    assert all(len(repr(v).split(".")[-1]) <= 6 for v in got["salary_probabilities"]["data"])
    del body["id"]
    r = requests.post(f"{server}/v2/models/hhpulse/infer", json=body, timeout=10)
    assert r.status_code == 200 and r.json()["id"]  # generated


def test_metadata_and_health(server, bundle_dir):
    meta = requests.get(f"{server}/v2/models/hhpulse", timeout=5).json()
    assert [i["name"] for i in meta["inputs"]] == ["responsibility", "name", "requirement"]
    assert [i["parameters"]["optional"] for i in meta["inputs"]] == [False, True, True]
    outputs = {o["name"]: o for o in meta["outputs"]}
    bundle = load_bundle(bundle_dir)
    for task in ("salary", "demand"):
        # comma-separated, in column order: the same string as in infer answers
        assert outputs[f"{task}_probabilities"]["parameters"]["cohorts"] == ",".join(bundle.cohorts[task])
        assert outputs[f"{task}_probabilities"]["shape"] == [-1, len(bundle.cohorts[task])]
        assert outputs[f"{task}_cohort"]["parameters"]["cohorts"] == ",".join(bundle.cohorts[task])
    assert meta["versions"] == [bundle.version]
    assert requests.get(f"{server}/v2/models/nope", timeout=5).status_code == 404
    assert requests.get(f"{server}/v1/models/hhpulse", timeout=5).json()["ready"] is True


BAD = [
    ("invalid json", b"{not json", JSON, 400, "not valid JSON"),
    ("no instances", {"rows": []}, None, 400, "no 'instances'"),
    ("instance type", {"instances": [5]}, None, 400, "must be a string or an object"),
    ("empty text", {"instances": ["   "]}, None, 400, "empty"),
    ("non-string field", {"instances": [{"responsibility": "ok", "name": 7}]}, None, 400, "must be a string"),
    ("unknown field", {"instances": [{"responsibility": "ok", "salary": 1}]}, None, 400, "unknown field"),
    ("bad id", {"instances": [{"responsibility": "ok", "id": [1]}]}, None, 400, "id: must be a string or"),
    ("text too long", {"instances": ["x" * 301]}, None, 400, "over the limit of 300"),
    ("too many", {"instances": ["a"] * 51}, None, 400, "over the limit of 50"),
    ("body too large", {"instances": ["a" * 250] * 100}, None, 413, "over the limit of 20000"),
    # JSON without a Content-Type is taken (test_serving_clients.py); anything else is not
    (
        "no content type, not json",
        b"instances=a",
        {},
        400,
        "not valid JSON (and it came without a Content-Type)",
    ),
    ("wrong content type", b'{"instances": ["a"]}', {"Content-Type": "text/plain"}, 415, "text/plain"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_v1_input_is_a_4xx_and_the_server_keeps_serving(server, case, body, headers, status, message):
    assert_refused_then_serving(f"{server}/v1/models/hhpulse:predict", body, headers, status, message)


def assert_refused_then_serving(url, body, headers, status, message):
    """``body`` (JSON, or raw bytes with ``headers``) gets ``status`` and ``message``, and the next
    good request to ``url`` is answered."""
    if isinstance(body, bytes):
        r = requests.post(url, data=body, headers=headers, timeout=10)
    else:
        r = requests.post(url, json=body, timeout=10)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert requests.post(url, json={"instances": ["Доставка"]}, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "responsibility", "datatype": "INT32", "shape": [1], "data": [1]}], "datatype BYTES"),
        ([{"name": "responsibility", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}], "shape"),
        ([{"name": "responsibility", "datatype": "BYTES", "shape": [2], "data": ["a"]}], "shape"),
        (
            [{"name": "name", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            "'responsibility' input tensor is required",
        ),
        (
            [
                {"name": "responsibility", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                {"name": "name", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
            ],
            "rows",
        ),
    ],
)
def test_bad_v2_tensors(server, inputs, message):
    r = requests.post(f"{server}/v2/models/hhpulse/infer", json={"inputs": inputs}, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.text


def test_metrics_expose_rejections_and_cohorts(server):
    requests.post(f"{server}/v1/models/hhpulse:predict", json={"instances": [5]}, timeout=10)
    text = requests.get(f"{server}/metrics", timeout=5).text
    assert 'hhpulse_rejected_requests_total{reason="bad_instance"}' in text
    assert "hhpulse_predicted_cohorts_total{cohort=" in text
    assert "request_predict_seconds" in text  # kserve's own metrics stay on


def _samples(text, name):
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == name
        for s in fam.samples
    }


def test_metrics_observe_input_length_known_terms_and_model_info(server, bundle_dir):
    from hhpulse.model.text import analyze

    bundle = load_bundle(bundle_dir)
    text = "Разработка backend-сервисов на Python. Зубрёжка квазиэкспонент"
    tokens = analyze(text)
    share = sum(t in bundle.vectorizer.vocabulary("responsibility") for t in tokens) / len(tokens)
    assert 0 < share < 1  # the made-up words are unknown, the rest known
    before = requests.get(f"{server}/metrics", timeout=5).text
    r = requests.post(
        f"{server}/v1/models/hhpulse:predict",
        json={"instances": [text, {"responsibility": text, "id": "91234567"}]},  # the id is not an input
        timeout=10,
    )
    assert r.status_code == 200, r.text
    after = requests.get(f"{server}/metrics", timeout=5).text
    field = (("field", "responsibility"),)

    def delta(name, sample):
        b, a = _samples(before, name), _samples(after, name)
        return a[(sample, field)] - b.get((sample, field), 0.0)

    assert delta("hhpulse_input_chars", "hhpulse_input_chars_count") == 2
    assert delta("hhpulse_input_chars", "hhpulse_input_chars_sum") == 2 * len(text)
    assert delta("hhpulse_input_known_term_share", "hhpulse_input_known_term_share_count") == 2
    assert delta("hhpulse_input_known_term_share", "hhpulse_input_known_term_share_sum") == pytest.approx(
        2 * share
    )
    info = _samples(after, "hhpulse_model_info")
    assert info == {("hhpulse_model_info", (("model", "hhpulse"), ("version", bundle.version))): 1.0}


def test_input_metrics_can_be_turned_off(bundle_dir):
    from prometheus_client import REGISTRY

    from hhpulse.model.inputs import Instance
    from hhpulse.serving.model import VacancyModel

    def count():
        return REGISTRY.get_sample_value("hhpulse_input_chars_count", {"field": "responsibility"}) or 0.0

    payload = {"protocol": "v1", "instances": [Instance("Доставка заказов клиентам")]}
    for on, grows in ((False, 0), (True, 1)):
        model = VacancyModel(bundle=load_bundle(bundle_dir), input_metrics=on)
        model.load()
        start = count()
        assert model.predict(payload)["predictions"]
        assert count() - start == grows


def test_request_cli_against_the_server(server):
    run = [sys.executable, "-m", "hhpulse.cli", "request", "--url", server]
    p = subprocess.run([*run, "--text", "Доставка заказов"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "salary cohort" in p.stdout and "Доставка заказов" in p.stdout
    p = subprocess.run(
        [*run, "--protocol", "v2", "--json", "--text", "Доставка"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and json.loads(p.stdout)["outputs"]
    p = subprocess.run([*run, "--text", " "], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "HTTP 400" in p.stderr


def test_tampered_bundle_stops_start_up(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    (bad / "cohorts.json").write_text('{"salary": ["x"], "demand": ["y"]}')
    proc, _ = start_server(bad)
    proc.wait(timeout=60)
    out = server_log(proc)
    assert proc.returncode == 1
    assert "refusing to start" in out and "cohorts.json does not match its sha256" in out


def test_not_ready_before_load(bundle_dir):
    from hhpulse.serving import VacancyModel

    m = VacancyModel("hhpulse", str(bundle_dir))
    assert m.ready is False
    m.load()
    assert m.ready is True and m.bundle is not None


def test_workers_each_get_the_guard_and_the_model(bundle_dir):
    """--workers 2 runs uvicorn in spawned processes: each must have the guard, the model and
    the log settings (at debug, and only then, the request body is logged)."""
    proc, url = start_server(bundle_dir, "--workers", "2", "--log_level", "debug")
    try:
        wait_ready(proc, url, timeout=90)
        for _ in range(6):  # connections land on either worker
            r = requests.post(
                f"{url}/v1/models/hhpulse:predict",
                data=b'{"instances": ["x"]}',
                headers={"Content-Type": "text/plain"},
                timeout=10,
            )
            assert r.status_code == 415, r.text
            body = json.dumps({"instances": ["Доставка"]}, ensure_ascii=False).encode()
            r = requests.post(f"{url}/v1/models/hhpulse:predict", data=body, headers=JSON, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0]["salary"]["cohort"]
    finally:
        out = stop_server(proc)
    assert "Traceback" not in out, out
    assert '"event": "request"' in out and '"status": 415' in out, out  # each worker logs its requests
    assert "Доставка" in out  # debug logging shows the body


def test_one_log_format_with_kserve_and_uvicorn_lines_as_json(server_proc):
    """The serve log mixed hhpulse's JSON lines with kserve's and uvicorn's plain ones."""
    proc, url = server_proc
    requests.get(f"{url}/v1/models/hhpulse", timeout=5)
    lines = [x for x in server_log(proc).splitlines() if x.strip()]
    assert lines and all(x.startswith("{") for x in lines), [x for x in lines if not x.startswith("{")][:5]
    docs = [json.loads(x) for x in lines]
    loggers = {d["logger"] for d in docs}
    assert any(n.startswith("kserve") for n in loggers) and any(n.startswith("uvicorn") for n in loggers), (
        loggers
    )
    assert all({"time", "level", "logger"} <= set(d) for d in docs)


def test_error_bodies_are_one_json_style(server):
    """`{"error": "…"}` (hhpulse's guard) against `{"error":"…"}` (kserve's own errors)."""
    ours = requests.post(f"{server}/v1/models/hhpulse:predict", data=b"{not json", headers=JSON, timeout=5)
    theirs = requests.post(f"{server}/v1/models/nope:predict", json={"instances": ["x"]}, timeout=5)
    assert ours.status_code == 400 and theirs.status_code == 404
    for r in (ours, theirs):
        assert r.text.startswith('{"error":"'), r.text


def test_the_metadata_says_which_task_not_to_rely_on(server, bundle_dir):
    """An HTTP client saw `{"demand": {"cohort": "high", ... 0.789}}` with no caveat anywhere."""
    from hhpulse.model.evaluate import bundle_caveats

    expected = bundle_caveats(load_bundle(bundle_dir).metadata["metrics"])
    for path in ("/v1/models/hhpulse", "/v2/models/hhpulse"):
        meta = requests.get(f"{server}{path}", timeout=5).json()
        assert meta["reliability"] == expected, path
    assert requests.get(f"{server}/v1/models/hhpulse", timeout=5).json()["ready"] is True
    # the demo store's demand is learned from the age proxy: marked unreliable, with why
    demand = expected["demand"]
    assert demand["reliable"] is False and any("age proxy" in c for c in demand["caveats"])


def test_serve_with_a_store_logs_its_predictions_for_monitor(bundle_dir, tmp_path):
    """After ~400 predictions through `make serve STORE=...`, `hhpulse monitor` said `0 predictions`:
    only KServe's logger and `hhpulse logsink` wrote the log. The local loop now writes it too."""
    from hhpulse.data.store import LocalStore
    from hhpulse.model.registry import publish
    from hhpulse.watch.served import read_served

    store = LocalStore(tmp_path / "store")
    version = publish(store, bundle_dir).version
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hhpulse.cli",
                "serve",
                "--store",
                str(store.root),
                "--http-port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        proc.log_path = str(log)
        wait_ready(proc, url, timeout=90)
        for i in range(10):
            body = {
                "instances": [
                    {"responsibility": "Разработка на Python", "id": f"v{i}"},
                    "Доставка заказов",
                    "Учёт",
                ]
            }
            assert requests.post(f"{url}/v1/models/hhpulse:predict", json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 20  # the served log is written within seconds, while serving
        while time.monotonic() < deadline and len(list(read_served(store))) < 30:
            time.sleep(0.5)
        records = list(read_served(store))
        assert len(records) == 30 and {r["model_version"] for r in records} == {version}
        assert sum(r["id"] is not None for r in records) == 10
        look = subprocess.run(
            [sys.executable, "-m", "hhpulse.cli", "monitor", "--store", str(store.root)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert look.returncode == 0, look.stderr
        assert "in total: 30 predictions in 10 requests, 10 with a vacancy id" in look.stdout, look.stdout
        r = requests.post(f"{url}/v1/models/hhpulse:predict", json={"instances": ["последний"]}, timeout=10)
        assert r.status_code == 200
    finally:
        out = stop_server(proc)
    assert len(list(read_served(store))) == 31, out  # what was buffered is written on the way out
    assert "logging every prediction to" in out
