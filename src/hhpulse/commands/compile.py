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
        "--gpu-node-selector",
        action="append",
        metavar="KEY=VALUE",
        help="node selector label for XGBoost steps, repeatable [hhpulse.io/pool=gpu]",
    )
    p.add_argument(
        "--gpu-toleration",
        action="append",
        metavar="KEY:OPERATOR[:VALUE]:EFFECT",
        help="toleration for XGBoost steps, repeatable [nvidia.com/gpu:Exists:NoSchedule]",
    )
    p.add_argument("--accelerator-type", default="nvidia.com/gpu", help="[%(default)s]")
    p.add_argument("--no-gpu", action="store_true", help="compile without GPU requests")


def run(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline

    selectors = []
    for item in args.gpu_node_selector or ["hhpulse.io/pool=gpu"]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"hhpulse compile: --gpu-node-selector takes KEY=VALUE, got {item!r}")
        selectors.append((key, value))
    tols = []
    for item in args.gpu_toleration or ["nvidia.com/gpu:Exists:NoSchedule"]:
        parts = item.split(":")
        if len(parts) == 3:
            parts.insert(2, "")
        if len(parts) != 4 or parts[1] not in ("Exists", "Equal"):
            raise SystemExit(
                f"hhpulse compile: --gpu-toleration takes KEY:OPERATOR[:VALUE]:EFFECT, got {item!r}"
            )
        tols.append(tuple(parts))
    out = compile_pipeline(
        args.output,
        secret_name=args.secret_name,
        gpu_node_selector=tuple(selectors),
        gpu_tolerations=tuple(tols),
        accelerator_type=args.accelerator_type,
        use_gpu=not args.no_gpu,
    )
    print(f"compiled -> {out}")
    return 0
