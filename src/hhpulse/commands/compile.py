"""``hhpulse compile``: write the compiled pipeline YAML (committed as pipelines/hhpulse.yaml)."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="pipelines/hhpulse.yaml", help="[%(default)s]")
    p.add_argument(
        "--secret-name",
        default="hhpulse-s3",
        help="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY [%(default)s]",
    )
    p.add_argument(
        "--gpu-node-selector", default="hhpulse.io/pool=gpu", help="KEY=VALUE for XGBoost steps [%(default)s]"
    )
    p.add_argument(
        "--gpu-toleration",
        action="append",
        metavar="KEY:OPERATOR:EFFECT",
        help="toleration for XGBoost steps, repeatable [nvidia.com/gpu:Exists:NoSchedule]",
    )
    p.add_argument("--accelerator-type", default="nvidia.com/gpu", help="[%(default)s]")
    p.add_argument("--no-gpu", action="store_true", help="compile without GPU requests")


def run(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline

    key, _, value = args.gpu_node_selector.partition("=")
    tols = tuple(
        tuple(t.split(":", 2)) for t in (args.gpu_toleration or ["nvidia.com/gpu:Exists:NoSchedule"])
    )
    if any(len(t) != 3 for t in tols):
        raise SystemExit("hhpulse compile: --gpu-toleration takes KEY:OPERATOR:EFFECT")
    out = compile_pipeline(
        args.output,
        secret_name=args.secret_name,
        gpu_node_selector=(key, value),
        gpu_tolerations=tols,
        accelerator_type=args.accelerator_type,
        use_gpu=not args.no_gpu,
    )
    print(f"compiled -> {out}")
    return 0
