"""``python -m hhpulse.serving``: the predictor's entry point (what the serving image runs)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import kserve
from kserve import model_server

from hhpulse.bundle import BundleError
from hhpulse.serving.inputs import Limits
from hhpulse.serving.logs import LEVELS, configure_logging
from hhpulse.serving.middleware import install_guard
from hhpulse.serving.model import DEFAULT_MODEL_DIR, VacancyModel

log = logging.getLogger("hhpulse.serving")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hhpulse.serving",
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
    parser.add_argument(
        "--max_instances", type=int, default=Limits.max_instances, help="instances per request"
    )
    parser.add_argument(
        "--max_text_chars", type=int, default=Limits.max_text_chars, help="characters per text field"
    )
    parser.add_argument("--max_body_bytes", type=int, default=Limits.max_body_bytes, help="request body size")
    parser.add_argument(
        "--log_level",
        "--log-level",
        dest="log_level",
        choices=LEVELS,
        default=os.environ.get("HHPULSE_LOG_LEVEL", "info").lower(),
        help="level of hhpulse's JSON logs; request texts are logged only at debug (env HHPULSE_LOG_LEVEL)",
    )
    # gRPC only when asked for (--enable_grpc true); the model is named hhpulse unless told otherwise
    # kserve's per-request latency line is off: the JSON access line has the latency
    parser.set_defaults(enable_grpc=False, model_name="hhpulse", enable_latency_logging=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    limits = Limits(args.max_instances, args.max_text_chars, args.max_body_bytes)
    model = VacancyModel(args.model_name, args.model_dir, limits=limits, log_level=args.log_level)
    try:
        model.load()
    except BundleError as exc:
        print(f"hhpulse serving: refusing to start: {exc}", file=sys.stderr)
        return 1
    install_guard(limits, describe=model.describe)
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
    ).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
