"""The Helm chart rendered offline (helm-python-sdk), validated, and checked for security properties."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from hhpulse.flows.deploy import DeployValues, render_inferenceservice

CHART = REPO / "helm" / "hhpulse"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
K8S_VERSION = "1.30.0"


def render(values, name="hhpulse", namespace="ml"):
    import helm_python as helm

    out = helm.Chart.load(str(CHART)).render(values, name=name, namespace=namespace)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [(path, d) for d in yaml.safe_load_all(text) if d]
    return docs, out


@pytest.fixture(scope="module", params=VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def rendered(request):
    values = yaml.safe_load(request.param.read_text())
    docs, raw = render(values)
    return values, docs, raw


def test_chart_lints_strictly():
    import helm_python as helm

    report = helm.lint(str(CHART), strict=True, namespace="ml")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_core_objects_validate_strictly(rendered):
    import kubernetes_validate

    _, docs, _ = rendered
    for _path, doc in docs:
        if doc["kind"] in ("PodMonitor", "DestinationRule"):  # CRDs: checked below
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def isvc_validator():
    """A validator for the CRD's v1beta1 schema, built once (the CRD is large)."""
    import jsonschema

    from conftest import SHARED_SPECS as shared_specs

    if not (shared_specs / "kserve-inferenceservice-crd.yaml").is_file():
        pytest.skip(f"the KServe CRD is not at {shared_specs}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((shared_specs / "kserve-inferenceservice-crd.yaml").read_text(), Loader=loader)  # noqa: S506
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def run_parameters(docs):
    """The recurring run's parameters as `hhpulse schedule` sends them: the ConfigMap's lines,
    typed by what the committed pipeline declares (pipelines.kfp_api.typed_parameters)."""
    from pipelines.kfp_api import declared_parameters, typed_parameters

    text = [d for _, d in docs if d["kind"] == "ConfigMap"][0]["data"]["params"]
    raw = dict(line.split("=", 1) for line in text.splitlines() if line)
    return typed_parameters(raw, declared_parameters(REPO / "pipelines" / "hhpulse.yaml"))


def deploy_values(params, labels=None):
    """What the deploy step builds from the run's parameters (components/deploy_model.py)."""
    return DeployValues(
        name=params["service_name"],
        namespace=params["namespace"],
        image=params["serving_image"],
        service_account=params["service_account"],
        model_name=params["model_name"],
        min_replicas=params["min_replicas"],
        max_replicas=params["max_replicas"],
        resources=params["serving_resources"],
        image_pull_secrets=tuple(params["image_pull_secrets"]),
        canary_traffic_percent=params["canary_traffic_percent"],
        logger_url=params.get("logger_url") or None,
        grpc_port=params.get("grpc_port") or None,
        labels=labels or {},
    )


def test_the_chart_renders_no_inferenceservice_and_passes_its_serving_values_to_the_deploy_step(
    rendered, isvc_validator
):
    """One owner: the pipeline's deploy step. The chart's serving values reach it as run parameters,
    of the types the compiled pipeline declares, and the InferenceService it renders from them
    carries them and matches the CRD."""
    values, docs, _ = rendered
    assert not [d for _, d in docs if d["kind"] == "InferenceService"]
    params = run_parameters(docs)
    serving = {
        "modelName": "hhpulse",
        "minReplicas": 1,
        "maxReplicas": 3,
        "canaryTrafficPercent": None,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "enabled": True,
        **values.get("serving", {}),
    }
    assert params["deploy_mode"] == ("apply" if serving["enabled"] else "render")
    assert params["area"] == "113" and isinstance(
        params["queries"], list
    )  # the string KFP wants, the list too
    image = values.get("image", {})
    registry = image.get("registry", "")
    assert params["serving_image"] == f"{registry + '/' if registry else ''}hhpulse-serving:0.1.0"
    isvc = render_inferenceservice(
        deploy_values(params), version="v1", storage_uri=f"{params['store']}/models/hhpulse/v1"
    )
    assert [e.message for e in isvc_validator.iter_errors(isvc)] == []
    pred = isvc["spec"]["predictor"]
    assert pred["serviceAccountName"] == "hhpulse-predictor"
    assert (pred["minReplicas"], pred["maxReplicas"]) == (serving["minReplicas"], serving["maxReplicas"])
    assert pred["containers"][0]["resources"] == serving["resources"]
    assert pred["containers"][0]["args"][1] == serving["modelName"]
    assert pred.get("canaryTrafficPercent") == (serving["canaryTrafficPercent"] or None)
    assert pred.get("imagePullSecrets", []) == [{"name": n} for n in image.get("pullSecrets", [])]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_rbac_is_namespaced_and_minimal(rendered):
    values, docs, _ = rendered
    kinds = [d["kind"] for _, d in docs]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    roles = {d["metadata"]["name"]: d["rules"] for _, d in docs if d["kind"] == "Role"}
    assert roles["hhpulse-setup"] == [
        {
            "apiGroups": ["pipelines.kubeflow.org"],
            "resources": ["pipelines"],
            "verbs": ["get", "list", "create"],
        },
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["experiments"], "verbs": ["list", "create"]},
        {
            "apiGroups": ["pipelines.kubeflow.org"],
            "resources": ["jobs"],
            "verbs": ["list", "create", "delete"],
        },
    ]
    if values.get("pipeline", {}).get("runServiceAccount"):
        assert set(roles) == {"hhpulse-setup"}  # the runs use an account the cluster provides
    else:
        assert roles["hhpulse-pipeline"] == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["kfp-launcher"],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["mlpipeline-minio-artifact"],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["workflowtaskresults"],
                "verbs": ["create", "patch"],
            },
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "verbs": ["get", "create", "patch"],
            },
        ]
    bindings = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "RoleBinding"}
    assert set(bindings) == set(roles)
    for name, b in bindings.items():
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "ml"}]


