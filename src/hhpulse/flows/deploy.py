"""Deploying a published model as a KServe InferenceService.

:func:`render_inferenceservice` is the one place that builds the InferenceService, and the
pipeline's deploy step (or ``hhpulse deploy``) is its one owner: the Helm chart renders none,
it passes its ``serving`` values to the pipeline as parameters instead, so an upgrade never
fights a run over the object. :func:`deploy` creates or patches it through the kubernetes
client, waits for ``Ready`` with a timeout, and on failure rolls back to the previous model
version. :func:`render_to_store` is the local mode: it writes the manifest into the store instead.

The kubernetes client is imported inside the functions: the core never needs it to import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from hhpulse import __version__

if TYPE_CHECKING:
    from hhpulse.data.store import Store

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# KServe's deployment mode without Knative: a Deployment, a Service and an HPA. KServe >= 0.16
# calls it Standard (RawDeployment, its old name, is deprecated and read as Standard).
DEPLOYMENT_MODE = "Standard"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
# the predictor pod's own security context: with it, KServe's injected storage initializer (which
# sets none of its own) runs as non-root with the runtime's seccomp profile too
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}

# The one canary rule: the CLI's help, the pipeline parameter and the deploy step say exactly this
# (a test holds them to it), and DeployValues/render_inferenceservice implement it.
CANARY_RULE = (
    "1-99 sends that share of requests to the new version as a canary while the previous "
    "version serves the rest; 0 (or 100) promotes the new version fully"
)


# KServe's Prometheus scraping: it annotates the predictor pods (prometheus.io/scrape, port,
# path) from these; the port and path are the predictor's own /metrics (kserve serves it on the
# HTTP port), where hhpulse's counters and input histograms are.
PROMETHEUS_ANNOTATIONS = {
    "serving.kserve.io/enable-prometheus-scraping": "true",
    "prometheus.kserve.io/port": "8080",
    "prometheus.kserve.io/path": "/metrics",
}


HTTP_PORT = 8080  # the predictor's HTTP port (v1, v2, /metrics)


class DeployError(RuntimeError):
    """The InferenceService did not become ready (and was rolled back where possible)."""


@dataclass(frozen=True)
class DeployValues:
    """The serving values: the Helm chart's ``serving`` section, passed to the pipeline as parameters."""

    name: str = "hhpulse"
    namespace: str = "hhpulse"
    image: str = f"hhpulse-serving:{__version__}"  # as `make images` tags it; a cluster names its registry
    service_account: str = "hhpulse-predictor"
    model_name: str = "hhpulse"
    min_replicas: int = 1
    max_replicas: int = 3
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_RESOURCES))
    )
    image_pull_secrets: tuple[str, ...] = ()
    canary_traffic_percent: int | None = None  # see CANARY_RULE; None: no canary, as 0
    labels: dict[str, str] = field(default_factory=dict)
    logger_url: str | None = None  # KServe's logger (mode all) posts every request/response here
    grpc_port: int | None = (
        None  # also serve gRPC (the Open Inference Protocol) on this port; None: HTTP only
    )

    def __post_init__(self) -> None:
        if self.grpc_port is not None and not (1 <= self.grpc_port <= 65535 and self.grpc_port != HTTP_PORT):
            raise ValueError(f"grpc_port must be a port 1-65535 other than {HTTP_PORT}, got {self.grpc_port}")
        if self.logger_url is not None and not self.logger_url.startswith(("http://", "https://")):
            raise ValueError(f"logger_url must be an http(s):// URL (the log sink), got {self.logger_url!r}")
        if self.canary_traffic_percent is not None and not 0 <= self.canary_traffic_percent <= 100:
            raise ValueError(
                f"canary_traffic_percent must be 0-100 ({CANARY_RULE}), got {self.canary_traffic_percent}"
            )
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"replicas: need 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got {self.min_replicas} and {self.max_replicas}"
            )
        res = self.resources
        if not isinstance(res, dict) or set(res) - {"requests", "limits"}:
            raise ValueError(f'resources must be {{"requests": {{...}}, "limits": {{...}}}}, got {res!r}')
        for part, quantities in res.items():
            if not isinstance(quantities, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in quantities.items()
            ):
                raise ValueError(
                    f"resources.{part} must map resource names to quantities, got {quantities!r}"
                )

    @property
    def canary(self) -> int | None:
        """The canary share (1-99), or None when the new version takes all the traffic."""
        pct = self.canary_traffic_percent
        return pct if pct is not None and 0 < pct < 100 else None


