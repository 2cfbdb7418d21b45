"""A no-op ``kserve.Model`` in a real ``kserve.ModelServer``: the floor that bench_serving's
side-by-side compares the predictor with (the same kserve, uvicorn and FastAPI; no model work).

    python -m benchmarks._noop_server --http_port PORT

It answers every v1 ``:predict`` with one constant prediction per instance, binds 127.0.0.1
(as ``hhpulse serve`` does) and runs kserve's defaults otherwise (its per-request latency
line off, as in the predictor).
"""

from __future__ import annotations

from typing import Any

import kserve
from kserve import model_server

from hhpulse.serving.__main__ import BoundModelServer


class NoopModel(kserve.Model):
    def __init__(self, name: str = "hhpulse") -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"predictions": [0 for _ in payload.get("instances", [])]}


def main() -> None:
    args = model_server.args  # kserve parses argv on import: --http_port
    server = BoundModelServer(
        "127.0.0.1",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=False,
        workers=1,
        enable_latency_logging=False,
    )
    server.start([NoopModel()])


if __name__ == "__main__":
    main()
