"""Open Inference Protocol clients against a real ``hhpulse serve`` on loopback (HTTP and gRPC).

NVIDIA's ``tritonclient`` over HTTP (the binary tensor extension, its default, and JSON, for
inputs and for outputs) and over gRPC (``raw_input_contents``), and KServe's own
``InferenceRESTClient`` (v1 and v2) and ``InferenceGRPCClient``: each gets the cohorts and
probabilities that ``hhpulse predict`` gives for the same texts, to 6 decimals, and each gets
the documented 4xx or gRPC status for bad input. Hand-made bodies of the binary extension
check the framing: a declared size that does not match the bytes is a 400.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import requests
import tritonclient.http as thttp
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from conftest import free_port
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import train_from_history
from test_serving import FAST, server_log, stop_server
from test_serving_edges import start_serve

TEXTS = [
    "Доставка заказов клиентам",
    "Разработка backend-сервисов на Python. Проектирование REST API",
    "Руководство командой. Найм и развитие сотрудников",
]
NAMES = ["Курьер", "Разработчик", "Руководитель"]
TASKS = ("salary", "demand")
MAX_TEXT_CHARS = 300
MAX_BODY_BYTES = 20000


@pytest.fixture(scope="module")
def bundle_dir(demo_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    train_from_history(load_history(demo_store), rates_by_run(demo_store), out, candidates=FAST, device="cpu")
    return out


@pytest.fixture(scope="module")
def expected(bundle_dir, tmp_path_factory):
    """What ``hhpulse predict`` gives for TEXTS with NAMES: per task, the cohorts and the
    probability of every cohort (6 decimals)."""
    tmp = tmp_path_factory.mktemp("predict")
    lines = [
        json.dumps({"responsibility": t, "name": n}, ensure_ascii=False)
        for t, n in zip(TEXTS, NAMES, strict=True)
    ]
    (tmp / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "predict", "--model", str(bundle_dir)]
        + ["--input", str(tmp / "in.jsonl"), "--output", str(tmp / "out.jsonl")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rows = [json.loads(x) for x in (tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    return {t: ([r[t]["cohort"] for r in rows], [r[t]["probabilities"] for r in rows]) for t in TASKS}


@pytest.fixture(scope="module")
def server(bundle_dir):
    """``hhpulse serve --enable-grpc`` on free ports: (HTTP host:port, gRPC host:port, process);
    gRPC's readiness through kserve's own client (tritonclient.grpc is another process's)."""
    http_port, grpc_port = free_port(), free_port()
    proc = start_serve(
        "--model-dir", bundle_dir, "--http-port", http_port, "--enable-grpc", "--grpc-port", grpc_port,
        "--max-instances", 50, "--max-text-chars", MAX_TEXT_CHARS, "--max-body-bytes", MAX_BODY_BYTES,
    )  # fmt: skip
    http_url, grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"hhpulse serve exited with {proc.returncode}: {server_log(proc)}")
            try:
                if thttp.InferenceServerClient(http_url).is_model_ready("hhpulse") and _run(
                    _grpc_ready(grpc_url)
                ):
                    break
            except (InferenceServerException, OSError, grpc.RpcError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready: {server_log(proc)}")
            time.sleep(0.3)
        yield http_url, grpc_url, proc
    finally:
        stop_server(proc)


async def _grpc_ready(url: str) -> bool:
    client = InferenceGRPCClient(url, retries=0, timeout=2)
    try:
        return await client.is_model_ready("hhpulse")
    finally:
        await client.close()


def _columns(meta_outputs) -> dict[str, list[str]]:
    return {t: meta_outputs[f"{t}_probabilities"].split(",") for t in TASKS}


def assert_same(
    expected, cohorts: dict[str, list], probs: dict[str, np.ndarray], columns: dict[str, list[str]]
):
    """The answer has ``hhpulse predict``'s cohorts and, to 6 decimals, its probabilities."""
    for t in TASKS:
        labels = [c.decode() if isinstance(c, bytes) else c for c in np.asarray(cohorts[t]).ravel().tolist()]
        assert labels == expected[t][0], t
        got = np.asarray(probs[t], dtype=float).reshape(len(TEXTS), len(columns[t]))
        want = np.array([[row[c] for c in columns[t]] for row in expected[t][1]])
        np.testing.assert_array_equal(np.round(got, 6), np.round(want, 6))


def _triton_columns(result) -> dict[str, list[str]]:
    """The cohorts of each probability column, from the answer's ``parameters.cohorts``."""
    answer = result.get_response()
    if isinstance(answer, dict):  # HTTP: the JSON part of the answer
        return _columns({o["name"]: o["parameters"]["cohorts"] for o in answer["outputs"]})
    return _columns({o.name: o.parameters["cohorts"].string_param for o in answer.outputs})  # gRPC


# -- tritonclient over HTTP ---------------------------------------------------------------------------


def _triton_http_inputs(binary: bool) -> list:
    inputs = []
    for name, values in (("responsibility", TEXTS), ("name", NAMES)):
        tensor = thttp.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
        inputs.append(tensor)
    return inputs


OUTPUT_NAMES = [f"{t}_{k}" for t in TASKS for k in ("cohort", "probabilities")]


@pytest.mark.parametrize(
    ("inputs_binary", "outputs_binary"),
    [(True, None), (True, True), (True, False), (False, True), (False, False), (False, None)],
    ids=[
        "defaults",
        "binary-in-out",
        "binary-in-json-out",
        "json-in-binary-out",
        "json",
        "json-in-default-out",
    ],
)
def test_tritonclient_http_matches_hhpulse_predict(server, expected, inputs_binary, outputs_binary):
    """``None``: no outputs named, so the client asks for all of them in binary
    (``binary_data_output``); otherwise each output is requested with ``binary_data``."""
    client = thttp.InferenceServerClient(server[0])
    outputs = None if outputs_binary is None else [
        thttp.InferRequestedOutput(n, binary_data=outputs_binary) for n in OUTPUT_NAMES
    ]  # fmt: skip
    result = client.infer("hhpulse", _triton_http_inputs(inputs_binary), outputs=outputs, request_id="r-1")
    answer = result.get_response()
    assert answer["id"] == "r-1" and answer["model_name"] == "hhpulse"
    binary_out = outputs_binary is not False and (outputs_binary or inputs_binary or outputs is None)
    for o in answer["outputs"]:  # binary outputs come after the JSON, JSON ones inside it
        assert ("data" in o) is (not binary_out), o
        assert ("binary_data_size" in o["parameters"]) is bool(binary_out), o
    assert_same(
        expected,
        {t: result.as_numpy(f"{t}_cohort") for t in TASKS},
        {t: result.as_numpy(f"{t}_probabilities") for t in TASKS},
        _triton_columns(result),
    )


def test_tritonclient_http_gets_only_the_outputs_it_asks_for(server, expected):
    client = thttp.InferenceServerClient(server[0])
    outputs = [
        thttp.InferRequestedOutput("demand_cohort"),
        thttp.InferRequestedOutput("salary_probabilities"),
    ]
    result = client.infer("hhpulse", _triton_http_inputs(True), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["demand_cohort", "salary_probabilities"]
    assert [c.decode() for c in result.as_numpy("demand_cohort")] == expected["demand"][0]
    assert result.as_numpy("salary_cohort") is None


def test_tritonclient_http_metadata_and_health(server):
    client = thttp.InferenceServerClient(server[0])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("hhpulse")
    meta = client.get_model_metadata("hhpulse")
    assert {i["name"] for i in meta["inputs"]} == {"responsibility", "name", "requirement"}
    assert {o["name"] for o in meta["outputs"]} == set(OUTPUT_NAMES)


def _http_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_bad_inputs_get_a_400_with_the_reason(server, binary):
    client = thttp.InferenceServerClient(server[0])

    def infer(name, values, datatype="BYTES", outputs=None):
        tensor = thttp.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        return lambda: client.infer("hhpulse", [tensor], outputs=outputs)

    cases = [
        (infer("title", np.array(["a"], dtype=object)), "unknown input tensor 'title'"),
        (infer("responsibility", np.array(["x" * 301], dtype=object)), f"over the limit of {MAX_TEXT_CHARS}"),
        (infer("responsibility", np.array([1.5], dtype=np.float32), "FP32"), "must have datatype BYTES"),
        (infer("responsibility", np.array([["a", "b"]], dtype=object)), "must have shape [N] or [N, 1]"),
        (infer("responsibility", np.array([" "], dtype=object)), "responsibility"),
        (
            infer("responsibility", np.array(["a"], dtype=object), outputs=[thttp.InferRequestedOutput("x")]),
            "unknown output 'x'",
        ),
    ]
    for call, reason in cases:
        error = _http_error(call)
        assert error.status() == "400" and reason in error.message(), (reason, error)
    error = _http_error(lambda: client.infer("nope", _triton_http_inputs(binary)))
    assert error.status() == "404"
    big = thttp.InferInput("responsibility", [100], "BYTES")
    big.set_data_from_numpy(np.array(["слово " * 40] * 100, dtype=object), binary_data=binary)
    error = _http_error(lambda: client.infer("hhpulse", [big]))
    assert error.status() == "413" and f"limit of {MAX_BODY_BYTES}" in error.message()


# -- tritonclient over gRPC (in its own process: see tests/triton_grpc_calls.py) ----------------------


def triton_grpc_calls(calls: list[dict]) -> list:
    """What each of ``calls`` got, run in one process of tritonclient.grpc."""
    args = json.dumps(calls, ensure_ascii=False)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("triton_grpc_calls.py")), args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def triton_grpc(call: str, **kwargs):
    return triton_grpc_calls([{"call": call, **kwargs}])[0]


@pytest.mark.parametrize("requested", [False, True], ids=["all-outputs", "requested-outputs"])
def test_tritonclient_grpc_matches_hhpulse_predict(server, expected, requested):
    answer = triton_grpc(
        "infer",
        url=server[1],
        tensors={"responsibility": TEXTS, "name": NAMES},
        outputs=OUTPUT_NAMES[::-1] if requested else None,
        request_id="g-1",
    )
    assert answer["id"] == "g-1" and answer["model_name"] == "hhpulse", answer
    assert answer["names"] == (OUTPUT_NAMES[::-1] if requested else OUTPUT_NAMES)
    assert answer["raw_outputs"] == len(OUTPUT_NAMES)  # raw in, raw out: what tritonclient reads
    values = answer["values"]
    assert_same(
        expected,
        {t: values[f"{t}_cohort"] for t in TASKS},
        {t: values[f"{t}_probabilities"] for t in TASKS},
        _columns(answer["cohorts"]),
    )


def test_tritonclient_grpc_metadata_and_health(server):
    got = triton_grpc("health", url=server[1])
    assert got["live"] and got["ready"] and set(got["outputs"]) == set(OUTPUT_NAMES)


def test_tritonclient_grpc_bad_inputs_get_the_grpc_status_with_the_reason(server):
    url = server[1]
    invalid = [
        ({"tensors": {"title": ["a"]}}, "unknown input tensor 'title'"),
        ({"tensors": {"responsibility": ["x" * 301]}}, f"over the limit of {MAX_TEXT_CHARS}"),
        ({"tensors": {"responsibility": [1.5]}, "datatype": "FP32"}, "must have datatype BYTES"),
        ({"tensors": {"responsibility": [{"hex": "fffe"}]}}, "responsibility[0]: not valid UTF-8"),
        ({"tensors": {"responsibility": [" "]}}, "responsibility"),
        ({"tensors": {"responsibility": ["a"]}, "outputs": ["x"]}, "unknown output 'x'"),
    ]
    got = triton_grpc_calls(
        [{"call": "infer", "url": url, **kwargs} for kwargs, _ in invalid]
        + [
            {"call": "infer", "url": url, "model": "nope", "tensors": {"responsibility": ["a"]}},
            # the body limit holds for gRPC messages too
            {"call": "infer", "url": url, "tensors": {"responsibility": ["слово " * 40] * 100}},
        ]
    )
    for (_, reason), answer in zip(invalid, got, strict=False):
        assert answer.get("status") == "StatusCode.INVALID_ARGUMENT" and reason in answer["message"], (
            reason,
            answer,
        )
    assert got[-2].get("status") == "StatusCode.NOT_FOUND", got[-2]
    assert got[-1].get("status") == "StatusCode.RESOURCE_EXHAUSTED", got[-1]


MALFORMED = [
    ([[10, "abc"]], [1], "element 0 declares 10 bytes"),
    ([[6, "abcdef"]], [2], "its 10 bytes end before element 1 of 2"),
    ([[1, "a"]], [2], "needs 2 BYTES elements, more than its 5 bytes can hold"),
    ([[1, "ab"]], [1], "1 bytes left over"),
    ([[1, "a"]], [-1], "negative dimension"),
]


def test_a_malformed_raw_grpc_tensor_is_invalid_argument_not_internal(server):
    """The same framing checks and reasons as the binary extension over HTTP."""
    got = triton_grpc_calls(
        [{"call": "malformed", "url": server[1], "elements": e, "shape": s} for e, s, _ in MALFORMED]
    )
    for (_, _, reason), answer in zip(MALFORMED, got, strict=True):
        assert answer["status"] == "StatusCode.INVALID_ARGUMENT" and reason in answer["message"], answer


# -- KServe's own clients -----------------------------------------------------------------------------


def _kserve_request(binary: bool) -> InferRequest:
    inputs = []
    for name, values in (("responsibility", TEXTS), ("name", NAMES)):
        tensor = InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model_name="hhpulse", infer_inputs=inputs, request_id="k-1")


