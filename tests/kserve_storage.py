"""KServe's storage initializer as its webhook injects it, and the credentials it gives it, offline.

A re-implementation, for tests, of kserve/kserve at aaac4e2 (the commit the InferenceService CRD in
../shared/specs comes from), over its own configuration vendored in tests/upstream
(``config/configmap/inferenceservice.yaml``: ``storageInitializer`` and ``credentials``;
``config/storagecontainers/default.yaml``: the default ClusterStorageContainer):

- ``pkg/utils/storage.go`` ``CreateInitContainerWithConfig``: the init container ``storage-initializer``
  with the configured image, resources and args ``[storageUri, /mnt/models]``, and NO
  securityContext (kserve/kserve#5373); ``pkg/webhook/admission/pod/storage_initializer_injector.go``
  ``CommonStorageInitialization``: the ClusterStorageContainer's container merged over it, the
  ``kserve-provision-location`` emptyDir at ``/mnt/models``, then the credentials;
- ``pkg/credentials/service_account_credentials.go`` ``CreateSecretVolumeAndEnvFromServiceAccount``:
  the ServiceAccount's own annotations count only with ``eks.amazonaws.com/role-arn`` (IAM role);
  otherwise each Secret the ServiceAccount lists that holds the configured secret-key name
  (``AWS_SECRET_ACCESS_KEY``) gives the S3 envs;
- ``pkg/credentials/s3/s3_secret.go`` ``BuildSecretEnvs`` and ``pkg/credentials/s3/utils.go``
  ``BuildS3EnvVars``: the keys as secretKeyRefs, then each setting from the Secret's annotation
  (``serving.kserve.io/s3-endpoint``, ...), else the Secret's key (``S3_ENDPOINT``, ...), else the
  configuration; an endpoint with a scheme sets S3_USE_HTTPS itself;
- ``pkg/webhook/admission/pod/agent_injector.go``: with a logger, the ``agent`` container with a
  copy of the first container's securityContext.

Only the S3 path is implemented (GCS, Azure, HTTPS, HDFS, Hugging Face secrets are recognised and
reported as not S3). Istio CNI's change of the initializer's user is not modelled.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import yaml

UPSTREAM = Path(__file__).parent / "upstream"
MOUNT = "/mnt/models"
VOLUME = "kserve-provision-location"
IRSA = "eks.amazonaws.com/role-arn"
ANN = "serving.kserve.io/"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((UPSTREAM / name).read_text()) if d]


def config() -> dict[str, Any]:
    """The inferenceservice-config ConfigMap's storageInitializer, credentials and agent settings."""
    data = _docs("kserve-inferenceservice-config.yaml")[0]["data"]
    return {k: json.loads(data[k]) for k in ("storageInitializer", "credentials", "agent")}


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})  # the API server stores stringData into data
    return out


def _value(annotations: dict[str, str], data: dict[str, str], ann: str, key: str, configured: str) -> str:
    """getEnvValue: the annotation, else the Secret's key, else the configuration."""
    if ANN + ann in annotations:
        return annotations[ANN + ann]
    if key in data:
        return data[key]
    return configured


def build_s3_env_vars(
    annotations: dict[str, str], data: dict[str, str], s3: dict[str, str]
) -> list[dict[str, Any]]:
    """BuildS3EnvVars (pkg/credentials/s3/utils.go)."""
    envs: list[dict[str, Any]] = []
    endpoint = _value(annotations, data, "s3-endpoint", "S3_ENDPOINT", s3.get("s3Endpoint", "")).strip()
    if endpoint:
        lower = endpoint.lower()
        if lower.startswith("https://"):
            use_https, host, url = "1", endpoint[8:], endpoint
        elif lower.startswith("http://"):
            use_https, host, url = "0", endpoint[7:], endpoint
        else:
            use_https = _value(annotations, data, "s3-usehttps", "S3_USE_HTTPS", s3.get("s3UseHttps", ""))
            host = endpoint
            url = ("http://" if use_https == "0" else "https://") + endpoint
        if use_https:
            envs.append({"name": "S3_USE_HTTPS", "value": use_https})
        envs += [{"name": "S3_ENDPOINT", "value": host}, {"name": "AWS_ENDPOINT_URL", "value": url}]
    for ann, key, conf, env in (
        ("s3-verifyssl", "S3_VERIFY_SSL", "s3VerifySSL", "S3_VERIFY_SSL"),
        (
            "s3-useanoncredential",
            "awsAnonymousCredential",
            "s3UseAnonymousCredential",
            "awsAnonymousCredential",
        ),
        ("s3-region", "AWS_DEFAULT_REGION", "s3Region", "AWS_DEFAULT_REGION"),
        ("s3-usevirtualbucket", "S3_USER_VIRTUAL_BUCKET", "s3UseVirtualBucket", "S3_USER_VIRTUAL_BUCKET"),
        ("s3-useaccelerate", "S3_USE_ACCELERATE", "s3UseAccelerate", "S3_USE_ACCELERATE"),
        ("s3-cabundle", "AWS_CA_BUNDLE", "s3CABundle", "AWS_CA_BUNDLE"),
        (
            "s3-cabundle-configmap",
            "AWS_CA_BUNDLE_CONFIGMAP",
            "s3CABundleConfigMap",
            "AWS_CA_BUNDLE_CONFIGMAP",
        ),
    ):
        value = _value(annotations, data, ann, key, s3.get(conf, ""))
        if value:
            envs.append({"name": env, "value": value})
    return envs


