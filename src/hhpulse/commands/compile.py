"""``hhpulse compile``: write the compiled pipeline YAML (committed as pipelines/hhpulse.yaml).

Every cluster setting is an option here (the Helm chart's setup Job passes its values): the
image's registry, tag, pull secrets and pull policy, the GPU pool, the credentials Secret, the
steps' time limits and retries, and the whole run's deadline.
"""

from __future__ import annotations

import argparse

PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="pipelines/hhpulse.yaml", help="[%(default)s]")
    p.add_argument(
        "--secret-name",
        default="hhpulse-s3",
        help="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY [%(default)s]",
    )
    img = p.add_argument_group("the steps' image: [REGISTRY/]hhpulse-pipeline:TAG")
    img.add_argument(
        "--image-registry",
        default="",
        help="registry (and path) the image was pushed to, e.g. registry.example.com/ml [none: the local name]",
    )
    img.add_argument("--image-tag", default="", help="image tag [the package version]")
    img.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="Secret for pulling the image (a docker-registry Secret in the runs' namespace), repeatable",
    )
    img.add_argument("--image-pull-policy", default="", choices=("", *PULL_POLICIES), help="[the cluster's]")
    gpu = p.add_argument_group("the GPU pool of the XGBoost steps")
    gpu.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="node label the XGBoost steps need, repeatable (e.g. cloud.google.com/gke-accelerator=nvidia-l4) "
        "[none: any node with the accelerator]",
    )
    gpu.add_argument(
        "--gpu-toleration",
        action="append",
        metavar="KEY:OPERATOR[:VALUE]:EFFECT",
        help="toleration for XGBoost steps, repeatable [nvidia.com/gpu:Exists:NoSchedule]",
    )
    gpu.add_argument("--accelerator-type", default="nvidia.com/gpu", help="[%(default)s]")
    gpu.add_argument("--no-gpu", action="store_true", help="compile without GPU requests")
    run = p.add_argument_group("time limits and retries")
    run.add_argument(
        "--step-timeout",
        action="append",
        default=[],
        metavar="KIND=SECONDS",
        help="a kind of step's time limit, repeatable (kinds: collect, fold, data, features, train, "
        "large, small, deploy) [docs/operations.md]",
    )
    run.add_argument(
        "--retries", type=int, default=2, help="retries of a failed step (not publish, deploy) [2]"
    )
    run.add_argument(
        "--run-timeout",
        type=int,
        default=0,
        metavar="SECONDS",
        help="the whole run's deadline (needs KFP >= 2.17) [0: none]",
    )


def _fail(message: str) -> SystemExit:
    import sys

    print(f"hhpulse compile: {message}", file=sys.stderr)
    return SystemExit(2)


def run(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline
    from pipelines.hhpulse_pipeline import STEP_TIMEOUTS

    selectors = []
    for item in args.gpu_node_selector:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _fail(f"--gpu-node-selector takes KEY=VALUE, got {item!r}")
        selectors.append((key, value))
    tols = []
    for item in args.gpu_toleration or ["nvidia.com/gpu:Exists:NoSchedule"]:
        parts = item.split(":")
        if len(parts) == 3:
            parts.insert(2, "")
        if len(parts) != 4 or parts[1] not in ("Exists", "Equal"):
            raise _fail(f"--gpu-toleration takes KEY:OPERATOR[:VALUE]:EFFECT, got {item!r}")
        tols.append(tuple(parts))
    timeouts = []
    for item in args.step_timeout:
        kind, sep, seconds = item.partition("=")
        if not sep or kind not in STEP_TIMEOUTS or not seconds.isdigit() or int(seconds) < 1:
            raise _fail(
                f"--step-timeout takes KIND=SECONDS with KIND one of {', '.join(STEP_TIMEOUTS)}, got {item!r}"
            )
        timeouts.append((kind, int(seconds)))
    if args.retries < 0 or args.run_timeout < 0:
        raise _fail("--retries and --run-timeout must be >= 0")
    out = compile_pipeline(
        args.output,
        secret_name=args.secret_name,
        image_registry=args.image_registry,
        image_tag=args.image_tag,
        image_pull_secrets=tuple(args.image_pull_secret),
        image_pull_policy=args.image_pull_policy,
        gpu_node_selector=tuple(selectors),
        gpu_tolerations=tuple(tols),
        accelerator_type=args.accelerator_type,
        use_gpu=not args.no_gpu,
        step_timeouts=tuple(timeouts),
        retries=args.retries,
        run_timeout_seconds=args.run_timeout,
    )
    print(f"compiled -> {out}")
    return 0
