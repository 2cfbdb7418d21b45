"""``hhpulse serve``: run the KServe predictor on a bundle (or the store's champion)."""

from __future__ import annotations

import argparse
import sys
import tempfile


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-dir", help="a bundle directory")
    src.add_argument("--store", help="serve the champion of this store (DIR or s3://bucket/prefix)")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port [%(default)s]")
    p.add_argument("--model-name", default="hhpulse", help="model name in URLs [%(default)s]")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes [%(default)s]")
    p.add_argument("--enable-grpc", action="store_true", help="also serve gRPC (off by default)")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="JSON log level; request texts are logged only at debug [%(default)s]",
    )


def run(args: argparse.Namespace) -> int:
    model_dir = args.model_dir
    if model_dir is None:
        from hhpulse.registry import RegistryError, fetch_champion
        from hhpulse.store import open_store

        try:
            model_dir = str(
                fetch_champion(open_store(args.store), tempfile.mkdtemp(prefix="hhpulse-champion-"))
            )
        except RegistryError as exc:
            print(f"hhpulse serve: {exc}", file=sys.stderr)
            return 2
    from hhpulse.serving.__main__ import main

    argv = [
        "--model_dir",
        model_dir,
        "--http_port",
        str(args.http_port),
        "--model_name",
        args.model_name,
        "--workers",
        str(args.workers),
        "--enable_grpc",
        str(args.enable_grpc).lower(),
        "--log_level",
        args.log_level,
    ]
    print(
        f"serving {model_dir} as {args.model_name!r} on http://127.0.0.1:{args.http_port} "
        f"(POST /v1/models/{args.model_name}:predict, /v2/models/{args.model_name}/infer)",
        flush=True,
    )
    return main(argv)