def _kserve_answer(response, expected) -> None:
    outputs = {o.name: o for o in response.outputs}
    assert_same(
        expected,
        {t: outputs[f"{t}_cohort"].as_numpy() for t in TASKS},  # JSON data, contents or raw bytes
        {t: outputs[f"{t}_probabilities"].as_numpy() for t in TASKS},
        # a str over REST; an InferParameter (protobuf) over gRPC
        _columns(
            {n: getattr(p, "string_param", p) for n, o in outputs.items() for p in [o.parameters["cohorts"]]}
        ),
    )


def _run(coro):
    return asyncio.run(coro)


def test_kserve_rest_client_v1_matches_hhpulse_predict(server, expected):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        try:
            body = {
                "instances": [{"responsibility": t, "name": n} for t, n in zip(TEXTS, NAMES, strict=True)]
            }
            return await client.infer(f"http://{server[0]}", body, model_name="hhpulse")
        finally:
            await client.close()

    preds = _run(call())["predictions"]
    for t in TASKS:
        assert [p[t]["cohort"] for p in preds] == expected[t][0]
        assert [p[t]["probabilities"] for p in preds] == expected[t][1]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_client_v2_matches_hhpulse_predict(server, expected, binary):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            return await client.infer(f"http://{server[0]}", _kserve_request(binary), model_name="hhpulse")
        finally:
            await client.close()

    response = _run(call())
    assert response.id == "k-1" and response.model_name == "hhpulse"
    _kserve_answer(response, expected)


