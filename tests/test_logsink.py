"""``hhpulse logsink``: KServe logger CloudEvents over real HTTP on loopback, into a real store.

The events carry the headers KServe's agent sends (kserve pkg/logger/worker.go: binary mode,
ce-id shared by the request and the response event, the request's Content-Type on both) and
the raw bodies of hhpulse's predictor.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from conftest import free_port
from hhpulse.data.store import LocalStore, S3Store
from hhpulse.watch.logsink import REQUEST, RESPONSE, LogSink, agent_headers, make_sink
from hhpulse.watch.logsink_http import run_server
from hhpulse.watch.served import ServedLogWriter, read_served, served_keys

T0 = datetime(2026, 3, 1, 9, 15, 2, 120000, tzinfo=timezone.utc)
SALARY = {"cohort": "mid", "probabilities": {"low": 0.2, "mid": 0.5, "high": 0.3}}
DEMAND = {"cohort": "high", "probabilities": {"low": 0.1, "medium": 0.3, "high": 0.6}}


def v1_pair(n=1, version="v20260301-070000", ids=True):
    instances = [
        {"responsibility": f"Разработка сервисов на Python {i}", **({"id": str(9000 + i)} if ids else {})}
        for i in range(n)
    ]
    preds = [{"salary": SALARY, "demand": DEMAND, "model_version": version} for _ in range(n)]
    return {"instances": instances}, {"predictions": preds}


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Sink:
    """A sink served in this process on a free port, until :meth:`stop`."""

    def __init__(self, store, wait_ready=True, **policy):
        defaults = {"batch_records": 1000, "batch_bytes": 1 << 22, "batch_seconds": 3600.0}
        self.sink = make_sink(store, **{**defaults, **policy})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop_event, ready = threading.Event(), threading.Event()
        self.rc = None

        def serve():
            self.rc = run_server(
                self.sink,
                host="127.0.0.1",
                port=self.port,
                max_event_bytes=100_000,
                drain=0.0,
                ready=ready,
                stop=self.stop_event,
            )

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.http = requests.Session()
        if wait_ready:  # ready once the store took its first write
            deadline = time.monotonic() + 10
            while self.http.get(self.url + "/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the sink did not become ready"
                time.sleep(0.02)

    def post(self, event_id, event_type, body, *, time=T0, raw=None, headers=None):
        h = agent_headers(event_id, event_type, time=time) if headers is None else headers
        data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
        return self.http.post(self.url + "/", data=data, headers=h, timeout=10)

    def exchange(self, event_id, request, response, *, response_first=False, time=T0):
        order = (
            [(RESPONSE, response), (REQUEST, request)]
            if response_first
            else [(REQUEST, request), (RESPONSE, response)]
        )
        return [self.post(event_id, kind, body, time=time) for kind, body in order]

    def metrics(self):
        return self.http.get(self.url + "/metrics", timeout=5).text

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)
        return self.rc


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_pairs_request_and_response_in_either_order(store):
    s = Sink(store)
    request, response = v1_pair(2)
    first = s.exchange("req-a", request, response)
    assert [r.status_code for r in first] == [200, 200]
    assert [r.json()["status"] for r in first] == ["waiting", "paired"]
    later = T0 + timedelta(minutes=3)
    second = s.exchange(
        "req-b",
        {"instances": ["Доставка заказов"]},
        {"predictions": [{"salary": SALARY, "demand": DEMAND, "model_version": "v2"}]},
        response_first=True,
        time=later,
    )
    assert [r.json()["status"] for r in second] == ["waiting", "paired"]
    assert served_keys(store) == []  # nothing due yet: one batch at the end
    assert s.stop() == 0
    (key,) = served_keys(store)
    assert key.startswith("served/2026-03-01/09-") and key.endswith(".jsonl.gz")
    records = list(read_served(store))
    assert [(r["request_id"], r["id"], r["model_version"]) for r in records] == [
        ("req-a", "9000", "v20260301-070000"),
        ("req-a", "9001", "v20260301-070000"),
        ("req-b", None, "v2"),
    ]
    assert records[0]["time"] == "2026-03-01T09:15:02.120Z"  # the request event's ce-time
    assert records[2]["time"] == "2026-03-01T09:18:02.120Z"
    assert records[0]["instance"] == {"responsibility": "Разработка сервисов на Python 0", "id": "9000"}
    assert records[1]["salary"] == SALARY and records[1]["demand"] == DEMAND


def test_v2_exchanges_are_logged_like_v1(store):
    s = Sink(store)
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "responsibility",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["Курьер", "Аналитик данных"],
            },
            {"name": "name", "datatype": "BYTES", "shape": [2, 1], "data": [["Курьер"], [None]]},
        ],
    }
    cohorts = "low,mid,high"
    response = {
        "model_name": "hhpulse",
        "model_version": "v7",
        "id": "r1",
        "parameters": {"model_version": "v7"},
        "outputs": [
            {
                "name": "salary_cohort",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["low", "high"],
                "parameters": {"cohorts": cohorts},
            },
            {
                "name": "salary_probabilities",
                "datatype": "FP32",
                "shape": [2, 3],
                "data": [0.7, 0.2, 0.1, 0.1, 0.2, 0.7],
                "parameters": {"cohorts": cohorts},
            },
            {
                "name": "demand_cohort",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["high", "low"],
                "parameters": {"cohorts": "low,high"},
            },
            {
                "name": "demand_probabilities",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": [0.4, 0.6, 0.9, 0.1],
                "parameters": {"cohorts": "low,high"},
            },
        ],
    }
    assert [r.status_code for r in s.exchange("v2-1", request, response)] == [200, 200]
    s.stop()
    records = list(read_served(store))
    assert [r["instance"] for r in records] == [
        {"responsibility": "Курьер", "name": "Курьер"},
        {"responsibility": "Аналитик данных"},
    ]
    assert records[1]["salary"] == {"cohort": "high", "probabilities": {"low": 0.1, "mid": 0.2, "high": 0.7}}
    assert records[0]["demand"]["cohort"] == "high" and {r["model_version"] for r in records} == {"v7"}


def test_batches_on_size_and_on_time(store):
    s = Sink(store, batch_records=3, batch_seconds=0.6)
    for i in range(3):
        s.exchange(f"id-{i}", *v1_pair(1))
    # the third record filled the batch: the timer thread is woken and writes it at once
    wait_for(lambda: len(served_keys(store)) == 1, timeout=0.5)
    s.exchange("id-3", *v1_pair(1))
    assert len(served_keys(store)) == 1
    deadline = time.monotonic() + 10
    while len(served_keys(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the timer writes the due batch
    assert len(served_keys(store)) == 2
    assert "hhpulse_logsink_batches_total 2" in s.metrics()
    s.stop()
    assert len(served_keys(store)) == 2  # nothing left for the shutdown to write
    assert sorted(r["request_id"] for r in read_served(store)) == ["id-0", "id-1", "id-2", "id-3"]


def test_full_sink_answers_503_and_takes_the_event_once_there_is_room(store):
    s = Sink(store, max_pending=2)
    request, response = v1_pair(1)
    assert s.post("a", REQUEST, request).status_code == 200
    assert s.post("b", REQUEST, request).status_code == 200
    full = s.post("c", REQUEST, request)
    assert full.status_code == 503 and full.headers["Retry-After"]
    assert "wait for their partner" in full.json()["error"]
    assert s.post("a", RESPONSE, response).json()["status"] == "paired"  # a response always pairs
    assert s.post("c", REQUEST, request).status_code == 200  # the retry finds room
    assert 'hhpulse_logsink_events_total{outcome="refused"} 1' in s.metrics()
    s.stop()


@pytest.fixture
def proxied_s3(s3_bucket, s3_env):
    """An S3 store behind the fault proxy (in front of moto): the tests make it refuse writes."""
    from faultproxy import FaultProxy

    with FaultProxy(s3_env) as proxy:
        yield proxy, S3Store(f"s3://{s3_bucket}/prod", endpoint_url=proxy.url)


def test_a_refusing_store_keeps_the_batch_answers_503_to_new_events_and_loses_nothing(proxied_s3):
    proxy, store = proxied_s3
    s = Sink(store, batch_records=2)
    rule = proxy.add("error:503", method="PUT", path=r"/served/", times=None)
    request, response = v1_pair(1)
    assert [r.status_code for r in s.exchange("a", request, response)] == [200, 200]  # buffered (1 of 2)
    r = s.exchange("b", request, response)[1]  # fills the batch: the timer's write is refused, kept
    assert r.status_code == 200
    wait_for(lambda: s.http.get(s.url + "/readyz", timeout=5).status_code == 503)  # after boto's retries
    assert rule.hits >= 1 and served_keys(store) == []
    refused = s.post("c", REQUEST, request)  # a new exchange: it would only wait on a refusing store
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "the store refuses writes" in refused.json()["error"]
    ready = s.http.get(s.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "the store refuses writes"
    assert (
        "hhpulse_logsink_store_ready 0" in s.metrics() and "hhpulse_logsink_buffered_records 2" in s.metrics()
    )
    proxy.clear()  # the store is back: the kept batch is retried with backoff, then events are taken
    wait_for(lambda: s.http.get(s.url + "/readyz", timeout=5).status_code == 200)
    assert [r.status_code for r in s.exchange("c", request, response)] == [200, 200]
    assert 'hhpulse_logsink_events_total{outcome="refused"} 1' in s.metrics()
    assert s.stop() == 0
    assert sorted(r["request_id"] for r in read_served(store)) == ["a", "b", "c"]


@pytest.mark.parametrize("fault", ["drop_reply", "reset_after", "reset", "error:500"])
def test_a_batch_write_through_a_lost_reply_or_a_reset_lands_once(proxied_s3, fault):
    """boto retries a batch PUT whose reply was lost (or that was reset, or answered 500):
    the batch has one key, so the retry writes the same object, never a second copy."""
    proxy, store = proxied_s3
    s = Sink(store, batch_records=2)
    rule = proxy.add(fault, method="PUT", path=r"/served/")
    request, response = v1_pair(1)
    for eid in ("a", "b"):
        assert [r.status_code for r in s.exchange(eid, request, response)] == [200, 200]
    wait_for(lambda: len(served_keys(store)) == 1)
    assert rule.hits == 1 and s.http.get(s.url + "/readyz", timeout=5).status_code == 200
    assert s.stop() == 0
    assert len(served_keys(store)) == 1
    assert sorted(r["request_id"] for r in read_served(store)) == ["a", "b"]


def test_a_store_that_never_took_a_write_is_not_ready_and_events_get_503(tmp_path, s3_env):
    """--store s3://nosuchbucket/p: not ready, and no event is taken (each would be lost)."""
    store = S3Store("s3://nosuchbucket-hhpulse/p")
    spill = tmp_path / "spill"
    s = Sink(store, wait_ready=False, spill_dir=spill)
    time.sleep(1.0)  # some ticks of the timer: each tries the store
    ready = s.http.get(s.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "the store refuses writes"
    request, response = v1_pair(1)
    for kind, body in ((REQUEST, request), (RESPONSE, response)):
        r = s.post("x", kind, body)
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert s.stop() == 0
    assert list(spill.glob("*")) == []  # nothing was taken, so nothing to spill


def test_shutdown_with_a_refusing_store_spills_and_the_next_start_writes_it_first(
    proxied_s3, tmp_path, caplog
):
    proxy, store = proxied_s3
    spill = tmp_path / "spill"
    s = Sink(store, spill_dir=spill)
    request, response = v1_pair(2)
    assert [r.status_code for r in s.exchange("kept-1", request, response)] == [200, 200]
    assert [r.status_code for r in s.exchange("kept-2", request, response)] == [200, 200]
    rule = proxy.add("error:503", method="PUT", times=None)  # the store goes away before SIGTERM
    assert s.stop() == 0
    assert rule.hits >= 1 and served_keys(store) == []
    (spilled,) = spill.iterdir()
    assert "4 records spilled to" in caplog.text and "the next start writes them" in caplog.text
    # the next start, with the store still refusing: not ready, the spill file stays
    store.delete("logsink/alive.json")  # the first sink's heartbeat
    s2 = Sink(store, wait_ready=False, spill_dir=spill)
    time.sleep(1.0)
    assert s2.http.get(s2.url + "/readyz", timeout=5).status_code == 503 and spilled.exists()
    proxy.clear()  # back: the spill file is written first, and that makes the sink ready
    wait_for(lambda: s2.http.get(s2.url + "/readyz", timeout=5).status_code == 200)
    assert not spilled.exists()
    assert [(r["request_id"], r["id"]) for r in read_served(store)] == [
        ("kept-1", "9000"),
        ("kept-1", "9001"),
        ("kept-2", "9000"),
        ("kept-2", "9001"),
    ]
    assert not store.exists("logsink/alive.json")  # the replayed batch was its first write
    assert s2.stop() == 0


def test_a_replay_cut_off_after_its_write_writes_the_same_object_again(tmp_path):
    """The spill file names its batch's key: writing it twice gives one batch, not two."""
    from hhpulse.watch.served import replay_spilled

    store = LocalStore(tmp_path / "store")
    writer = ServedLogWriter(store)
    request, response = v1_pair(3)
    from hhpulse.watch.served import records_from_v1

    writer.add(records_from_v1(request, response, time=T0, model_version=None, request_id="r"))
    spilled = writer.spill(tmp_path / "spill")
    assert spilled.records == 3 and writer.pending == 0
    copy = spilled.path.read_bytes()
    (done,) = replay_spilled(store, tmp_path / "spill")
    spilled.path.write_bytes(copy)  # as if the process died before removing the file
    (again,) = replay_spilled(store, tmp_path / "spill")
    assert done.key == again.key == spilled.key and served_keys(store) == [spilled.key]
    assert [r["id"] for r in read_served(store)] == ["9000", "9001", "9002"]
    (tmp_path / "spill" / "2026-03-01_09-00000000000000000000000000000000.jsonl.gz").write_bytes(b"junk")
    assert replay_spilled(store, tmp_path / "spill") == []  # a damaged file is set aside, not written
    assert [p.name.endswith(".bad") for p in (tmp_path / "spill").iterdir()] == [True]


BAD = [
    ("no specversion", lambda h: h.pop("Ce-Specversion"), None, "ce-specversion header is missing"),
    ("old specversion", lambda h: h.update({"Ce-Specversion": "0.3"}), None, "not supported"),
    ("no id", lambda h: h.pop("Ce-Id"), None, "no ce-id"),
    ("other type", lambda h: h.update({"Ce-Type": "dev.knative.foo"}), None, "not an inference event"),
    ("bad time", lambda h: h.update({"Ce-Time": "yesterday"}), None, "not an RFC 3339"),
    ("structured", lambda h: h.update({"Content-Type": "application/cloudevents+json"}), None, "binary"),
    ("not json", None, b"{oops", "not JSON"),
    ("not a request", None, b'{"rows": []}', "no 'instances' or 'inputs'"),
    ("a list", None, b"[1, 2]", "must be a JSON object"),
    ("NaN", None, b'{"instances": [{"responsibility": "x", "w": NaN}]}', "NaN is not a JSON number"),
    ("Infinity", None, b'{"instances": [1], "x": -Infinity}', "-Infinity is not a JSON number"),
    ("overflow", None, b'{"instances": [1e999]}', "too large to be a finite double"),
    ("nested", None, b"[" * 20_000 + b"]" * 20_000, "deeper than 32 levels"),
    ("nested 33", None, b'{"instances": ' + b"[" * 32 + b"]" * 32 + b"}", "deeper than 32 levels"),
]


@pytest.mark.parametrize(("case", "change", "raw", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_events_are_400_with_the_reason(store, case, change, raw, message):
    s = Sink(store)
    headers = agent_headers("x1", REQUEST, time=T0)
    if change:
        change(headers)
    r = s.post("x1", REQUEST, v1_pair(1)[0], raw=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert s.exchange("ok", *v1_pair(1))[1].json()["status"] == "paired"  # and it keeps serving
    s.stop()


def test_nan_probabilities_are_400_and_never_reach_the_log(store):
    """A response whose probabilities hold NaN would make every later cohort mix and PSI NaN."""
    s = Sink(store)
    request, response = v1_pair(1)
    raw = json.dumps(response).replace("0.5", "NaN").encode()
    assert s.post("n", REQUEST, request).status_code == 200
    r = s.post("n", RESPONSE, None, raw=raw)
    assert r.status_code == 400 and "NaN is not a JSON number" in r.json()["error"]
    s.stop()
    assert list(read_served(store)) == []


def test_a_negative_content_length_is_400_at_once_and_a_deep_body_leaves_the_connection_usable(store):
    import http.client
    import socket

    s = Sink(store)
    request, response = v1_pair(1)
    head = agent_headers("neg", REQUEST, time=T0)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        lines = ["POST / HTTP/1.1", "Host: x", "Content-Length: -1", *(f"{k}: {v}" for k, v in head.items())]
        start = time.monotonic()
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):  # the answer, then the server closes the connection
            answer += chunk
        answer = answer.decode()
        assert time.monotonic() - start < 2  # not the 60 s read timeout
    assert answer.startswith("HTTP/1.1 400") and "is negative" in answer
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    deep = b"[" * 40_000 + b"]" * 40_000
    conn.request("POST", "/", body=deep, headers=agent_headers("deep", REQUEST, time=T0))
    first = conn.getresponse()
    assert first.status == 400 and "deeper than" in json.loads(first.read())["error"]
    sock_before = conn.sock
    conn.request("POST", "/", body=json.dumps(request), headers=agent_headers("ok", REQUEST, time=T0))
    second = conn.getresponse()
    assert second.status == 200 and json.loads(second.read())["status"] == "waiting"
    assert conn.sock is sock_before  # the same keep-alive connection
    conn.close()
    s.stop()


def test_duplicates_and_pairs_that_do_not_fit_are_400(store):
    s = Sink(store)
    request, response = v1_pair(2)
    assert s.post("d", REQUEST, request).status_code == 200
    dup = s.post("d", REQUEST, request)
    assert dup.status_code == 400 and "second request event" in dup.json()["error"]
    short = {"predictions": response["predictions"][:1]}
    misfit = s.post("d", RESPONSE, short)
    assert misfit.status_code == 400 and "2 instances but the response 1" in misfit.json()["error"]
    text = s.metrics()
    assert 'hhpulse_logsink_events_total{outcome="bad"} 2' in text
    assert (
        'hhpulse_logsink_unpaired_total{type="request"} 1' in text
    )  # the misfit's request: dropped, counted
    s.stop()
    assert list(read_served(store)) == []


def test_unpaired_events_expire_counted(store, caplog):
    s = Sink(store, pair_timeout=0.3)
    request, _ = v1_pair(1)
    s.post("lonely", REQUEST, request)  # the predictor answered 4xx: KServe sends no response event
    deadline = time.monotonic() + 10
    while "hhpulse_logsink_pending_events 0" not in s.metrics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 'hhpulse_logsink_unpaired_total{type="request"} 1' in s.metrics()
    assert "dropped 1 unpaired event(s) (1 request)" in caplog.text and "lonely" in caplog.text
    s.stop()


def test_core_bounds_and_clock(store):
    """The sink's own clock decides expiry (no sleeping): a fake monotonic clock."""
    now = [0.0]
    sink = LogSink(
        ServedLogWriter(store, max_records=10), max_pending=5, pair_timeout=10, clock=lambda: now[0]
    )
    assert sink.try_store() and sink.ready  # a heartbeat: the store takes writes
    from hhpulse.watch.logsink import parse_event

    request, response = v1_pair(1)
    ev = parse_event(
        {k.lower(): v for k, v in agent_headers("q", REQUEST, time=T0).items()}, json.dumps(request).encode()
    )
    assert sink.accept(ev) == "waiting"
    now[0] = 9.9
    assert sink.expire() == {}
    now[0] = 10.0
    assert sink.expire() == {"request": 1} and sink.pending == 0 and sink.pending_bytes == 0


def sink_process(bucket, port, endpoint, tmp_path):
    log = open(tmp_path / f"sink-{port}.log", "w+")  # noqa: SIM115
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HHPULSE_S3_ENDPOINT": endpoint,
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "logsink",
            "--store",
            f"s3://{bucket}/prod",
            "--port",
            str(port),
            "--drain-seconds",
            "3",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, Path(log.name).read_text()
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url, log.name
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("the sink did not become ready")


def test_restart_writes_what_was_paired_and_counts_what_was_not(s3_bucket, s3_env, tmp_path):
    """SIGTERM: not ready, the last events taken for --drain-seconds, the last batch written,
    waiting halves dropped and said; a new process goes on appending new batches."""
    store = S3Store(f"s3://{s3_bucket}/prod")
    port = free_port()
    proc, url, log_path = sink_process(s3_bucket, port, s3_env, tmp_path)
    request, response = v1_pair(1)

    def post(event_id, kind, body):  # to the sink process of the moment (url changes on restart)
        return requests.post(
            url, data=json.dumps(body), headers=agent_headers(event_id, kind, time=T0), timeout=10
        )

    assert post("one", REQUEST, request).status_code == 200
    assert post("one", RESPONSE, response).status_code == 200
    assert post("half", REQUEST, request).status_code == 200
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert requests.get(url + "/readyz", timeout=2).status_code == 503  # draining: out of the Service
    assert post("late", REQUEST, request).status_code == 200  # ... but the last events are still taken
    assert post("late", RESPONSE, response).json()["status"] == "paired"
    assert proc.wait(30) == 0
    log = Path(log_path).read_text()
    assert "1 events waited unpaired and were dropped" in log and "half" in log
    assert [r["request_id"] for r in read_served(store)] == ["one", "late"]
    proc, url, log_path = sink_process(s3_bucket, port, s3_env, tmp_path)
    assert (
        post("half", RESPONSE, response).json()["status"] == "waiting"
    )  # its request went with the old process
    assert post("two", REQUEST, request).status_code == 200
    assert post("two", RESPONSE, response).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert len(served_keys(store)) == 2
    assert sorted(r["request_id"] for r in read_served(store)) == ["late", "one", "two"]


def test_sink_process_needs_no_kserve_import():
    code = "import sys, hhpulse.watch.logsink, hhpulse.watch.logsink_http, hhpulse.commands.logsink; print('kserve' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_cli_runs_without_pyarrow_as_in_the_serving_image():
    """The serving image (the predictor and `hhpulse logsink`) has no pyarrow: building the
    CLI's parser must not import it (every subcommand's options are configured at start)."""
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from hhpulse.cli import main\n"
        "try:\n    main(['logsink', '--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "CloudEvents" in p.stdout or "logsink" in p.stdout


def test_a_stored_batch_with_a_nan_probability_is_set_aside_by_readers(store):
    """A batch written before NaN was refused: the monitor's reader leaves it out, named, so
    the mix and PSI stay numbers."""
    import gzip

    from hhpulse.watch.served import encode_batch, records_from_v1, served_key

    request, response = v1_pair(1)
    good = records_from_v1(request, response, time=T0, model_version=None, request_id="ok")
    store.put_bytes(served_key(T0), encode_batch([json.dumps(good[0]).encode() + b"\n"]))
    poisoned = json.dumps({**good[0], "request_id": "nan"}).replace("0.5", "NaN").encode() + b"\n"
    store.put_bytes(served_key(T0), gzip.compress(poisoned))
    bad: list[str] = []
    assert [r["request_id"] for r in read_served(store, errors="skip", bad=bad)] == ["ok"]
    assert len(bad) == 1 and "must be a finite number, got nan" in bad[0]


# -- who may write: only the InferenceService the sink serves -------------------------------------


def identity_sink(tmp_path, env_identity=True):
    """A real ``hhpulse logsink`` process on loopback, configured as the chart configures it
    (the InferenceService ``hhpulse`` in namespace ``ml`` through the environment; or by flags),
    with its metrics port; a folder store."""
    port, metrics_port = free_port(), free_port()
    log = open(tmp_path / "sink.log", "w+")  # noqa: SIM115
    identity = ["--inference-service", "hhpulse", "--namespace", "ml"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if env_identity:
        env |= {"HHPULSE_LOGSINK_INFERENCESERVICE": "hhpulse", "HHPULSE_LOGSINK_NAMESPACE": "ml"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hhpulse.cli", "logsink", "--store", str(tmp_path / "store")]
        + ["--port", str(port), "--metrics-port", str(metrics_port), "--drain-seconds", "0"]
        + ([] if env_identity else identity),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, Path(log.name).read_text()
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                requests.get(metrics_url + "/metrics", timeout=1).raise_for_status()
                return proc, url, metrics_url, log.name
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("the sink did not become ready")


def forbidden(metrics_text):
    return {
        line.split('"')[1]: int(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("hhpulse_logsink_forbidden_total{")
    }


@pytest.mark.parametrize("env_identity", [True, False], ids=["env", "flags"])
def test_events_from_another_inferenceservice_are_403_and_never_written(tmp_path, env_identity):
    proc, url, metrics_url, log_path = identity_sink(tmp_path, env_identity)
    request, response = v1_pair(1)

    def post(event_id, kind, body, **who):
        headers = agent_headers(event_id, kind, time=T0, **who)
        for key in [k for k, v in who.items() if v is None]:  # a header left out
            headers.pop({"inference_service": "Ce-Inferenceservicename", "namespace": "Ce-Namespace"}[key])
        return requests.post(url, data=json.dumps(body), headers=headers, timeout=10)

    ours = {"inference_service": "hhpulse", "namespace": "ml"}
    assert [
        post("ours", k, b, **ours).json()["status"] for k, b in ((REQUEST, request), (RESPONSE, response))
    ] == [
        "waiting",
        "paired",
    ]
    strangers = {
        "inferenceservice": {"inference_service": "fraud-model", "namespace": "ml"},
        "namespace": {"inference_service": "hhpulse", "namespace": "team-b"},
        "unnamed": {"inference_service": None, "namespace": "ml"},
    }
    for reason, who in strangers.items():
        for kind, body in ((REQUEST, request), (RESPONSE, response)):
            r = post(f"from-{reason}", kind, body, **who)
            assert r.status_code == 403, (reason, r.text)
            assert "this sink takes events only from ml/hhpulse" in r.json()["error"]
    # a forged response for a real request: refused, so the request never pairs and is never written
    assert post("half", REQUEST, request, **ours).json()["status"] == "waiting"
    forged = {"predictions": [{"salary": SALARY, "demand": DEMAND, "model_version": "forged"}]}
    assert post("half", RESPONSE, forged, inference_service="hhpulse", namespace="team-b").status_code == 403
    # the counts, by reason, on the event port and on the metrics port alike
    expected = {"namespace": 3, "inferenceservice": 2, "unnamed": 2}
    for base in (url, metrics_url):
        assert forbidden(requests.get(base + "/metrics", timeout=5).text) == expected
    assert 'hhpulse_logsink_events_total{outcome="paired"} 2' in requests.get(metrics_url + "/metrics").text
    # the metrics port takes no events
    no = requests.post(
        metrics_url, data=json.dumps(request), headers=agent_headers("m", REQUEST, time=T0, **ours)
    )
    assert no.status_code == 405 and no.headers["Allow"] == "GET"
    assert requests.get(metrics_url + "/readyz", timeout=5).status_code == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = Path(log_path).read_text()
    assert "taking events only from InferenceService ml/hhpulse" in log
    assert "refused an event (403)" in log and "comes from InferenceService ml/fraud-model" in log
    store = LocalStore(tmp_path / "store")
    records = list(read_served(store))
    assert [(r["request_id"], r["model_version"]) for r in records] == [("ours", "v20260301-070000")]
    assert "1 events waited unpaired and were dropped" in log  # "half": its forged partner was refused


def test_origin_check_and_its_counts():
    from hhpulse.watch.logsink import Forbidden, Origin

    anyone = Origin()
    anyone.check({})  # no identity configured: a sink on a laptop takes any event
    assert not anyone.checked and str(anyone) == "any InferenceService"
    origin = Origin("hhpulse", "ml")
    origin.check({"ce-inferenceservicename": "hhpulse", "ce-namespace": "ml"})
    origin.check({"ce-inferenceservicename": "hhp%75lse", "ce-namespace": " ml "})  # percent-encoded, padded
    for headers, reason in (
        ({"ce-inferenceservicename": "hhpulse-canary", "ce-namespace": "ml"}, "inferenceservice"),
        ({"ce-inferenceservicename": "hhpulse", "ce-namespace": "ml2"}, "namespace"),
        ({"ce-inferenceservicename": "other", "ce-namespace": "ml2"}, "namespace"),
        ({"ce-namespace": "ml"}, "unnamed"),
        ({"ce-inferenceservicename": "hhpulse", "ce-namespace": ""}, "unnamed"),
    ):
        with pytest.raises(Forbidden) as err:
            origin.check(headers)
        assert err.value.reason == reason
    assert dict(origin.refused) == {"namespace": 2, "inferenceservice": 1, "unnamed": 2}
    assert 'hhpulse_logsink_forbidden_total{reason="unnamed"} 2' in origin.metrics_lines()
    with pytest.raises(ValueError, match="both"):
        Origin("hhpulse", None)


def test_the_cli_wants_both_the_inferenceservice_and_its_namespace(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HHPULSE_LOGSINK_NAMESPACE": ""}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "logsink",
            "--store",
            str(tmp_path),
            "--inference-service",
            "x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2
    assert "--inference-service and --namespace go together" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "logsink", "--store", str(tmp_path), "--metrics-port", "8080"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2 and "--metrics-port must differ from --port" in p.stderr