def _merge_envs(base: list[dict[str, Any]], override: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """utils.MergeEnvs: an override replaces the value of a base env of its name, or is appended."""
    base = copy.deepcopy(base)
    extra = []
    for o in override:
        for b in base:
            if b["name"] == o["name"]:
                b["value"] = o.get("value")
                break
        else:
            extra.append(o)
    return base + extra


NOT_S3_KEYS = (
    "gcloud-application-credentials.json",
    "AZ_CLIENT_ID",
    "AZURE_CLIENT_ID",
    "https-host",
    "HDFS_NAMENODE",
    "HF_TOKEN",
)


def credential_envs(
    service_account: dict[str, Any] | None, secrets: dict[str, dict[str, Any]], credentials: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """CreateSecretVolumeAndEnv for a ServiceAccount: (envs, notes on what was skipped and why)."""
    notes: list[str] = []
    if service_account is None:
        return [], ["the ServiceAccount does not exist: KServe logs it and injects no credentials"]
    s3 = credentials.get("s3") or {}
    secret_key_name = s3.get("s3SecretAccessKeyName") or "awsSecretAccessKey"
    access_key_name = s3.get("s3AccessKeyIDName") or "awsAccessKeyID"
    envs: list[dict[str, Any]] = []
    sa_ann = (service_account.get("metadata") or {}).get("annotations") or {}
    if IRSA in sa_ann:
        envs += build_s3_env_vars(sa_ann, {}, s3)
    elif any(k.startswith(ANN + "s3-") for k in sa_ann):
        notes.append("the ServiceAccount's serving.kserve.io/s3-* annotations are ignored without " + IRSA)
    for ref in service_account.get("secrets") or []:
        secret = secrets.get(ref["name"])
        if secret is None:
            raise LookupError(f"secret {ref['name']!r} not found: KServe's webhook fails the pod")
        data = _secret_data(secret)
        if secret_key_name in data:
            name = secret["metadata"]["name"]
            keys = [
                {
                    "name": "AWS_ACCESS_KEY_ID",
                    "valueFrom": {"secretKeyRef": {"name": name, "key": access_key_name}},
                },
                {
                    "name": "AWS_SECRET_ACCESS_KEY",
                    "valueFrom": {"secretKeyRef": {"name": name, "key": secret_key_name}},
                },
            ]
            ann = (secret.get("metadata") or {}).get("annotations") or {}
            envs = _merge_envs(envs, keys + build_s3_env_vars(ann, data, s3))
        elif any(k in data for k in NOT_S3_KEYS):
            notes.append(f"secret {ref['name']!r} holds another provider's credentials, not S3's")
        else:
            notes.append(f"secret {ref['name']!r} has no {secret_key_name!r} key: skipped")
    return envs, notes


def storage_initializer(
    storage_uri: str,
    service_account: dict[str, Any] | None,
    secrets: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """The init container KServe's webhook adds to a predictor pod for ``storage_uri``."""
    cfg = config()
    si = cfg["storageInitializer"]
    container: dict[str, Any] = {
        "name": "storage-initializer",
        "image": si["image"],
        "args": [storage_uri, MOUNT],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {
            "limits": {"cpu": si["cpuLimit"], "memory": si["memoryLimit"]},
            "requests": {"cpu": si["cpuRequest"], "memory": si["memoryRequest"]},
        },
    }
    csc = _docs("kserve-default-storagecontainer.yaml")[0]["spec"]
    if any(storage_uri.startswith(f.get("prefix", "\0")) for f in csc["supportedUriFormats"]):
        for key, value in csc["container"].items():  # MergeContainerWithPatch: the spec's fields win
            if key != "name":
                container[key] = copy.deepcopy(value)
    container["volumeMounts"] = [{"name": VOLUME, "mountPath": MOUNT}]
    envs, notes = credential_envs(service_account, secrets, cfg["credentials"])
    if envs:
        container["env"] = envs
    return container, notes


def predictor_pod(
    isvc: dict[str, Any],
    service_accounts: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """The pod spec of an InferenceService's predictor in Standard mode, after KServe's webhook:
    the predictor's pod fields and containers, the agent with a logger, the storage initializer."""
    pred = copy.deepcopy(isvc["spec"]["predictor"])
    containers = pred.pop("containers")
    spec: dict[str, Any] = {
        k: v
        for k, v in pred.items()
        if k
        not in ("minReplicas", "maxReplicas", "canaryTrafficPercent", "logger", "scaleTarget", "scaleMetric")
    }
    spec["containers"] = containers
    spec.setdefault("serviceAccountName", "default")
    notes: list[str] = []
    if pred.get("logger"):
        agent = config()["agent"]
        spec["containers"].append(
            {
                "name": "agent",
                "image": agent["image"],
                "ports": [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}],
                "securityContext": copy.deepcopy(containers[0].get("securityContext")),
            }
        )
    uri = next((e["value"] for e in containers[0].get("env") or [] if e["name"] == "STORAGE_URI"), None)
    if uri:
        init, notes = storage_initializer(uri, service_accounts.get(spec["serviceAccountName"]), secrets)
        spec["initContainers"] = [*spec.get("initContainers", []), init]
        spec["volumes"] = [*spec.get("volumes", []), {"name": VOLUME, "emptyDir": {}}]
        containers[0].setdefault("volumeMounts", []).append(
            {"name": VOLUME, "mountPath": MOUNT, "readOnly": True}
        )
    return spec, notes


def env_value(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == name), None)