@pytest.mark.parametrize("binary", [False, True], ids=["contents", "raw"])
def test_kserve_grpc_client_matches_hhpulse_predict(server, expected, binary):
    async def call():
        client = InferenceGRPCClient(server[1], retries=0)
        try:
            return await client.infer(_kserve_request(binary))
        finally:
            await client.close()

    _kserve_answer(_run(call()), expected)


def test_kserve_clients_bad_inputs_get_the_documented_status(server):
    bad = InferRequest(
        model_name="hhpulse", infer_inputs=[InferInput("title", [1], "BYTES", data=["a"])], request_id="bad"
    )
    subset = _kserve_request(False)
    subset.request_outputs = [RequestedOutput("x")]

    async def rest(protocol, data):
        client = InferenceRESTClient(RESTConfig(protocol=protocol, retries=0))
        try:
            with pytest.raises(httpx.HTTPStatusError) as info:
                await client.infer(f"http://{server[0]}", data, model_name="hhpulse")
            return info.value.response
        finally:
            await client.close()

    async def grpc_call(request):
        client = InferenceGRPCClient(server[1], retries=0)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.infer(request)
            return info.value
        finally:
            await client.close()

    r = _run(rest("v1", {"instances": [5]}))
    assert r.status_code == 400 and "must be a string or an object" in r.json()["error"]
    r = _run(rest("v1", {"instances": ["x" * 301]}))
    assert r.status_code == 400 and f"over the limit of {MAX_TEXT_CHARS}" in r.json()["error"]
    r = _run(rest("v2", bad))
    assert r.status_code == 400 and "unknown input tensor 'title'" in r.json()["error"]
    r = _run(rest("v2", subset))
    assert r.status_code == 400 and "unknown output 'x'" in r.json()["error"]
    e = _run(grpc_call(bad))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown input tensor 'title'" in e.details()
    e = _run(grpc_call(subset))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown output 'x'" in e.details()


