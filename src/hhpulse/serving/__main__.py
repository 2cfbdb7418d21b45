"""``python -m hhpulse.serving``: the predictor's entry point (what the serving image runs).

:func:`serve` is shared with ``hhpulse serve``: load and verify the bundle, put the request
guard in front of kserve's app, and run a :class:`BoundModelServer` on the given host.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import kserve
from kserve import model_server

from hhpulse.model.bundle import BundleError
from hhpulse.serving.inputs import Limits
from hhpulse.serving.logs import configure_logging
from hhpulse.serving.middleware import install_guard
from hhpulse.serving.model import DEFAULT_MODEL_DIR, VacancyModel
from hhpulse.serving.options import ALL_INTERFACES, add_server_options, limits_from
from hhpulse.serving.served_log import ServedRecorder

PROG = "python -m hhpulse.serving"
log = logging.getLogger("hhpulse.serving")


class BoundModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` that binds its HTTP server to ``host``.

    kserve 0.21 hard-codes ``host="0.0.0.0"`` in the ``uvicorn.Config`` of the REST server
    it creates inside :meth:`start`; :meth:`setup_event_loop` is the last call there before
    the server binds (single process: uvicorn's startup; ``--workers N``: the parent's
    ``bind_socket``), so the host is set there. gRPC (``--enable_grpc``) still listens on
    ``[::]``: kserve gives it no address to change. It takes messages of at most
    ``max_message_bytes`` (the request guard's body limit; kserve's own default is far
    larger): a larger one is refused with ``RESOURCE_EXHAUSTED`` before it is decoded.
    """

    def __init__(self, host: str, *, max_message_bytes: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.host = host
        self.max_message_bytes = max_message_bytes

    def setup_event_loop(self) -> None:
        rest = self._rest_server or getattr(self._rest_multiprocess_server, "_rest_server", None)
        if rest is None:  # kserve moved its REST server: fail rather than bind 0.0.0.0 unasked
            raise RuntimeError("kserve.ModelServer created no REST server to bind; is kserve 0.21 installed?")
        rest.config.host = self.host
        grpc = self._grpc_server
        if grpc is not None and self.max_message_bytes is not None:
            # read by GRPCServer.start when the server starts, which it has not yet (a copy:
            # kserve passes vars() of its parsed arguments)
            grpc._kwargs = {**grpc._kwargs, "grpc_max_receive_message_length": self.max_message_bytes}
        super().setup_event_loop()


def serve(
    model_dir: str,
    *,
    model_name: str,
    host: str,
    http_port: int,
    limits: Limits,
    log_level: str,
    workers: int = 1,
    input_metrics: bool = True,
    enable_grpc: bool = False,
    grpc_port: int | None = None,
    latency_logging: bool = False,
    prog: str = "hhpulse serving",
    model_flag: str = "--model_dir",
    announce: bool = False,
    served_log: ServedRecorder | None = None,
) -> int:
    """Serve the bundle in ``model_dir`` until stopped; 1 when it cannot be loaded.

    ``model_flag`` names the option that gave ``model_dir`` in the error for a missing one;
    ``announce`` logs the URL it binds (``hhpulse serve``) once the bundle is verified;
    ``served_log`` logs each prediction to a store's served log (written out when the server stops).
    """
    configure_logging(log_level)
    model = VacancyModel(
        model_name,
        model_dir,
        limits=limits,
        log_level=log_level,
        input_metrics=input_metrics,
        served_log=served_log,
    )
    try:
        model.load()
    except BundleError as exc:
        hint = "" if os.path.isdir(model_dir) else f" (check {model_flag})"
        print(f"{prog}: refusing to start: {exc}{hint}", file=sys.stderr)
        return 1
    install_guard(limits, describe=model.describe)
    server = BoundModelServer(
        host,
        max_message_bytes=limits.max_body_bytes,
        http_port=http_port,
        grpc_port=model_server.args.grpc_port if grpc_port is None else grpc_port,
        workers=workers,
        enable_grpc=enable_grpc,
        enable_latency_logging=latency_logging,
    )
    if announce:  # JSON lines, as every other line of the serve log
        where = f"http://{host}:{http_port}" + (" (all interfaces)" if host == ALL_INTERFACES else "")
        log.info(
            "serving %s as %r on %s (POST /v1/models/%s:predict, /v2/models/%s/infer)",
            model_dir,
            model_name,
            where,
            model_name,
            model_name,
        )
        if enable_grpc and host != ALL_INTERFACES:
            log.warning("gRPC on port %s listens on all interfaces (kserve binds [::])", server.grpc_port)
    if served_log is not None:
        log.info(
            "logging every prediction to %s (for `hhpulse monitor`; --no-served-log: off)", served_log.uri
        )
    try:
        server.start([model])
    finally:
        if served_log is not None:
            served_log.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[model_server.parser],
        description="Serve an hhpulse model bundle with KServe (v1 and v2 protocols).",
    )
    parser.add_argument(
        "--model_dir",
        "--model-dir",
        dest="model_dir",
        default=DEFAULT_MODEL_DIR,
        help="bundle directory (KServe mounts storageUri at /mnt/models)",
    )
    parser.add_argument("--model-name", dest="model_name", help="alias of --model_name")
    parser.add_argument("--http-port", dest="http_port", type=int, help="alias of --http_port")
    add_server_options(parser, host=ALL_INTERFACES)
    # gRPC only when asked for (--enable_grpc true); the model is named hhpulse unless told otherwise
    # kserve's per-request latency line is off: the JSON access line has the latency
    parser.set_defaults(enable_grpc=False, model_name="hhpulse", enable_latency_logging=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve(
        args.model_dir,
        model_name=args.model_name,
        host=args.host,
        http_port=args.http_port,
        limits=limits_from(args),
        log_level=args.log_level,
        workers=args.workers,
        input_metrics=args.input_metrics,
        enable_grpc=args.enable_grpc,
        grpc_port=args.grpc_port,
        latency_logging=args.enable_latency_logging,
        model_flag="--model_dir, or the InferenceService's storageUri",
    )


if __name__ == "__main__":
    sys.exit(main())