def render_inferenceservice(values: DeployValues, *, version: str, storage_uri: str) -> dict[str, Any]:
    """The InferenceService for ``version`` (a concrete ``models/hhpulse/<version>`` URI).

    With ``values.grpc_port`` the container also serves gRPC, on a second port named ``h2c``
    as KServe documents; in RawDeployment KServe's Service then has both (HTTP on port 80,
    gRPC on ``grpc_port``), and names the ports after the container's: both are named.
    """
    ports: list[dict[str, Any]] = [{"containerPort": HTTP_PORT, "protocol": "TCP"}]
    grpc_args: list[str] = []
    if values.grpc_port is not None:
        ports = [
            {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "h2c", "containerPort": values.grpc_port, "protocol": "TCP"},
        ]
        grpc_args = ["--enable_grpc", "true", "--grpc_port", str(values.grpc_port)]
    predictor: dict[str, Any] = {
        "serviceAccountName": values.service_account,
        "minReplicas": values.min_replicas,
        "maxReplicas": values.max_replicas,
        "securityContext": json.loads(json.dumps(POD_SECURITY_CONTEXT)),
        "containers": [
            {
                "name": "kserve-container",
                "image": values.image,
                "args": [
                    "--model_name",
                    values.model_name,
                    "--model_dir",
                    "/mnt/models",
                    "--http_port",
                    str(HTTP_PORT),
                    *grpc_args,
                ],
                "env": [{"name": "STORAGE_URI", "value": storage_uri}],
                "ports": ports,
                "readinessProbe": {
                    "httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT},
                    "initialDelaySeconds": 5,
                    "periodSeconds": 10,
                },
                "resources": {k: {r: str(q) for r, q in v.items()} for k, v in values.resources.items()},
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    }
    if values.image_pull_secrets:
        predictor["imagePullSecrets"] = [{"name": n} for n in values.image_pull_secrets]
    if values.canary is not None:
        predictor["canaryTrafficPercent"] = values.canary
    if values.logger_url:
        # every request and its 200 response, as CloudEvents, to hhpulse logsink
        predictor["logger"] = {"mode": "all", "url": values.logger_url}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": values.name,
            "namespace": values.namespace,
            "labels": {
                "app.kubernetes.io/name": "hhpulse",
                "app.kubernetes.io/component": "predictor",
                **values.labels,
            },
            "annotations": {
                "hhpulse.io/model-version": version,
                "serving.kserve.io/deploymentMode": DEPLOYMENT_MODE,
                **PROMETHEUS_ANNOTATIONS,
            },
        },
        "spec": {"predictor": predictor},
    }


def manifest_key(version: str) -> str:
    """Where :func:`render_to_store` writes ``version``'s manifest in the store."""
    return f"deploy/{version}/inferenceservice.yaml"


def local_storage_note(storage_uri: str) -> str | None:
    """Why a cluster cannot use ``storage_uri``, when it is a path on this machine (None otherwise)."""
    if "://" in storage_uri:
        return None
    return (
        f"STORAGE_URI {storage_uri} is a path on this machine: a cluster's storage initializer "
        "cannot read it. To deploy on a cluster, publish to an S3/MinIO store (--store s3://...) "
        "and deploy from there."
    )


def render_to_store(store: Store, values: DeployValues, *, version: str, storage_uri: str) -> str:
    """Local mode: write ``deploy/<version>/inferenceservice.yaml`` into the store.

    A manifest whose STORAGE_URI is a local path says so in a leading comment.
    """
    key = manifest_key(version)
    manifest = render_inferenceservice(values, version=version, storage_uri=storage_uri)
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    note = local_storage_note(storage_uri)
    if note:
        text = f"# NOTE: {note}\n{text}"
    store.put_bytes(key, text.encode())
    log.info(
        "local mode: rendered the InferenceService to %s instead of applying it (no cluster)", store.uri(key)
    )
    return store.uri(key)


@dataclass
class DeployResult:
    url: str
    action: str  # created | patched
    version: str


def _api(api: Any | None) -> Any:
    if api is not None:
        return api
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise DeployError(
                f"no Kubernetes credentials: not in a cluster, and no usable kubeconfig ({exc})"
            ) from exc
    return client.CustomObjectsApi()


