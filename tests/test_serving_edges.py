"""The predictor's edges, in a real kserve.ModelServer over real HTTP on loopback: what a
client's bad request writes to the log, v2 bodies that kserve's pydantic model refuses, the
v2 answer's model version and cohorts, and ``hhpulse serve``'s flags, bind address, errors
and clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.data.store import LocalStore
from hhpulse.flows.workflow import train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.model.registry import publish
from test_serving import FAST, server_log, start_server, stop_server, wait_ready

V2_OK = {"inputs": [{"name": "responsibility", "datatype": "BYTES", "shape": [1], "data": ["Доставка"]}]}


@pytest.fixture(scope="module")
def bundle_dir(demo_store, tmp_path_factory):
    store = demo_store
    out = tmp_path_factory.mktemp("b") / "bundle"
    train_from_history(load_history(store), rates_by_run(store), out, candidates=FAST, device="cpu")
    return out


@pytest.fixture(scope="module")
def champion_store(bundle_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("champion-store")
    publish(LocalStore(store), bundle_dir)
    return store


@pytest.fixture(scope="module")
def server_proc(bundle_dir):
    proc, url = start_server(bundle_dir)
    try:
        wait_ready(proc, url)
        yield proc, url
    finally:
        stop_server(proc)


def listening_address(port: int) -> str | None:
    """The IPv4 address a socket listens on at ``port``, read from /proc/net/tcp."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("needs /proc/net/tcp (Linux)")
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        host, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
            return socket.inet_ntoa(bytes.fromhex(host)[::-1])
    return None


# -- logs ---------------------------------------------------------------------------------------