def test_pods_run_as_non_root_without_privileges(rendered):
    _, docs, _ = rendered
    pods = [
        d["spec"]["template"]["spec"] if d["kind"] in ("Job", "Deployment") else d["spec"]
        for _, d in docs
        if d["kind"] in ("Job", "Pod", "Deployment")
    ]
    assert pods
    for spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True


def test_the_predictor_account_lists_the_secret_and_carries_no_misleading_annotations(rendered):
    """KServe takes the endpoint from the Secret's annotations; a ServiceAccount's own count only
    with an AWS IAM role (tests/test_cluster_rules.py runs KServe's rules on it)."""
    values, docs, _ = rendered
    sa = [
        d for _, d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "hhpulse-predictor"
    ][0]
    assert "annotations" not in sa["metadata"]
    assert sa["automountServiceAccountToken"] is False
    secret = values.get("store", {}).get("existingSecret", "hhpulse-s3")
    assert sa["secrets"] == [{"name": secret}]


def test_a_created_secret_carries_kserve_s_annotations():
    docs, _ = render({"store": {"createSecret": True, "accessKey": "AK", "secretKey": "SK"}})
    ann = [d for _, d in docs if d["kind"] == "Secret"][0]["metadata"]["annotations"]
    assert ann == {
        "serving.kserve.io/s3-endpoint": "minio.hhpulse.svc.cluster.local:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "1",
        "serving.kserve.io/s3-region": "us-east-1",
    }
    docs, _ = render(
        {
            "store": {
                "createSecret": True,
                "accessKey": "AK",
                "secretKey": "SK",
                "endpoint": "https://s3.example:9000",
            }
        }
    )
    ann = [d for _, d in docs if d["kind"] == "Secret"][0]["metadata"]["annotations"]
    assert (ann["serving.kserve.io/s3-endpoint"], ann["serving.kserve.io/s3-usehttps"]) == (
        "s3.example:9000",
        "1",
    )


def test_no_plaintext_credentials_with_defaults():
    docs, raw = render({})
    assert not [d for _, d in docs if d["kind"] == "Secret"]
    text = "\n".join(raw.values())
    assert not re.search(r"(?i)(aws_secret_access_key|password)\s*[:=]\s*\S{4,}", text)


def test_secret_only_when_asked_and_never_with_defaults():
    import helm_python as helm

    with pytest.raises(helm.errors.HelmError, match="store.accessKey is required"):
        render({"store": {"createSecret": True}})
    docs, _ = render({"store": {"createSecret": True, "accessKey": "AK", "secretKey": "SK"}})
    secret = [d for _, d in docs if d["kind"] == "Secret"][0]
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}


def test_schema_rejects_a_five_field_cron():
    import helm_python as helm

    with pytest.raises(helm.errors.HelmError, match="schedule"):
        render({"pipeline": {"schedule": "0 3 * * *"}})


