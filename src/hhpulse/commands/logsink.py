"""``hhpulse logsink``: take KServe's logger CloudEvents and write the served prediction log."""

from __future__ import annotations

import argparse

from hhpulse.watch.logsink import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_PAIR_TIMEOUT,
)
from hhpulse.watch.served import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, DEFAULT_MAX_SECONDS

DEFAULT_SPILL_DIR = ".hhpulse/logsink-spill"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - in its pod the sink must be reachable from the agents
ENV_INFERENCE_SERVICE = "HHPULSE_LOGSINK_INFERENCESERVICE"
ENV_NAMESPACE = "HHPULSE_LOGSINK_NAMESPACE"


def _positive(kind: type) -> object:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value  # type: ignore[no-any-return]

    return parse


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "An HTTP service for KServe's inference logger (spec.predictor.logger, mode all): it pairs each "
        "request and response CloudEvent by id and writes the predictions, in batches, to "
        "served/<date>/<hour>-<uuid>.jsonl.gz in the store. 400 for a bad event, 403 for an event from "
        "another InferenceService than --inference-service/--namespace, 503 when full or while the store "
        "refuses writes; ready once the store has taken a write."
    )
    p.add_argument(
        "--store", default=None, help="DIR or s3://bucket/prefix [$HHPULSE_STORE or .hhpulse/store]"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help=f"address to bind (the image: {ALL_INTERFACES}) [%(default)s]"
    )
    p.add_argument("--port", type=int, default=8080, help="port [%(default)s]")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="also serve GET /metrics alone on this port, for Prometheus (no events) [none]",
    )
    p.add_argument(
        "--inference-service",
        metavar="NAME",
        default=None,
        help="take events only from this InferenceService (ce-inferenceservicename), with --namespace; "
        f"others get 403 [${ENV_INFERENCE_SERVICE}; none: any]",
    )
    p.add_argument(
        "--namespace",
        default=None,
        help=f"its namespace (ce-namespace) [${ENV_NAMESPACE}]",
    )
    pos_int, pos_float = _positive(int), _positive(float)
    p.add_argument(
        "--batch-records", type=pos_int, default=DEFAULT_MAX_RECORDS, help="records per batch [%(default)s]"
    )
    p.add_argument(
        "--batch-bytes",
        type=pos_int,
        default=DEFAULT_MAX_BYTES,
        help="uncompressed bytes per batch [%(default)s]",
    )
    p.add_argument(
        "--batch-seconds",
        type=pos_float,
        default=DEFAULT_MAX_SECONDS,
        help="write a batch once its oldest record is this old [%(default)s]",
    )
    p.add_argument(
        "--max-pending",
        type=pos_int,
        default=DEFAULT_MAX_PENDING,
        help="events waiting for their partner before 503 [%(default)s]",
    )
    p.add_argument(
        "--max-pending-bytes",
        type=pos_int,
        default=DEFAULT_MAX_PENDING_BYTES,
        help="bytes of those events before 503 [%(default)s]",
    )
    p.add_argument(
        "--pair-timeout",
        type=pos_float,
        default=DEFAULT_PAIR_TIMEOUT,
        help="seconds an event waits for its partner before it is dropped (counted) [%(default)s]",
    )
    p.add_argument(
        "--max-event-bytes",
        type=pos_int,
        default=DEFAULT_MAX_EVENT_BYTES,
        help="largest event body [%(default)s]",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=3.0,
        help="after SIGTERM, keep taking events this long before the last batch [%(default)s]",
    )
    p.add_argument(
        "--spill-dir",
        default=DEFAULT_SPILL_DIR,
        help="a local folder (the pod's emptyDir) for the records the store refuses at shutdown; "
        "the next start writes them first [%(default)s]",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import sys

    from hhpulse.data.store import open_store
    from hhpulse.serving.logs import JsonFormatter
    from hhpulse.watch.logsink import Origin, make_sink
    from hhpulse.watch.logsink_http import run_server

    name = args.inference_service or os.environ.get(ENV_INFERENCE_SERVICE) or None
    namespace = args.namespace or os.environ.get(ENV_NAMESPACE) or None
    if bool(name) != bool(namespace):
        args._parser.error(
            "--inference-service and --namespace go together "
            f"(or ${ENV_INFERENCE_SERVICE} and ${ENV_NAMESPACE}): give both, or neither to take any events"
        )
    if args.metrics_port is not None and args.metrics_port == args.port:
        args._parser.error(f"--metrics-port must differ from --port ({args.port}): it serves metrics alone")
    store = open_store(args.store)  # a bad location is one line and exit 2 (hhpulse.cli)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("hhpulse")
    root.handlers[:] = [handler]
    root.setLevel(args.log_level.upper())
    root.propagate = False
    sink = make_sink(
        store,
        batch_records=args.batch_records,
        batch_bytes=args.batch_bytes,
        batch_seconds=args.batch_seconds,
        max_pending=args.max_pending,
        max_pending_bytes=args.max_pending_bytes,
        pair_timeout=args.pair_timeout,
        spill_dir=args.spill_dir,
    )
    logging.getLogger("hhpulse.watch.logsink").info(
        "writing the served log to %s (spill folder %s)", store.uri("served/"), args.spill_dir
    )
    return run_server(
        sink,
        host=args.host,
        port=args.port,
        max_event_bytes=args.max_event_bytes,
        drain=max(0.0, args.drain_seconds),
        origin=Origin(name, namespace),
        metrics_port=args.metrics_port,
    )
