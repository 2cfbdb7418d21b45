"""``VacancyModel``: one ``kserve.Model`` answering both tasks, over v1 and v2.

The handlers only adapt: parsing lives in :mod:`hhpulse.serving.inputs`, prediction in
:meth:`hhpulse.model.bundle.ModelBundle.predict` (the same call ``hhpulse predict`` makes).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

from hhpulse.config import TASKS
from hhpulse.model.bundle import BundleError, ModelBundle, load_bundle
from hhpulse.model.evaluate import bundle_caveats
from hhpulse.model.features import TermStats
from hhpulse.model.inputs import INPUT_FIELDS
from hhpulse.serving.inputs import (
    Limits,
    RequestError,
    Tensor,
    check_shape,
    decode_raw,
    parse_v1,
    parse_v2,
    request_id,
    requested_outputs,
    v1_predictions,
)
from hhpulse.serving.logs import configure_logging
from hhpulse.serving.metrics import REJECTED, count_predicted, observe_inputs, set_model_info
from hhpulse.serving.middleware import install_guard
from hhpulse.serving.served_log import ServedRecorder, instance_ids

log = logging.getLogger("hhpulse.serving")

DEFAULT_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
OUTPUTS = tuple(f"{t}_{kind}" for t in TASKS for kind in ("cohort", "probabilities"))


def reject(exc: RequestError) -> InvalidInput:
    REJECTED.labels(reason=exc.reason).inc()
    return InvalidInput(str(exc))


def cohorts_parameter(names: list[str] | tuple[str, ...]) -> str:
    """The cohorts of an output tensor as its ``parameters.cohorts``: comma-separated, in
    column order, the same string in the infer answer and in the model metadata (the v2
    protocol's parameters are scalars, so a list cannot travel in an infer answer)."""
    bad = [n for n in names if "," in n]
    if bad:
        raise ValueError(f"cohort names must not contain a comma, got {bad}")
    return ",".join(names)


class VacancyModel(kserve.Model):
    """Salary and demand cohorts from vacancy text.

    Args:
        name: the model name in the URL (``/v1/models/<name>:predict``).
        model_dir: the bundle directory (``/mnt/models`` on the cluster).
        bundle: an already loaded bundle (tests inject one); then :meth:`load` only marks ready.
        limits: request limits.
        log_level: level of the ``hhpulse`` JSON logs in spawned workers (``--workers``).
        explain_top: terms per direction in a ``:explain`` answer.
        input_metrics: observe input lengths and known-term shares (:mod:`hhpulse.serving.metrics`).
        served_log: where to log each prediction (``hhpulse serve --store``: the store's served
            log, as KServe's logger and ``hhpulse logsink`` do on a cluster); None logs nothing.
    """

    def __init__(
        self,
        name: str = "hhpulse",
        model_dir: str = DEFAULT_MODEL_DIR,
        *,
        bundle: ModelBundle | None = None,
        limits: Limits | None = None,
        log_level: str = "info",
        explain_top: int = 10,
        input_metrics: bool = True,
        served_log: ServedRecorder | None = None,
    ) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.bundle = bundle
        self.limits = limits or Limits()
        self.log_level = log_level  # what spawned workers configure (see __setstate__)
        self.explain_top = explain_top
        self.input_metrics = input_metrics
        self.served_log = served_log
        self.ready = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        # kserve --workers N (N > 1) pickles the loaded model into spawned uvicorn workers,
        # which import kserve's app afresh: give each worker the request guard as well.
        self.__dict__.update(state)
        configure_logging(self.log_level)
        install_guard(self.limits, describe=self.describe)

    def load(self) -> bool:
        """Verify MANIFEST.json and load the bundle; only then report ready."""
        if self.bundle is None:
            if not os.path.isdir(self.model_dir):
                raise BundleError(f"model directory {self.model_dir} does not exist")
            self.bundle = load_bundle(self.model_dir, verify=True)
        try:
            for t in TASKS:
                cohorts_parameter(self.bundle.cohorts[t])
        except ValueError as exc:
            raise BundleError(f"{self.model_dir}: {exc}") from None
        log.info("loaded model %s (bundle %s) from %s", self.name, self.bundle.version, self.model_dir)
        set_model_info(self.name, self.bundle.version)
        self.ready = True
        return self.ready

    # -- metadata ---------------------------------------------------------------------------
    # kserve builds both metadata answers from get_input_types/get_output_types: gRPC's
    # TensorMetadata takes only name, datatype and shape (another key is an INTERNAL error), and
    # HTTP's response model drops the rest, so what else a tensor says (whether an input is
    # optional, the cohorts of an output) is added to the HTTP answer by ``describe``.
    def get_input_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(i) for i in self.input_types()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(o) for o in self.output_types()]

    def input_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "responsibility", "datatype": "BYTES", "shape": [-1], "optional": False},
            {"name": "name", "datatype": "BYTES", "shape": [-1], "optional": True},
            {"name": "requirement", "datatype": "BYTES", "shape": [-1], "optional": True},
        ]

    def output_types(self) -> list[dict[str, Any]]:
        cohorts = self.bundle.cohorts if self.bundle else {t: [] for t in TASKS}
        out = []
        for t in TASKS:
            names = list(cohorts[t])
            param = {"cohorts": cohorts_parameter(names)}
            out.append({"name": f"{t}_cohort", "datatype": "BYTES", "shape": [-1], "parameters": param})
            out.append(
                {
                    "name": f"{t}_probabilities",
                    "datatype": "FP64",
                    "shape": [-1, len(names)],
                    "parameters": param,  # the columns, in order
                }
            )
        return out

    def describe(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Add what kserve's metadata response model drops: the cohorts of each output
        tensor (``parameters.cohorts``), whether an input is optional, the model version, and
        per task whether it can be relied on (``reliability``: a demand no better than chance
        or learned from the age proxy says so, with why). Called by the request guard on
        ``GET /v2/models/<name>`` and ``GET /v1/models/<name>``."""
        if metadata.get("name") != self.name or self.bundle is None:
            return metadata
        metadata["reliability"] = bundle_caveats(self.bundle.metadata.get("metrics") or {})
        inputs = {i["name"]: i for i in self.input_types()}
        outputs = {o["name"]: o for o in self.output_types()}
        for tensor in metadata.get("inputs") or []:
            if tensor.get("name") in inputs:
                tensor["parameters"] = {"optional": inputs[tensor["name"]]["optional"]}
        for tensor in metadata.get("outputs") or []:
            if tensor.get("name") in outputs:
                tensor["parameters"] = outputs[tensor["name"]]["parameters"]
        metadata["versions"] = [self.bundle.version]
        return metadata

    def _fields(self) -> tuple[str, ...]:
        """The input fields the loaded model reads (the fallback from responsibility follows them)."""
        return self.bundle.input_fields if self.bundle is not None else INPUT_FIELDS

    # -- handlers ---------------------------------------------------------------------------
    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            if isinstance(payload, InferRequest):
                tensors = [_tensor(i) for i in payload.inputs]
                grpc = bool(payload.from_grpc)
                outputs, _ = requested_outputs(
                    [(o.name, o.parameters) for o in payload.request_outputs or []],
                    None if grpc else payload.parameters,  # gRPC: raw inputs get raw outputs
                    OUTPUTS,
                )
                return {
                    "protocol": "v2",
                    "id": request_id(payload.id),
                    "instances": parse_v2(tensors, self.limits, self._fields()),
                    "outputs": outputs,
                    "grpc_raw": grpc and payload.use_binary_outputs,
                    "grpc": grpc,
                }
            if isinstance(payload, (bytes, bytearray)):
                raise RequestError(
                    "bad_content_type", "the body must be JSON (Content-Type: application/json)", 415
                )
            return {
                "protocol": "v1",
                "instances": parse_v1(payload, self.limits, self._fields()),
                "ids": instance_ids(payload) if self.served_log is not None else None,
            }
        except RequestError as exc:
            raise reject(exc) from None

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        assert self.bundle is not None, "predict before load"
        stats: TermStats | None = {} if self.input_metrics else None
        preds = self.bundle.predict(payload["instances"], stats=stats)
        if stats is not None:
            observe_inputs(payload["instances"], self._fields(), stats)
        for p in preds:
            for t in TASKS:
                count_predicted(t, p[t]["cohort"])
        if self.served_log is not None:
            rid = (headers or {}).get("x-request-id") or payload.get("id")
            self.served_log.record(payload["instances"], preds, ids=payload.get("ids"), request_id=rid)
        return {**payload, "predictions": preds}

    def explain(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """``POST /v1/models/<name>:explain``: the cohorts and the terms behind them
        (see :mod:`hhpulse.model.explain`); parsed and limited exactly like ``:predict``."""
        assert self.bundle is not None, "explain before load"
        return {**payload, "explanations": self.bundle.explain(payload["instances"], top=self.explain_top)}

    def postprocess(self, result: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        if "explanations" in result:
            return {"explanations": result["explanations"]}
        preds = result["predictions"]
        if result["protocol"] == "v1":
            return v1_predictions(preds)
        assert self.bundle is not None
        n = len(preds)
        outputs = {}
        for t in TASKS:
            cohorts = self.bundle.cohorts[t]
            param = cohorts_parameter(cohorts)  # a dict each: kserve adds binary_data_size to it
            labels = [p[t]["cohort"] for p in preds]
            outputs[f"{t}_cohort"] = InferOutput(
                f"{t}_cohort", [n], "BYTES", labels, parameters={"cohorts": param}
            )
            # FP64 of v1's 6-decimal values: the JSON shows 0.123457, not float32's 0.12345699965953827
            probs = [p[t]["probabilities"][c] for p in preds for c in cohorts]
            outputs[f"{t}_probabilities"] = InferOutput(
                f"{t}_probabilities", [n, len(cohorts)], "FP64", probs, parameters={"cohorts": param}
            )
        wanted = result["outputs"]  # [(name, binary)], in the order asked for
        return InferResponse(
            response_id=result["id"],
            model_name=self.name,
            model_version=self.bundle.version,
            infer_outputs=[outputs[name] for name, _ in wanted],
            # also here for clients of earlier releases (``hhpulse request`` reads it)
            parameters={"model_version": self.bundle.version},
            # HTTP: each output as JSON data or as raw bytes after the JSON (the binary
            # extension); gRPC: raw_output_contents when the request came in raw_input_contents
            use_binary_outputs=result["grpc_raw"],
            requested_outputs=None
            if result["grpc"]
            else [RequestedOutput(name, {"binary_data": binary}) for name, binary in wanted],
        )


def _tensor_metadata(tensor: dict[str, Any]) -> dict[str, Any]:
    return {k: tensor[k] for k in ("name", "datatype", "shape")}


def _tensor(tensor: InferInput) -> Tensor:
    """One v2 input as parsed by kserve: JSON ``data`` (HTTP), ``contents`` (gRPC), or gRPC's
    ``raw_input_contents``, which kserve keeps undecoded on the input (it has no public
    accessor; its ``as_numpy`` would fail with a 500 on a malformed tensor)."""
    shape = list(tensor.shape)
    raw = getattr(tensor, "_raw_data", None)
    if raw is not None:
        data = decode_raw(tensor.name, tensor.datatype, check_shape(tensor.name, shape), raw)
    else:
        data = _values(tensor.data)
    return Tensor(tensor.name, tensor.datatype, shape, data)


def _values(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return data.ravel().tolist()
    if data is None:
        return []
    flat: list[Any] = []
    for v in data:
        flat.extend(v if isinstance(v, list) else [v])
    return flat