# -- the binary extension, by hand: the framing and the Content-Type ----------------------------------


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _binary_body(raw: bytes, size: int | None = None, shape=None, outputs=None) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": "responsibility",
                "datatype": "BYTES",
                "shape": shape or [1],
                "parameters": {"binary_data_size": len(raw) if size is None else size},
            }
        ]
    }
    if outputs:
        header["outputs"] = outputs
    text = json.dumps(header).encode()
    return text + raw, len(text)


TEXT = "Доставка заказов".encode()


def _post(server, body, headers, path="/v2/models/hhpulse/infer"):
    return requests.post(f"http://{server[0]}{path}", data=body, headers=headers, timeout=10)


def test_a_hand_made_binary_request_is_answered_with_binary_outputs(server, expected):
    body, n = _binary_body(
        _bytes_tensor([TEXT]), outputs=[{"name": "salary_cohort", "parameters": {"binary_data": True}}]
    )
    r = _post(server, body, {"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 200, r.text
    m = int(r.headers["Inference-Header-Content-Length"])
    header = json.loads(r.content[:m])
    assert [o["name"] for o in header["outputs"]] == ["salary_cohort"]
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    assert len(r.content) == m + size
    (length,) = struct.unpack_from("<I", r.content, m)
    assert r.content[m + 4 : m + 4 + length].decode() in header["outputs"][0]["parameters"]["cohorts"].split(
        ","
    )


BAD_FRAMES = [
    ("declared size over the bytes", _binary_body(_bytes_tensor([TEXT]), size=len(TEXT) + 40), "declare"),
    ("declared size under the bytes", _binary_body(_bytes_tensor([TEXT]), size=4), "declare"),
    ("element past its tensor", _binary_body(struct.pack("<I", 999) + TEXT), "element 0 declares 999 bytes"),
    ("fewer elements than the shape", _binary_body(_bytes_tensor([TEXT]), shape=[2]), "end before element 1"),
    ("bytes left over", _binary_body(_bytes_tensor([TEXT]) + b"xy"), "2 bytes left over"),
    ("not UTF-8", _binary_body(_bytes_tensor([b"\xff\xfe"])), "responsibility[0]: not valid UTF-8"),
    ("negative size", _binary_body(b"", size=-1), "binary_data_size must be a byte count"),
    ("size over the body limit", _binary_body(b"", size=MAX_BODY_BYTES + 1), "over the body limit"),
]


@pytest.mark.parametrize(("case", "frame", "reason"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_a_binary_body_whose_sizes_do_not_match_is_a_400(server, case, frame, reason):
    body, n = frame
    r = _post(server, body, {"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 400 and reason in r.json()["error"], (case, r.text)


def test_the_binary_header_itself_is_checked(server):
    body, n = _binary_body(_bytes_tensor([TEXT]))
    cases = [
        ({"Inference-Header-Content-Length": "abc"}, 400, "must be a byte count"),
        ({"Inference-Header-Content-Length": str(len(body) + 1)}, 400, f"only {len(body)} bytes"),
        ({"Inference-Header-Content-Length": str(n - 1)}, 400, "JSON header of the binary request is not valid JSON"),
        ({"Inference-Header-Content-Length": str(n), "Content-Type": "text/plain"}, 415, "Content-Type is 'text/plain'"),
    ]  # fmt: skip
    for headers, status, reason in cases:
        r = _post(server, body, headers)
        assert r.status_code == status and reason in r.json()["error"], (headers, r.text)
    for ctype in ("application/octet-stream", "application/json"):  # what clients send along
        r = _post(server, body, {"Inference-Header-Content-Length": str(n), "Content-Type": ctype})
        assert r.status_code == 200, (ctype, r.text)
    r = _post(server, body, {"Inference-Header-Content-Length": str(n)}, path="/v1/models/hhpulse:predict")
    assert r.status_code == 400 and "is for v2 infer" in r.json()["error"]
    big, m = _binary_body(_bytes_tensor([b"a" * 100] * 200), shape=[200])
    r = _post(server, big, {"Inference-Header-Content-Length": str(m)})
    assert r.status_code == 413 and f"limit of {MAX_BODY_BYTES}" in r.json()["error"]


def test_a_body_without_content_type_is_taken_when_it_is_json(server):
    v1 = json.dumps({"instances": ["Доставка"]}).encode()
    v2 = json.dumps(
        {"inputs": [{"name": "responsibility", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
    )
    assert _post(server, v1, {}, path="/v1/models/hhpulse:predict").status_code == 200
    assert _post(server, v2.encode(), {}).status_code == 200
    r = _post(server, b"instances=a", {}, path="/v1/models/hhpulse:predict")
    assert r.status_code == 400 and "not valid JSON (and it came without a Content-Type)" in r.json()["error"]
    r = _post(server, v1, {"Content-Type": "text/plain"}, path="/v1/models/hhpulse:predict")
    assert r.status_code == 415 and "Content-Type is 'text/plain'" in r.json()["error"]
    r = _post(server, v2.encode(), {"Content-Type": "application/octet-stream"})
    assert r.status_code == 415  # raw bytes without Inference-Header-Content-Length


def test_the_clients_left_no_traceback_in_the_log(server):
    log = server_log(server[2])
    assert "Traceback" not in log, log[-3000:]
