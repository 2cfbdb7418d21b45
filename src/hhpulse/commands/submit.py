"""``hhpulse submit``: upload the pipeline (or a new version of it) and start a run."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone


def add_kfp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API root, e.g. http://ml-pipeline.kubeflow:8888")
    p.add_argument(
        "--namespace",
        default=None,
        help="the Kubeflow profile namespace of the experiment, runs and schedule (multi-user KFP needs it)",
    )
    p.add_argument(
        "--token-env",
        default="KFP_TOKEN",
        help="env var with a bearer token [%(default)s]; $KF_PIPELINES_SA_TOKEN_PATH wins when set",
    )
    p.add_argument(
        "--package", default=None, help="compiled pipeline YAML [the packaged pipelines/hhpulse.yaml]"
    )
    p.add_argument("--name", default="hhpulse-retrain", help="pipeline name [%(default)s]")
    p.add_argument("--experiment", default="hhpulse", help="experiment [%(default)s]")
    p.add_argument("--service-account", default=None, help="Kubernetes ServiceAccount the runs' pods use")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter, converted to the type the compiled pipeline declares for KEY "
        "(text stays text; numbers, true/false, JSON lists and objects), repeatable",
    )


def parse_params(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` items as raw strings (:func:`pipelines.kfp_api.typed_parameters` types them)."""
    from pipelines.kfp_api import ParameterError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"--param {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def prepare(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Check the server, type the parameters, upload the package: (api, pipeline, version,
    experiment, parameters). Raises before any write when the server or a parameter is wrong."""
    from pathlib import Path

    from pipelines.kfp_api import KfpApi, declared_parameters, required_kfp_version, typed_parameters

    from hhpulse import __version__

    package = (
        Path(args.package) if args.package else Path(__import__("pipelines").__file__).parent / "hhpulse.yaml"
    )
    params = typed_parameters(parse_params(args.param), declared_parameters(package))
    api = KfpApi(args.host, namespace=args.namespace, token_env=args.token_env)
    for warning in api.check_server(required_kfp_version(package)):
        print(f"hhpulse {args.command}: warning: {warning}", file=sys.stderr)
    version = f"{__version__}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    pid, vid = api.upload(package, args.name, version, description="hhpulse retraining pipeline")
    return api, pid, vid, api.experiment(args.experiment), params


def configure(p: argparse.ArgumentParser) -> None:
    add_kfp_args(p)
    p.add_argument("--run-name", default=None, help="run name [hhpulse-<time>]")


def run(args: argparse.Namespace) -> int:
    from pipelines.kfp_api import KfpApiError, ParameterError

    try:
        api, pid, vid, eid, params = prepare(args)
        name = args.run_name or f"hhpulse-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        run_id = api.run(name, pid, vid, eid, params, service_account=args.service_account)
    except ParameterError as exc:
        print(f"hhpulse submit: {exc}", file=sys.stderr)
        return 2
    except (KfpApiError, ValueError, OSError) as exc:
        print(f"hhpulse submit: {exc}", file=sys.stderr)
        return 1
    print(f"pipeline {pid} version {vid}; started run {run_id} ({name}) in experiment {eid}")
    return 0
