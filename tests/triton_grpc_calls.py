"""tritonclient's gRPC calls for tests/test_serving_clients.py, each run in a process of its own.

``tritonclient.grpc`` and ``kserve`` register the same protobuf symbols (the Open Inference
Protocol's package ``inference``) in protobuf's default pool, so the two cannot be imported in
one process (kserve/kserve#3099, triton-inference-server/client#730), and the test session
imports kserve. ``python tests/triton_grpc_calls.py '<json>'`` runs the calls in the JSON list,
each an object naming its ``call``, and prints what each got, as one JSON list.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

TASKS = ("salary", "demand")
OUTPUTS = [f"{t}_{k}" for t in TASKS for k in ("cohort", "probabilities")]


def _inputs(tensors: dict[str, list[Any]], datatype: str = "BYTES") -> list:
    """Input tensors from ``{name: values}``; a BYTES value ``{"hex": ...}`` is raw bytes."""
    out = []
    for name, values in tensors.items():
        if datatype == "BYTES":
            array = np.array(
                [bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in values], dtype=object
            )
        else:
            array = np.array(values, dtype=np.float32)
        tensor = tgrpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)  # raw_input_contents, the client's only way
        out.append(tensor)
    return out


def infer(url: str, tensors: dict[str, list[Any]], outputs: list[str] | None = None, model: str = "hhpulse",
          datatype: str = "BYTES", request_id: str = "") -> dict[str, Any]:  # fmt: skip
    """The answer (id, how many raw outputs, each output's values and parameters.cohorts), or
    the error's status and message."""
    client = tgrpc.InferenceServerClient(url)
    requested = [tgrpc.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
    try:
        result = client.infer(model, _inputs(tensors, datatype), outputs=requested, request_id=request_id)
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    answer = result.get_response()
    values = {}
    for o in answer.outputs:
        array = result.as_numpy(o.name)
        values[o.name] = [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    return {
        "id": answer.id,
        "model_name": answer.model_name,
        "raw_outputs": len(answer.raw_output_contents),
        "names": [o.name for o in answer.outputs],
        "values": values,
        "cohorts": {o.name: o.parameters["cohorts"].string_param for o in answer.outputs},
    }


def health(url: str) -> dict[str, Any]:
    client = tgrpc.InferenceServerClient(url)
    meta = client.get_model_metadata("hhpulse", as_json=True)
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready() and client.is_model_ready("hhpulse"),
        "outputs": [o["name"] for o in meta["outputs"]],
    }


def malformed(url: str, elements: list[list[Any]], shape: list[int]) -> dict[str, Any]:
    """A BYTES raw tensor built by hand from ``[declared length, bytes as text]`` pairs (no
    client sends a malformed one)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    raw = b"".join(struct.pack("<I", n) + text.encode() for n, text in elements)
    request = service_pb2.ModelInferRequest(model_name="hhpulse")
    request.inputs.add(name="responsibility", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(raw)
    try:
        with grpc.insecure_channel(url) as channel:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        return {"status": str(exc.code()), "message": exc.details()}
    return {"status": "StatusCode.OK"}


if __name__ == "__main__":
    calls = {"infer": infer, "health": health, "malformed": malformed}
    print(
        json.dumps([calls[args.pop("call")](**args) for args in json.loads(sys.argv[1])], ensure_ascii=False)
    )