def test_setup_job_script_is_valid_bash_and_uses_the_values(rendered):
    values, docs, _ = rendered
    job = [d for _, d in docs if d["kind"] == "Job"][0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["spec"]["serviceAccountName"] == "hhpulse-setup"
    assert pod["spec"]["automountServiceAccountToken"] is False  # it calls the KFP API, not Kubernetes'
    script = pod["spec"]["containers"][0]["args"][0]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "hhpulse schedule" in script and "hhpulse compile" in script
    assert '--namespace "ml"' in script  # multi-user KFP needs the profile's namespace
    image = values.get("image", {})
    assert f'--image-registry "{image.get("registry", "")}"' in script
    for secret in image.get("pullSecrets", []):
        assert f'--image-pull-secret "{secret}"' in script
    assert pod["spec"].get("imagePullSecrets", []) == [{"name": n} for n in image.get("pullSecrets", [])]
    for key, value in (values.get("gpu", {}).get("nodeSelector") or {}).items():
        if value:
            assert f"{key}={value}" in script
    if not (values.get("gpu", {}).get("nodeSelector")):
        assert "--gpu-node-selector" not in script


def test_manifests_validate(tmp_path):
    import kubernetes_validate

    kust = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert "namespace" not in kust  # applied into the profile's namespace: kubectl -n <profile> apply -k
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((REPO / "manifests" / res).read_text()):
            doc.setdefault("metadata", {}).setdefault("namespace", "hhpulse")
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    launcher = yaml.safe_load((REPO / "manifests" / "examples" / "kfp-launcher-configmap.yaml").read_text())
    providers = yaml.safe_load(launcher["data"]["providers"])
    assert providers["minio"]["default"]["credentials"]["secretRef"]["secretName"] == "hhpulse-s3"
    text = "\n".join(p.read_text() for p in (REPO / "manifests").rglob("*.yaml"))
    assert "MINIO_ROOT_PASSWORD" in text and not re.search(r"value:\s*minio123|password:\s*\S+", text)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds():
    import kubernetes_validate

    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "manifests")], capture_output=True, text=True, check=True
    )
    for doc in yaml.safe_load_all(out.stdout):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# -- monitoring: KServe's scraping, the PodMonitors, the logger and the log sink -------------------