def test_a_client_error_is_one_warning_line_with_status_and_reason_and_no_traceback(server_proc):
    proc, url = server_proc
    v1, v2 = f"{url}/v1/models/hhpulse:predict", f"{url}/v2/models/hhpulse/infer"
    bad = [
        ("POST", v1, {"instances": [5]}, 400, "must be a string or an object"),
        ("POST", v1, {"instances": ["x" * 301]}, 400, "over the limit of 300"),
        (
            "POST",
            v2,
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            400,
            "unknown input",
        ),
        ("POST", v2, {}, 400, "no 'inputs'"),
        ("POST", f"{url}/v1/models/nope:predict", {"instances": ["a"]}, 404, "nope does not exist"),
        ("GET", f"{url}/v2/models/nope", None, 404, "nope does not exist"),
        ("GET", v1, None, 405, "GET is not allowed on /v1/models/hhpulse:predict: POST"),
        ("GET", v2, None, 405, "GET is not allowed on /v2/models/hhpulse/infer: POST"),
    ]
    before = len(server_log(proc).splitlines())
    for method, where, body, status, _ in bad:
        r = requests.request(method, where, json=body, timeout=10)
        assert r.status_code == status, r.text
        if status == 405:  # the allowed method, as HTTP says
            assert r.headers["Allow"] == "POST" and r.json()["error"].endswith("POST a JSON body")
    r = requests.post(v1, data=b'{"instances": ["a"]}', headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415
    time.sleep(0.5)
    new = server_log(proc).splitlines()[before:]
    assert not [x for x in new if "Traceback" in x or "Exception:" in x or "ERROR" in x], "\n".join(new)
    lines = [json.loads(x) for x in new if x.startswith("{")]
    refused = [x for x in lines if x.get("event") == "request"]
    assert len(refused) == len(bad) + 1, new  # one line per request
    for line, (method, where, _, status, reason) in zip(refused, bad, strict=False):
        assert line["level"] == "warning" and line["status"] == status, line
        assert line["method"] == method and where.endswith(line["path"]), line
        assert reason in line["error"], line
    assert refused[-1]["status"] == 415 and "Content-Type" in refused[-1]["error"]


HOSTILE_JSON = [
    ("nested arrays", b"[" * 9000 + b"]" * 9000, "json_too_deep", "deeper than 32 levels"),
    ("nested objects", b'{"a":' * 3000 + b"1" + b"}" * 3000, "json_too_deep", "deeper than 32 levels"),
    ("33 levels", b'{"instances": ' + b"[" * 32 + b"]" * 32 + b"}", "json_too_deep", "deeper than 32"),
    ("NaN", b'{"instances": [{"responsibility": "x", "w": NaN}]}', "not_finite", "NaN is not a JSON number"),
    ("Infinity", b'{"instances": ["x"], "w": Infinity}', "not_finite", "Infinity is not a JSON number"),
    ("overflow", b'{"instances": ["x"], "w": 1e999}', "not_finite", "too large to be a finite double"),
]


@pytest.mark.parametrize(
    ("case", "body", "reason", "message"), HOSTILE_JSON, ids=[h[0] for h in HOSTILE_JSON]
)
def test_hostile_json_is_a_400_and_the_keep_alive_connection_goes_on(
    server_proc, case, body, reason, message
):
    """Unbounded, nested JSON makes Python's parser recurse until a RecursionError (a 500 with a
    traceback, and a reset keep-alive connection that fails the client's next, good request)."""
    import http.client
    from urllib.parse import urlsplit

    proc, url = server_proc
    before = len(server_log(proc).splitlines())
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.request(
        "POST", "/v1/models/hhpulse:predict", body=body, headers={"Content-Type": "application/json"}
    )
    bad = conn.getresponse()
    assert bad.status == 400, bad.read()
    assert message in json.loads(bad.read())["error"]
    sock = conn.sock
    good = json.dumps({"instances": ["Разработка сервисов на Python"]}).encode()
    conn.request(
        "POST", "/v1/models/hhpulse:predict", body=good, headers={"Content-Type": "application/json"}
    )
    ok = conn.getresponse()
    assert ok.status == 200 and json.loads(ok.read())["predictions"]
    assert conn.sock is sock  # the same connection: not reset
    conn.close()
    time.sleep(0.3)
    new = server_log(proc).splitlines()[before:]
    assert not [x for x in new if "Traceback" in x or "RecursionError" in x], "\n".join(new)
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert f'hhpulse_rejected_requests_total{{reason="{reason}"}}' in metrics


def test_a_served_request_stays_one_info_line(server_proc):
    proc, url = server_proc
    before = len(server_log(proc).splitlines())
    assert requests.post(f"{url}/v2/models/hhpulse/infer", json=V2_OK, timeout=10).status_code == 200
    time.sleep(0.3)
    new = server_log(proc).splitlines()[before:]
    assert len(new) == 1, new  # also no FastAPI deprecation warning about kserve's response class
    line = json.loads(new[0])
    assert line["level"] == "info" and line["status"] == 200 and "error" not in line


def test_a_client_that_hangs_up_mid_body_is_a_warning_not_a_server_error(server_proc):
    proc, url = server_proc
    host, port = url.removeprefix("http://").split(":")
    before = len(server_log(proc).splitlines())
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/models/hhpulse:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"instances": ["Dost'
        )
        time.sleep(0.3)
    time.sleep(0.5)
    new = [json.loads(x) for x in server_log(proc).splitlines()[before:] if x.startswith("{")]
    access = [x for x in new if x.get("event") == "request"]
    assert [(a["level"], a["status"]) for a in access] == [("warning", 499)], new
    assert "disconnected" in access[0]["error"]


def test_a_server_fault_keeps_its_traceback_and_logs_at_error(server_proc):
    proc, url = server_proc
    before = len(server_log(proc).splitlines())
    r = requests.post(f"{url}/v2/models/hhpulse/versions/7/infer", json=V2_OK, timeout=10)
    assert r.status_code == 501  # kserve 0.21 has no model versions: the server's limit, not the client's
    time.sleep(0.3)
    new = server_log(proc).splitlines()[before:]
    assert any("Traceback" in x for x in new), new
    access = [json.loads(x) for x in new if x.startswith('{"time"') and '"event": "request"' in x]
    assert [(a["level"], a["status"]) for a in access] == [("error", 501)]


# -- oversized bodies: the 413 reaches the client ------------------------------------------------

BIG = 64_000_000  # the body size the 413 must survive with every client (the server's limit: 20000)


def _big_body(n: int = BIG) -> bytes:
    return b'{"instances": ["' + b"a" * (n - 19) + b'"]}'


def _urllib_post(url: str, body: bytes) -> tuple[int, str]:
    """urllib asks for ``Connection: close``: the server closes right after the answer, so only
    a drained body lets the answer through (a close with unread data resets the connection)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _curl_post(url: str, body: bytes, tmp: Path, *curl_args: str) -> tuple[int, str]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    data = tmp / "body.json"
    data.write_bytes(body)
    out = subprocess.run(
        [curl, "-sS", "-w", "\\n%{http_code}", "-H", "Content-Type: application/json", *curl_args,
         "--data-binary", f"@{data}", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text, _, code = out.stdout.rpartition("\n")
    return int(code), text


@pytest.mark.parametrize("client", ["urllib", "requests", "curl", "curl without Expect"])
def test_an_oversized_body_gets_its_413_with_every_client(server_proc, client, tmp_path):
    """A 64 MB body: the 413 is sent at once and the body read and dropped before the
    connection closes (a lingering close), so the client reads the answer, not a reset.
    curl asks ``Expect: 100-continue`` for large bodies (it then sends nothing); without it,
    it sends the whole body first."""
    proc, url = server_proc
    predict = f"{url}/v1/models/hhpulse:predict"
    body = _big_body()
    before = len(server_log(proc).splitlines())
    if client == "urllib":
        status, text = _urllib_post(predict, body)
    elif client == "requests":
        r = requests.post(predict, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        status, text = r.status_code, r.text
    else:
        status, text = _curl_post(
            predict, body, tmp_path, *(["-H", "Expect:"] if "without" in client else [])
        )
    assert status == 413, text
    assert json.loads(text) == {"error": f"body of {len(body)} bytes is over the limit of 20000"}
    time.sleep(0.3)
    access = [
        json.loads(x)
        for x in server_log(proc).splitlines()[before:]
        if x.startswith("{") and '"status": 413' in x
    ]
    assert len(access) == 1 and access[0]["level"] == "warning", access
    if client in ("urllib", "requests"):  # they send the whole body, then read: it was read to its end
        assert access[0]["drained_bytes"] == len(body), access
    # (curl stops sending as soon as it has the answer, and hangs up: the drain ends there)
    assert requests.post(predict, json={"instances": ["Доставка"]}, timeout=10).status_code == 200


def test_a_client_that_declares_a_big_body_and_sends_nothing_gets_its_413_at_once(server_proc):
    """Content-Length: 50 MB and no body: the whole 413 (with its Content-Length and
    ``Connection: close``) arrives without the client sending a byte."""
    host, port = server_proc[1].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.settimeout(5)  # the answer does not wait for the body (nor for the drain's time bound)
        conn.sendall(
            b"POST /v1/models/hhpulse:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
            chunk = conn.recv(65536)
            assert chunk, f"the server closed before the whole answer: {answer!r}"
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "body of 50000000 bytes is over the limit of 20000"}


def _content_length(answer: bytes) -> int:
    """The Content-Length of a raw HTTP answer (0 until its head is complete)."""
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            return int(value)
    return 0


def test_an_oversized_chunked_body_gets_its_413_too(server_proc):
    """No Content-Length (chunked): the limit is found while reading; the rest is drained."""

    def chunks():
        yield b'{"instances": ["'
        for _ in range(40):
            yield b"a" * 100_000
        yield b'"]}'

    predict = f"{server_proc[1]}/v1/models/hhpulse:predict"
    r = requests.post(predict, data=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json() == {"error": "body is over the limit of 20000 bytes"}
    assert requests.post(predict, json={"instances": ["Доставка"]}, timeout=10).status_code == 200


def _guard_413(receive, **bounds):
    """GuardMiddleware alone (ASGI, no server) refusing a declared 1 MB body over a 100-byte
    limit: what it sent, and how many times it read the body."""
    from hhpulse.serving.inputs import Limits
    from hhpulse.serving.middleware import GuardMiddleware

    async def app(scope, receive, send):
        raise AssertionError("an oversized body must not reach the model")

    sent, reads = [], [0]

    async def counted():
        reads[0] += 1
        return await receive()

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/hhpulse:predict",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000000")],
    }
    guard = GuardMiddleware(app, Limits(max_body_bytes=100), **bounds)
    asyncio.run(asyncio.wait_for(guard(scope, counted, send), 30))
    return sent, reads[0]


def _assert_one_whole_413(sent):
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "body of 1000000 bytes is over the limit of 100"
    assert sent[1]["more_body"] is True  # held open while the body drains
    assert sent[-1] == {"type": "http.response.body", "body": b""} and len(sent) == 3  # then ended


def test_the_drain_after_a_413_stops_at_its_byte_bound():
    async def endless():
        return {"type": "http.request", "body": b"a" * 10_000, "more_body": True}

    sent, reads = _guard_413(endless, drain_bytes=50_000)
    _assert_one_whole_413(sent)
    assert reads == 6  # 60,000 bytes read: past the bound of 50,000, it stops


def test_the_drain_after_a_413_stops_at_its_time_bound_for_a_silent_client():
    async def silent():
        await asyncio.Event().wait()  # never sends a byte

    sent, reads = _guard_413(silent, drain_seconds=0.2)
    _assert_one_whole_413(sent)
    assert reads == 1


def test_the_drain_after_a_413_stops_when_the_client_hangs_up_or_the_body_ends():
    messages = iter(
        [{"type": "http.request", "body": b"a" * 100, "more_body": True}, {"type": "http.disconnect"}]
    )

    async def hangs_up():
        return next(messages)

    sent, reads = _guard_413(hangs_up)
    _assert_one_whole_413(sent)
    assert reads == 2
    messages = iter([{"type": "http.request", "body": b"a" * 100, "more_body": False}])
    sent, reads = _guard_413(hangs_up)
    _assert_one_whole_413(sent)
    assert reads == 1


# -- v2 bodies that kserve's pydantic model refuses -----------------------------------------------

V2_BAD = [
    ("empty object", {}, "the body has no 'inputs' list (v2 protocol)"),
    ("inputs not a list", {"inputs": "abc"}, "'inputs' must be a list of tensors, got str"),
    (
        "inputs an object",
        {"inputs": {"name": "responsibility"}},
        "'inputs' must be a list of tensors, got dict",
    ),
    (
        "v1 body",
        {"instances": ["Доставка"]},
        "this is a v1 body ('instances'): POST it to /v1/models/hhpulse:predict",
    ),
    ("not an object", [1, 2], "the body must be a JSON object, got list"),
    ("tensor fields", {"inputs": [{"name": "responsibility"}]}, "inputs[0].shape: field required"),
]


@pytest.mark.parametrize(("case", "body", "message"), V2_BAD, ids=[b[0] for b in V2_BAD])
def test_a_bad_v2_body_is_a_400_with_a_plain_reason(server_proc, case, body, message):
    url = server_proc[1]
    r = requests.post(f"{url}/v2/models/hhpulse/infer", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": r.json()["error"]} and message in r.json()["error"]
    assert "loc" not in r.text and "bytes" not in r.text  # none of pydantic's blob
    assert requests.post(f"{url}/v2/models/hhpulse/infer", json=V2_OK, timeout=10).status_code == 200
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'hhpulse_rejected_requests_total{reason="' in metrics


# -- the v2 answer -----------------------------------------------------------------------------------


def test_v2_answer_has_the_model_version_and_the_cohorts_of_the_metadata(server_proc, bundle_dir):
    url = server_proc[1]
    bundle = load_bundle(bundle_dir)
    answer = requests.post(f"{url}/v2/models/hhpulse/infer", json=V2_OK, timeout=10).json()
    assert answer["model_version"] == bundle.version
    meta = requests.get(f"{url}/v2/models/hhpulse", timeout=5).json()
    described = {o["name"]: o["parameters"]["cohorts"] for o in meta["outputs"]}
    answered = {o["name"]: o["parameters"]["cohorts"] for o in answer["outputs"]}
    assert answered == described
    for task in ("salary", "demand"):
        joined = ",".join(bundle.cohorts[task])
        assert answered[f"{task}_cohort"] == answered[f"{task}_probabilities"] == joined


# -- hhpulse serve ----------------------------------------------------------------------------------


def start_serve(*args, env=None):
    """``hhpulse serve`` in a subprocess, its output in a file (read back with server_log)."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "hhpulse.cli", "serve", *map(str, args)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    proc.log_path = log.name
    log.close()
    return proc


def test_serve_takes_the_limit_flags_and_binds_loopback_which_it_prints(bundle_dir):
    port = free_port()
    proc = start_serve(
        "--model-dir", bundle_dir, "--http-port", port, "--max_text_chars", 10, "--max-instances", 2,
        "--max_body_bytes", 5000,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        assert listening_address(port) == "127.0.0.1"
        assert f"on http://127.0.0.1:{port} " in server_log(proc)
        predict = f"{url}/v1/models/hhpulse:predict"
        r = requests.post(predict, json={"instances": ["x" * 11]}, timeout=10)
        assert r.status_code == 400 and "over the limit of 10" in r.json()["error"]
        r = requests.post(predict, json={"instances": ["a", "b", "c"]}, timeout=10)
        assert r.status_code == 400 and "over the limit of 2" in r.json()["error"]
        r = requests.post(predict, json={"instances": ["a" * 10] * 2, "pad": "x" * 5000}, timeout=10)
        assert r.status_code == 413
        assert requests.post(predict, json={"instances": ["Доставка"]}, timeout=10).status_code == 200
    finally:
        stop_server(proc)


def test_the_container_entry_point_keeps_binding_all_interfaces(server_proc):
    port = int(server_proc[1].rsplit(":", 1)[1])
    assert listening_address(port) == "0.0.0.0"


def test_a_missing_model_names_the_flag_the_user_has(tmp_path):
    missing = tmp_path / "no-such-bundle"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "serve",
            "--model-dir",
            str(missing),
            "--http-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    assert f"model directory {missing} does not exist (check --model-dir)" in p.stderr
    assert "--model_dir" not in p.stderr + p.stdout and "serving" not in p.stdout  # nothing announced
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "hhpulse.serving",
            "--model_dir",
            str(missing),
            "--http_port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        p.returncode == 1
        and "does not exist (check --model_dir, or the InferenceService's storageUri)" in p.stderr
    )


def _scratch_env(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp, {**os.environ, "TMPDIR": str(tmp)}


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["stopped", "interrupted"])
def test_serve_store_removes_the_champion_copy_when_it_stops(champion_store, tmp_path, how):
    tmp, env = _scratch_env(tmp_path)
    port = free_port()
    proc = start_serve("--store", champion_store, "--http-port", port, env=env)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        assert [p.name for p in tmp.iterdir()][0].startswith("hhpulse-champion-")  # it did copy
    finally:
        proc.send_signal(how)
        proc.wait(timeout=60)
    assert list(tmp.iterdir()) == [], server_log(proc)


def test_serve_store_removes_the_champion_copy_when_it_fails(champion_store, tmp_path):
    tmp, env = _scratch_env(tmp_path)
    with socket.socket() as taken:  # the port is taken: the server cannot start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_serve("--store", champion_store, "--http-port", port, env=env)
        assert proc.wait(timeout=120) != 0
    assert "address already in use" in server_log(proc)
    assert list(tmp.iterdir()) == []
    empty = tmp_path / "empty-store"  # no champion at all
    proc = start_serve("--store", empty, "--http-port", free_port(), env=env)
    assert proc.wait(timeout=120) == 2 and "no champion" in server_log(proc)
    assert list(tmp.iterdir()) == []
