"""The Helm chart rendered offline (helm-python-sdk), validated, and checked for security properties."""

from __future__ import annotations

import re
import shutil
import subprocess

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
        if doc["kind"] in ("InferenceService", "PodMonitor"):  # CRDs: validated against their schemas below
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


def test_inferenceservice_matches_the_crd_and_the_deploy_step(rendered, isvc_validator):
    values, docs, _ = rendered
    isvc = [d for _, d in docs if d["kind"] == "InferenceService"][0]
    errors = [e.message for e in isvc_validator.iter_errors(isvc)]
    assert errors == []
    pred = isvc["spec"]["predictor"]
    c = pred["containers"][0]
    serving = values["serving"]
    version = serving["modelVersion"]
    store = values.get("store", {}).get("uri", "s3://hhpulse/prod")
    assert {"name": "STORAGE_URI", "value": f"{store}/models/hhpulse/{version}"} in c["env"]
    assert pred["serviceAccountName"] == "hhpulse-predictor"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # the one InferenceService, whoever renders it: the chart and hhpulse.flows.deploy agree exactly
    expected = render_inferenceservice(
        DeployValues(
            name="hhpulse",
            namespace="ml",
            image="ghcr.io/hhpulse/hhpulse-serving:0.1.0",
            service_account="hhpulse-predictor",
            model_name="hhpulse",
            min_replicas=serving.get("minReplicas", 1),
            max_replicas=serving.get("maxReplicas", 3),
            canary_traffic_percent=serving.get("canaryTrafficPercent"),
            logger_url=(values.get("logger", {}).get("url") or "http://hhpulse-logsink.ml.svc.cluster.local")
            if values.get("logger", {}).get("enabled")
            else None,
            grpc_port=serving["grpc"].get("port", 8081) if serving.get("grpc", {}).get("enabled") else None,
            labels={
                "helm.sh/chart": "hhpulse-0.1.0",
                "app.kubernetes.io/instance": "hhpulse",
                "app.kubernetes.io/version": "0.1.0",
                "app.kubernetes.io/managed-by": "Helm",
            },
        ),
        version=version,
        storage_uri=f"{store}/models/hhpulse/{version}",
    )
    assert isvc == expected


def test_rbac_is_namespaced_and_minimal(rendered):
    _, docs, _ = rendered
    kinds = [d["kind"] for _, d in docs]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    role = [d for _, d in docs if d["kind"] == "Role"][0]
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch", "watch"],
        }
    ]
    binding = [d for _, d in docs if d["kind"] == "RoleBinding"][0]
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "hhpulse-pipeline", "namespace": "ml"}


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


def test_predictor_service_account_carries_s3_settings(rendered):
    values, docs, _ = rendered
    sa = [
        d for _, d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "hhpulse-predictor"
    ][0]
    ann = sa["metadata"]["annotations"]
    assert set(ann) == {
        "serving.kserve.io/s3-endpoint",
        "serving.kserve.io/s3-usehttps",
        "serving.kserve.io/s3-verifyssl",
        "serving.kserve.io/s3-region",
    }
    assert not ann["serving.kserve.io/s3-endpoint"].startswith("http")
    secret = values.get("store", {}).get("existingSecret", "hhpulse-s3")
    assert sa["secrets"] == [{"name": secret}]


def test_no_plaintext_credentials_with_defaults():
    docs, raw = render({})
    assert not [d for _, d in docs if d["kind"] == "Secret"]
    text = "\n".join(raw.values())
    assert not re.search(r"(?i)(aws_secret_access_key|password)\s*[:=]\s*\S{4,}", text)
    assert not [
        d for _, d in docs if d["kind"] == "InferenceService"
    ]  # no model version yet: the pipeline creates it


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
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "hhpulse schedule" in script and "hhpulse compile" in script
    for key, value in (values.get("gpu", {}).get("nodeSelector") or {}).items():
        if value:
            assert f"{key}={value}" in script


def test_manifests_validate(tmp_path):
    import kubernetes_validate

    kust = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((REPO / "manifests" / res).read_text()):
            doc.setdefault("metadata", {}).setdefault("namespace", kust["namespace"])
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    launcher = yaml.safe_load((REPO / "manifests" / "kfp-launcher-configmap.yaml").read_text())
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
    "serving": {"modelVersion": "v20260301-120000"},
    "monitoring": {"podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}}},
    "logger": {"enabled": True},
}


def kinds(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def test_inferenceservice_is_scraped_by_kserve_without_a_logger_by_default(rendered):
    values, docs, _ = rendered
    isvc = kinds(docs, "InferenceService")[0]
    ann = isvc["metadata"]["annotations"]
    assert ann["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert (ann["prometheus.kserve.io/port"], ann["prometheus.kserve.io/path"]) == ("8080", "/metrics")
    if not values.get("logger", {}).get("enabled"):
        assert "logger" not in isvc["spec"]["predictor"]
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
    isvc = kinds(docs, "InferenceService")[0]
    url = "http://hhpulse-logsink.ml.svc.cluster.local"
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
    assert c["image"] == "ghcr.io/hhpulse/hhpulse-serving:0.1.0"
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
    assert (
        kinds(docs, "InferenceService")[0]["spec"]["predictor"]["logger"]["url"]
        == "http://sink.elsewhere:8080/log"
    )
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


def test_grpc_adds_an_h2c_port_for_the_predictor_and_for_the_pipeline_s_deploys():
    import helm_python as helm
    import kubernetes_validate

    docs, _ = render({"serving": {"modelVersion": "v1", "grpc": {"enabled": True, "port": 9000}}})
    c = kinds(docs, "InferenceService")[0]["spec"]["predictor"]["containers"][0]
    assert c["ports"] == [
        {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 9000, "protocol": "TCP"},
    ]
    assert c["args"][-4:] == ["--enable_grpc", "true", "--grpc_port", "9000"]
    # KServe's Service (RawDeployment) takes the container's ports and their names: a Service
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
    # the recurring run deploys each new version with gRPC too (a patch replaces the containers)
    assert "grpc_port=9000\n" in kinds(docs, "ConfigMap")[0]["data"]["params"]
    from pipelines.hhpulse_pipeline import build_pipeline

    assert "grpc_port" in build_pipeline().component_spec.inputs
    off, _ = render({"serving": {"modelVersion": "v1"}})
    c = kinds(off, "InferenceService")[0]["spec"]["predictor"]["containers"][0]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}] and "--enable_grpc" not in c["args"]
    assert "grpc_port" not in kinds(off, "ConfigMap")[0]["data"]["params"]
    for bad in ({"enabled": True, "port": 8080}, {"enabled": "yes"}, {"port": 70000}):
        with pytest.raises(helm.errors.HelmError):
            render({"serving": {"modelVersion": "v1", "grpc": bad}})