PODMONITOR_CRD = REPO / "tests" / "crds" / "monitoring.coreos.com_podmonitors.yaml"
MONITORING = {
    "monitoring": {"podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}}},
    "logger": {"enabled": True},
}


def kinds(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def test_no_logger_and_no_sink_by_default(rendered):
    values, docs, _ = rendered
    if not values.get("logger", {}).get("enabled"):
        assert "logger_url" not in run_parameters(docs)
        assert not kinds(docs, "Deployment") and not kinds(docs, "PodMonitor")


def test_podmonitors_validate_against_the_vendored_crd():
    import jsonschema

    crd = yaml.safe_load(PODMONITOR_CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    docs, _ = render(MONITORING)
    monitors = kinds(docs, "PodMonitor")
    assert [m["metadata"]["name"] for m in monitors] == ["hhpulse-predictor", "hhpulse-logsink"]
    for m in monitors:
        assert m["apiVersion"] == f"{crd['spec']['group']}/v1"
        errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(m)]
        assert errors == []
        assert m["metadata"]["labels"]["release"] == "prometheus"
        assert m["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    predictor, sink = monitors
    assert predictor["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "hhpulse"}
    assert predictor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 8080
    deployment = kinds(docs, "Deployment")[0]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert sink["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = [p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert sink["spec"]["podMetricsEndpoints"][0]["port"] in port_names
    # no sink of its own, no sink PodMonitor
    docs, _ = render({**MONITORING, "logger": {"enabled": True, "url": "http://sink.elsewhere:8080"}})
    assert [m["metadata"]["name"] for m in kinds(docs, "PodMonitor")] == ["hhpulse-predictor"]


def test_logger_points_kserve_at_the_chart_s_sink():
    import kubernetes_validate

    docs, _ = render(MONITORING)
    url = "http://hhpulse-logsink.ml.svc.cluster.local"
    isvc = render_inferenceservice(deploy_values(run_parameters(docs)), version="v1", storage_uri="s3://b/v1")
    assert isvc["spec"]["predictor"]["logger"] == {"mode": "all", "url": url}
    service = kinds(docs, "Service")[0]
    assert service["metadata"]["name"] == "hhpulse-logsink" and service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["sessionAffinity"] == "ClientIP"  # a request and its response reach one replica
    deployment = kinds(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert pod["automountServiceAccountToken"] is False
    sa = [d for d in kinds(docs, "ServiceAccount") if d["metadata"]["name"] == pod["serviceAccountName"]][0]
    assert sa["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == "hhpulse-serving:0.1.0"
    assert c["command"] == ["hhpulse", "logsink"] and "--host=0.0.0.0" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # what the store refuses at shutdown is spilled to a writable volume of the pod's own
    (spill,) = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--spill-dir=")]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == spill]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mount["name"])
    env = {e["name"]: e for e in c["env"]}
    assert env["HHPULSE_STORE"]["value"] == "s3://hhpulse/prod"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "hhpulse-s3", "key": key}
    for doc in (deployment, service, sa):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # the pipeline deploys the same logger when it creates or patches the InferenceService
    params = kinds(docs, "ConfigMap")[0]["data"]["params"]
    assert f"logger_url={url}\n" in params
    from pipelines.hhpulse_pipeline import build_pipeline

    assert "logger_url" in build_pipeline().component_spec.inputs


def test_logger_to_an_outside_sink_renders_no_sink():
    docs, _ = render({**MONITORING, "logger": {"enabled": True, "url": "http://sink.elsewhere:8080/log"}})
    assert run_parameters(docs)["logger_url"] == "http://sink.elsewhere:8080/log"
    assert not kinds(docs, "Deployment") and not [d for d in kinds(docs, "Service")]


def test_schema_refuses_bad_monitoring_values():
    import helm_python as helm

    for bad in (
        {"logger": {"enabled": True, "url": "sink:8080"}},
        {"logger": {"sink": {"replicas": 0}}},
        {"monitoring": {"podMonitor": {"interval": "soon"}}},
    ):
        with pytest.raises(helm.errors.HelmError):
            render(bad)


def test_the_sink_s_destination_rule_pairs_a_call_s_events_under_istio():
    """Istio ignores sessionAffinity; the DestinationRule hashes on the CloudEvent id, which KServe's
    agent gives a call's request and response alike. Off by default: one replica needs none."""
    docs, _ = render({"logger": {"enabled": True}})
    assert not kinds(docs, "DestinationRule")
    docs, _ = render({"logger": {"enabled": True, "sink": {"replicas": 3, "istioDestinationRule": True}}})
    (rule,) = kinds(docs, "DestinationRule")
    service = kinds(docs, "Service")[0]
    assert rule["apiVersion"] == "networking.istio.io/v1beta1"
    assert rule["spec"] == {
        "host": f"{service['metadata']['name']}.ml.svc.cluster.local",
        "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "ce-id"}}},
    }
    from hhpulse.watch import logsink

    assert "Ce-Id" in Path(logsink.__file__).read_text()  # the header the sink pairs by


def test_every_value_is_documented_and_in_the_schema():
    """Each leaf of values.yaml has its `## @param` line, and the schema knows it."""
    import json

    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) ", text, re.M))
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and path not in documented:
                yield from leaves(value, path + ".")
            else:
                yield path

    def in_schema(path):
        node = schema
        for key in path.split("."):
            node = (node.get("properties") or {}).get(key)
            if node is None:
                return False
        return True

    values = yaml.safe_load(text)
    missing = [p for p in leaves(values) if p not in documented]
    assert missing == []
    assert [p for p in documented if not in_schema(p)] == []


def test_grpc_adds_an_h2c_port_to_the_predictor_the_deploy_step_renders():
    import helm_python as helm
    import kubernetes_validate

    docs, _ = render({"serving": {"grpc": {"enabled": True, "port": 9000}}})
    # the recurring run deploys each new version with gRPC (a patch replaces the containers)
    assert "grpc_port=9000\n" in kinds(docs, "ConfigMap")[0]["data"]["params"]
    params = run_parameters(docs)
    assert params["grpc_port"] == 9000
    isvc = render_inferenceservice(
        deploy_values(params), version="v1", storage_uri="s3://hhpulse/prod/models/hhpulse/v1"
    )
    c = isvc["spec"]["predictor"]["containers"][0]
    assert c["ports"] == [
        {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 9000, "protocol": "TCP"},
    ]
    assert c["args"][-4:] == ["--enable_grpc", "true", "--grpc_port", "9000"]
    # KServe's Service (the Standard mode) takes the container's ports and their names: a Service
    # with two ports needs both named
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hhpulse-predictor"},
        "spec": {"ports": [{"name": p["name"], "port": p["containerPort"]} for p in c["ports"]]},
    }
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    # the predictor's NetworkPolicy lets the gateway and the test pod reach the gRPC port too
    policy = next(d for d in kinds(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-predictor"))
    grpc = [r for r in policy["spec"]["ingress"] if {"port": 9000, "protocol": "TCP"} in r["ports"]]
    assert len(grpc) == 2  # the gateway's rule and the test pod's; not the metrics scrape's
    assert grpc[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}
    ]
    from pipelines.hhpulse_pipeline import build_pipeline

    assert "grpc_port" in build_pipeline().component_spec.inputs
    off, _ = render({})
    params = run_parameters(off)
    assert "grpc_port" not in kinds(off, "ConfigMap")[0]["data"]["params"]
    c = render_inferenceservice(deploy_values(params), version="v1", storage_uri="s3://b/m")["spec"][
        "predictor"
    ]["containers"][0]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}] and "--enable_grpc" not in c["args"]
    for bad in ({"enabled": True, "port": 8080}, {"enabled": "yes"}, {"port": 70000}):
        with pytest.raises(helm.errors.HelmError):
            render({"serving": {"grpc": bad}})