def _ready(obj: dict[str, Any]) -> tuple[bool | None, str]:
    """(True/False/None = unknown yet, message) from the Ready condition."""
    status = obj.get("status") or {}
    gen, observed = obj.get("metadata", {}).get("generation"), status.get("observedGeneration")
    if gen is not None and observed is not None and observed < gen:
        return None, "not observed yet"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            state = cond.get("status")
            msg = cond.get("message") or cond.get("reason") or ""
            return (
                True
                if state == "True"
                else False
                if state == "False" and cond.get("reason") == "Failed"
                else None
            ), msg
    return None, "no Ready condition yet"


def wait_ready(
    api: Any, namespace: str, name: str, *, timeout_s: float, poll_s: float = 2.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        ok, last = _ready(obj)
        if ok:
            return obj
        if ok is False:
            raise DeployError(f"InferenceService {namespace}/{name} failed: {last}")
        time.sleep(poll_s)
    raise DeployError(f"InferenceService {namespace}/{name} not Ready after {timeout_s:.0f}s: {last}")


def _apply(api: Any, values: DeployValues, body: dict[str, Any]) -> str:
    from kubernetes.client.exceptions import ApiException

    try:
        api.get_namespaced_custom_object(GROUP, VERSION, values.namespace, PLURAL, values.name)
    except ApiException as exc:
        if exc.status != 404:
            raise DeployError(
                f"cannot read InferenceService {values.namespace}/{values.name}: {exc.status} {exc.reason}"
            ) from exc
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, values.namespace, PLURAL, body)
        except ApiException as exc2:
            raise DeployError(_api_error("create", values, exc2)) from exc2
        return "created"
    patch = {**body, "spec": {"predictor": dict(body["spec"]["predictor"])}}
    # a merge patch keeps what it does not mention: promote a canary, turn the logger off, or drop
    # the pull secrets by deleting the field (null); lists (containers) are replaced whole
    for optional in ("canaryTrafficPercent", "logger", "imagePullSecrets"):
        patch["spec"]["predictor"].setdefault(optional, None)
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, values.namespace, PLURAL, values.name, patch)
    except ApiException as exc:
        raise DeployError(_api_error("patch", values, exc)) from exc
    return "patched"


def _api_error(verb: str, values: DeployValues, exc: Any) -> str:
    """The API server's own message (a Status body), e.g. what RBAC or the CRD's schema refused."""
    detail = exc.reason
    with contextlib.suppress(TypeError, ValueError, AttributeError):  # not a Status body
        detail = json.loads(exc.body).get("message") or detail
    return f"cannot {verb} InferenceService {values.namespace}/{values.name}: {exc.status} {detail}"


def deploy(
    store: Store,
    values: DeployValues,
    *,
    version: str,
    storage_uri: str,
    timeout_s: float = 600,
    poll_s: float = 2.0,
    api: Any | None = None,
) -> DeployResult:
    """Create or patch the InferenceService, wait for Ready, roll back on failure."""
    from hhpulse.model.registry import (  # loads the model stack: not at import
        ChampionMoved,
        champion,
        rollback,
        version_prefix,
    )

    api = _api(api)
    body = render_inferenceservice(values, version=version, storage_uri=storage_uri)
    action = _apply(api, values, body)
    log.info("%s InferenceService %s/%s for %s", action, values.namespace, values.name, version)
    try:
        obj = wait_ready(api, values.namespace, values.name, timeout_s=timeout_s, poll_s=poll_s)
    except DeployError as exc:
        reason = str(exc)
        ch = champion(store)
        if ch is not None and ch.version != version:  # another run promoted meanwhile: leave it
            raise DeployError(
                f"{reason}; the champion pointer was not rolled back: it names {ch.version}, not {version} "
                "(another run moved it)"
            ) from exc
        previous = ch.previous[0] if ch and ch.previous else None
        if previous:
            try:
                rollback(store, expect_current=version)  # never undo a promotion made meanwhile
            except ChampionMoved as moved:
                raise DeployError(f"{reason}; the champion pointer was not rolled back: {moved}") from exc
            prev_uri = store.uri(version_prefix(previous))
            _apply(api, values, render_inferenceservice(values, version=previous, storage_uri=prev_uri))
            raise DeployError(f"{reason}; rolled back to {previous}") from exc
        raise DeployError(f"{reason}; no previous version to roll back to") from exc
    url = (obj.get("status") or {}).get("url", "")
    log.info("InferenceService ready at %s", url)
    return DeployResult(url=url, action=action, version=version)
