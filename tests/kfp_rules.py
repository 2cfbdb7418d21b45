"""Kubeflow Pipelines 2.17's rules that a real install meets, offline.

A re-implementation, for tests, of kubeflow/pipelines at tag 2.17.0:

- :func:`parameter_error`: ``backend/src/apiserver/template/v2_template.go``
  ``validatePipelineJobInputs``, which the API server runs on every run and recurring run: each
  given value must have the protobuf ``Value`` kind of the parameter's declared type (a JSON number
  for NUMBER_INTEGER and NUMBER_DOUBLE, a string for STRING, true/false for BOOLEAN, a list for
  LIST, an object for STRUCT), a parameter without a default must be given, and a value for a
  parameter the pipeline does not declare is refused.
- :func:`executor_pod` and :func:`driver_pod`: the security-relevant shape of the pods KFP's
  backend makes from a compiled pipeline (``backend/src/v2/compiler/argocompiler/container.go``
  ``addContainerExecutorTemplate``: the kfp-launcher init container, the scratch emptyDirs; its
  ``security_context.go``, new in 2.16: seccomp on the pod, allowPrivilegeEscalation=false,
  drop ALL and RuntimeDefault on the user's container, the launcher and driver fully hardened;
  ``backend/src/v2/driver/k8s.go``: the task's kubernetes config applied: image, pull secrets,
  node selector, tolerations, activeDeadlineSeconds and, from 2.16, the task's securityContext
  user, group and runAsNonRoot), with Argo's ``init`` and ``wait`` containers as KFP's manifests
  configure Argo's executor (tests/upstream/kfp-argo-workflow-controller-configmap.yaml).
  Before 2.16 none of KFP's own security contexts exist.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

UPSTREAM = Path(__file__).parent / "upstream"

_KIND = {
    "NUMBER_DOUBLE": (int, float),
    "NUMBER_INTEGER": (int, float),
    "STRING": (str,),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}
_NAME = {
    "NUMBER_DOUBLE": "double or integer",
    "NUMBER_INTEGER": "double or integer",
    "STRING": "string",
    "BOOLEAN": "bool",
    "LIST": "list",
    "STRUCT": "struct",
}


def parameter_error(spec: dict[str, Any], values: dict[str, Any] | None) -> str | None:
    """validatePipelineJobInputs: None when the runtime parameters are accepted, else KFP's message."""
    declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    values = values or {}
    for name, param in declared.items():
        if name not in values:
            if not param.get("isOptional") and "defaultValue" not in param:
                return (
                    f"parameter {name} is not optional, yet has neither default value nor user provided value"
                )
            continue
        kind = param.get("parameterType", "PARAMETER_TYPE_ENUM_UNSPECIFIED")
        if kind == "PARAMETER_TYPE_ENUM_UNSPECIFIED":
            return f"input parameter {name} has unspecified type"
        if kind == "TASK_FINAL_STATUS":
            return (
                f"input parameter {name} requires type TASK_FINAL_STATUS, which is invalid for root component"
            )
        if kind not in _KIND:
            return f"input parameter {name} requires type unknown"
        value = values[name]
        # JSON true/false are BoolValue, never NumberValue (bool is an int in Python)
        ok = isinstance(value, _KIND[kind]) and (kind == "BOOLEAN" or not isinstance(value, bool))
        if not ok:
            return (
                f"input parameter {name} requires type {_NAME[kind]}, but the input parameter is not of "
                f"{_NAME[kind].replace('double or integer', 'number')} value type"
            )
    extra = sorted(set(values) - set(declared))
    if extra:
        return f"parameter(s) provided are not required by pipeline: {', '.join(extra)}"
    return None


def argo_executor_security_context() -> dict[str, Any]:
    """The securityContext of Argo's init and wait containers, as KFP's manifests configure Argo."""
    cm = next(
        d
        for d in yaml.safe_load_all((UPSTREAM / "kfp-argo-workflow-controller-configmap.yaml").read_text())
        if d
    )
    return yaml.safe_load(cm["data"]["executor"])["securityContext"]


_HARDENED = {  # security_context.go defaultContainerSecurityContext
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_USER_DEFAULT = {  # security_context.go defaultUserContainerSecurityContext
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_SCRATCH = (
    "kfp-launcher",
    "gcs-scratch",
    "s3-scratch",
    "minio-scratch",
    "dot-local-scratch",
    "dot-cache-scratch",
    "dot-config-scratch",
)


def _argo(containers_sc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    init = {
        "name": "init",
        "image": "quay.io/argoproj/argoexec",
        "securityContext": copy.deepcopy(containers_sc),
    }
    wait = {
        "name": "wait",
        "image": "quay.io/argoproj/argoexec",
        "securityContext": copy.deepcopy(containers_sc),
    }
    return init, wait


def executor_pod(
    spec: dict[str, Any],
    platform: dict[str, Any],
    executor: str,
    *,
    kfp_version: tuple[int, int, int] = (2, 17, 0),
) -> dict[str, Any]:
    """The pod of one step (``executor``: a key of deploymentSpec.executors) as KFP builds it."""
    hardened = kfp_version >= (2, 16, 0)
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    k8s = (
        ((platform.get("platforms") or {}).get("kubernetes") or {})
        .get("deploymentSpec", {})
        .get("executors", {})
    )
    cfg = k8s.get(executor) or {}
    main: dict[str, Any] = {"name": "main", "image": container["image"]}
    launcher: dict[str, Any] = {"name": "kfp-launcher", "image": "ghcr.io/kubeflow/kfp-launcher"}
    pod: dict[str, Any] = {"volumes": [{"name": n, "emptyDir": {}} for n in (*_SCRATCH, "var-run-argo")]}
    if hardened:
        pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
        main["securityContext"] = copy.deepcopy(_USER_DEFAULT)
        launcher["securityContext"] = copy.deepcopy(_HARDENED)
        user = cfg.get("securityContext") or {}
        for key in ("runAsUser", "runAsGroup"):
            if key in user:
                main["securityContext"][key] = int(user[key])
        if "runAsNonRoot" in user:
            main["securityContext"]["runAsNonRoot"] = bool(user["runAsNonRoot"])
    init, wait = _argo(argo_executor_security_context())
    pod["initContainers"] = [init, launcher]
    pod["containers"] = [wait, main]
    if cfg.get("imagePullSecret"):
        pod["imagePullSecrets"] = [{"name": s["secretName"]} for s in cfg["imagePullSecret"]]
    if cfg.get("nodeSelector"):
        pod["nodeSelector"] = dict(cfg["nodeSelector"].get("labels") or {})
    if cfg.get("tolerations"):
        pod["tolerations"] = copy.deepcopy(cfg["tolerations"])
    if cfg.get("activeDeadlineSeconds"):
        pod["activeDeadlineSeconds"] = int(cfg["activeDeadlineSeconds"])
    return pod


def driver_pod(*, kfp_version: tuple[int, int, int] = (2, 17, 0)) -> dict[str, Any]:
    """The pod of a driver (root DAG or container driver): KFP's driver image, Argo's executor."""
    driver: dict[str, Any] = {"name": "main", "image": "ghcr.io/kubeflow/kfp-driver"}
    pod: dict[str, Any] = {"volumes": [{"name": "var-run-argo", "emptyDir": {}}]}
    if kfp_version >= (2, 16, 0):  # applySecurityContextToTemplate
        pod["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        driver["securityContext"] = copy.deepcopy(_HARDENED)
    init, wait = _argo(argo_executor_security_context())
    pod["initContainers"] = [init]
    pod["containers"] = [wait, driver]
    return pod
