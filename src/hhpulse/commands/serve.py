"""``hhpulse serve``: run the KServe predictor on a bundle (or the store's champion).

It takes the same server options as ``python -m hhpulse.serving`` (one definition,
:mod:`hhpulse.serving.options`), binds loopback unless ``--host`` says otherwise, and removes
the champion's local copy however it ends: stopped, interrupted or failed. With ``--store`` it
logs every prediction to that store's served log (``hhpulse monitor`` reads it), as KServe's
logger and ``hhpulse logsink`` do on a cluster; ``--no-served-log`` turns that off.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from hhpulse.serving.options import LOOPBACK, add_server_options, limits_from


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-dir", "--model_dir", dest="model_dir", help="a bundle directory")
    src.add_argument(
        "--store",
        help="serve the champion of this store (DIR or s3://bucket/prefix) [$HHPULSE_STORE or .hhpulse/store]",
    )
    p.add_argument(
        "--http-port", "--http_port", dest="http_port", type=int, default=8080, help="HTTP port [%(default)s]"
    )
    p.add_argument(
        "--model-name",
        "--model_name",
        dest="model_name",
        default="hhpulse",
        help="model name in URLs [%(default)s]",
    )
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes [%(default)s]")
    p.add_argument(
        "--enable-grpc",
        "--enable_grpc",
        dest="enable_grpc",
        action="store_true",
        help="also serve gRPC (off by default)",
    )
    p.add_argument(
        "--grpc-port", "--grpc_port", dest="grpc_port", type=int, default=8081, help="gRPC port [%(default)s]"
    )
    p.add_argument(
        "--no-served-log",
        dest="served_log",
        action="store_false",
        help="with --store: do not log the predictions to the store's served log "
        "[logged, as a cluster's KServe logger and `hhpulse logsink` do, for `hhpulse monitor`]",
    )
    add_server_options(p, host=LOOPBACK)


@contextmanager
def _scratch(prefix: str) -> Iterator[str]:
    """A temporary folder removed on every way out, SIGTERM included (its default action
    would end the process without running ``finally``; kserve installs its own handlers
    while serving, which stop the server and return)."""
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    if args.model_dir is not None:
        return _serve(args, args.model_dir, "--model-dir")
    from hhpulse.data.store import StoreError, open_store
    from hhpulse.model.bundle import BundleError
    from hhpulse.model.registry import RegistryError, fetch_champion

    with _scratch("hhpulse-champion-") as scratch:
        try:
            model_dir = str(fetch_champion(open_store(args.store), scratch))
            recorder = None
            if args.served_log:
                from hhpulse.serving.served_log import ServedRecorder

                recorder = ServedRecorder(args.store)
        except (RegistryError, StoreError, BundleError) as exc:  # a champion that does not check, too
            print(f"hhpulse serve: {exc}", file=sys.stderr)
            return 2
        return _serve(args, model_dir, "--store", recorder)


def _serve(args: argparse.Namespace, model_dir: str, model_flag: str, served_log: object = None) -> int:
    from hhpulse.serving.__main__ import serve

    return serve(
        model_dir,
        model_name=args.model_name,
        host=args.host,
        http_port=args.http_port,
        limits=limits_from(args),
        log_level=args.log_level,
        workers=args.workers,
        input_metrics=args.input_metrics,
        enable_grpc=args.enable_grpc,
        grpc_port=args.grpc_port,
        prog="hhpulse serve",
        model_flag=model_flag,
        announce=True,
        served_log=served_log,  # type: ignore[arg-type]
    )
