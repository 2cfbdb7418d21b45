"""A Kubeflow profile's namespace as Kubeflow's controllers make it, and Kubeflow's ClusterRoles.

From the vendored files in tests/upstream and, for what controllers create (Go code, not vendored),
from their sources:

- kubeflow/dashboard ``components/profile-controller/controllers/profile_controller.go``: the
  namespace gets the labels of the profile controller's configuration (Kubeflow's
  ``applications/profiles/pss/namespace-labels.yaml``, vendored) and ``istio-injection: enabled``;
  the ServiceAccount ``default-editor`` with the RoleBinding ``default-editor`` to the ClusterRole
  ``kubeflow-edit``, ``default-viewer`` to ``kubeflow-view``, and the owner's RoleBinding
  ``namespaceAdmin`` to ``kubeflow-admin``;
- kubeflow/pipelines 2.17.0 ``manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py``
  (for a namespace labelled ``pipelines.kubeflow.org/enabled: "true"``): the ConfigMaps
  ``kfp-launcher``, ``metadata-grpc-configmap`` and ``artifact-repositories``, and the Secret
  ``mlpipeline-minio-artifact``;
- kubeflow/pipelines 2.17.0 ``manifests/kustomize/base/installs/multi-user/api-service/params.env``:
  KFP's default run ServiceAccount in multi-user mode is ``default-editor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from k8s_rbac import Subject

UPSTREAM = Path(__file__).parent / "upstream"
ROLE_FILES = (
    "kubeflow-roles.yaml",
    "kfp-view-edit-cluster-roles.yaml",
    "kubeflow-kserve-roles.yaml",
    "kubeflow-istio-roles.yaml",
)


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((UPSTREAM / name).read_text()) if d]


def cluster_roles() -> list[dict[str, Any]]:
    """Kubeflow's ClusterRoles: kubeflow-admin/edit/view and what aggregates into them."""
    return [d for f in ROLE_FILES for d in _docs(f) if d["kind"] == "ClusterRole"]


def namespace_labels() -> dict[str, str]:
    labels = {
        k: str(v)
        for k, v in yaml.safe_load((UPSTREAM / "kubeflow-profile-namespace-labels.yaml").read_text()).items()
        if v
    }
    return {**labels, "istio-injection": "enabled"}


def owner(name: str = "you@example.com") -> Subject:
    return Subject.user(name)


def profile_objects(namespace: str, owner_name: str = "you@example.com") -> list[dict[str, Any]]:
    """What the profile controllers create in the namespace (RBAC, and KFP's config objects)."""

    def binding(name: str, role: str, subject: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject],
        }

    def sa(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        }

    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": namespace_labels()},
        },
        sa("default-editor"),
        binding(
            "default-editor",
            "kubeflow-edit",
            {"kind": "ServiceAccount", "name": "default-editor", "namespace": namespace},
        ),
        sa("default-viewer"),
        binding(
            "default-viewer",
            "kubeflow-view",
            {"kind": "ServiceAccount", "name": "default-viewer", "namespace": namespace},
        ),
        binding(
            "namespaceAdmin",
            "kubeflow-admin",
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner_name},
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kfp-launcher", "namespace": namespace},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "metadata-grpc-configmap", "namespace": namespace},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "artifact-repositories", "namespace": namespace},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlpipeline-minio-artifact", "namespace": namespace},
        },
    ]


def kfp_network_policy() -> dict[str, Any]:
    """Kubeflow's NetworkPolicy on the KFP API server (which namespaces may reach ml-pipeline)."""
    return _docs("kubeflow-ml-pipeline-networkpolicy.yaml")[0]
