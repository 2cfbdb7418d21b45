"""``hhpulse deploy``: render or apply the InferenceService for a published model version.

The pipeline's deploy step does this after every winning run; this command is for people:
redeploy the champion, deploy a chosen version, or roll back one step (the champion pointer
moves back to the previous version, whose files the registry keeps) and redeploy it.
"""

from __future__ import annotations

import argparse
import json
import sys

from hhpulse import __version__
from hhpulse.flows.deploy import CANARY_RULE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=".hhpulse/store", help="store with the published models [%(default)s]")
    p.add_argument("--s3-endpoint", help="S3/MinIO endpoint when --store is s3://")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="a published version [the champion]")
    which.add_argument(
        "--rollback",
        action="store_true",
        help="move the champion pointer back to the previous version, then deploy that",
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="create or patch it on the cluster (kubeconfig or in-cluster) and wait for Ready; "
        "without it, print the manifest (and write it to the store)",
    )
    p.add_argument("--namespace", default="hhpulse", help="[%(default)s]")
    p.add_argument("--name", default="hhpulse", help="InferenceService name [%(default)s]")
    p.add_argument(
        "--image",
        default=f"hhpulse-serving:{__version__}",
        help="predictor image, with its registry (as `make push` named it) [%(default)s]",
    )
    p.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="Secret for pulling the predictor image, repeatable [none]",
    )
    p.add_argument(
        "--service-account",
        default="hhpulse-predictor",
        help="predictor ServiceAccount, with the S3 credentials for the storage initializer [%(default)s]",
    )
    p.add_argument("--model-name", default="hhpulse", help="model name in URLs [%(default)s]")
    p.add_argument("--min-replicas", type=int, default=1, help="[%(default)s]")
    p.add_argument("--max-replicas", type=int, default=3, help="[%(default)s]")
    p.add_argument(
        "--resources",
        default=None,
        metavar="JSON",
        help='predictor resources, e.g. \'{"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {...}}\' '
        "[500m/1Gi requested, 2/2Gi limit]",
    )
    p.add_argument(
        "--canary-traffic-percent",
        type=int,
        default=0,
        help=f"{CANARY_RULE} [%(default)s]",
    )
    p.add_argument(
        "--logger-url",
        default=None,
        help="URL of hhpulse logsink: the InferenceService gets KServe's logger (mode all) [none]",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve gRPC (the Open Inference Protocol) on this container port, named h2c [HTTP only]",
    )
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for Ready (--apply) [%(default)s]"
    )


def run(args: argparse.Namespace) -> int:
    from hhpulse.data.store import open_store
    from hhpulse.flows.deploy import (
        DEFAULT_RESOURCES,
        DeployError,
        DeployValues,
        deploy,
        local_storage_note,
        manifest_key,
        render_to_store,
    )
    from hhpulse.model.registry import (
        RegistryError,
        require_champion,
        require_version,
        rollback,
        version_prefix,
    )

    try:  # the values first: a bad one must not leave a rollback behind
        values = DeployValues(
            name=args.name,
            namespace=args.namespace,
            image=args.image,
            service_account=args.service_account,
            model_name=args.model_name,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            resources=json.loads(args.resources) if args.resources else DEFAULT_RESOURCES,
            image_pull_secrets=tuple(args.image_pull_secret),
            canary_traffic_percent=args.canary_traffic_percent,
            logger_url=args.logger_url,
            grpc_port=args.grpc_port,
        )
    except ValueError as exc:  # a bad --resources JSON is a ValueError too
        print(f"hhpulse deploy: {exc}", file=sys.stderr)
        return 2
    store = open_store(args.store, endpoint_url=args.s3_endpoint)
    try:
        if args.rollback:
            version = rollback(store).version
            print(f"champion rolled back to {version}", file=sys.stderr)
        elif args.version:
            version = require_version(store, args.version)
        else:
            version = require_champion(store).version
    except RegistryError as exc:
        print(f"hhpulse deploy: {exc}", file=sys.stderr)
        return 2
    uri = store.uri(version_prefix(version))
    note = local_storage_note(uri)
    if not args.apply:
        where = render_to_store(store, values, version=version, storage_uri=uri)
        sys.stdout.write(store.get_bytes(manifest_key(version)).decode())  # what was stored
        print(f"rendered {version} to {where}; apply it with --apply or kubectl apply -f", file=sys.stderr)
        if note:
            print(f"hhpulse deploy: note: {note}", file=sys.stderr)
        return 0
    if note:
        print(f"hhpulse deploy: warning: {note}", file=sys.stderr)
    try:
        result = deploy(store, values, version=version, storage_uri=uri, timeout_s=args.timeout)
    except DeployError as exc:
        print(f"hhpulse deploy: {exc}", file=sys.stderr)
        return 1
    print(f"{result.action} {args.namespace}/{args.name} with {version}: ready at {result.url}")
    return 0
