"""The deploy step against a fake Kubernetes API server: create, patch, wait, time-out, rollback, canary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import yaml

from fake_k8s import FakeK8s
from hhpulse.data.store import LocalStore
from hhpulse.flows.deploy import (
    CANARY_RULE,
    DeployError,
    DeployValues,
    deploy,
    local_storage_note,
    render_inferenceservice,
    render_to_store,
)
from hhpulse.model.bundle import FORMAT, write_manifest
from hhpulse.model.registry import champion, publish

VALUES = DeployValues(name="hhpulse", namespace="ml")
BASE = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices"


def _publish(store, tmp_path, version):
    d = tmp_path / version
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": version}))
    write_manifest(d, version)
    return publish(store, d)


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_the_fake_api_refuses_what_kserve_s_crd_refuses():
    """The fake validates as the API server does, so the deploy tests below also check that every
    InferenceService the deploy step creates or patches satisfies KServe's CRD."""
    from kubernetes.client.rest import ApiException

    k8s = FakeK8s()
    if not k8s.validates:
        k8s.stop()
        pytest.skip("KServe's CRD is not in ../shared/specs")
    try:
        api = k8s.api()
        good = render_inferenceservice(VALUES, version="v1", storage_uri="s3://b/models/hhpulse/v1")
        bad = json.loads(json.dumps(good))
        bad["spec"]["predictor"]["minReplicas"] = "2"
        with pytest.raises(ApiException) as e:
            api.create_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", "ml", "inferenceservices", bad
            )
        assert e.value.status == 422
        assert (
            "spec.predictor.minReplicas: '2' is not of type 'integer'" in json.loads(e.value.body)["message"]
        )
        assert k8s.objects == {}
        api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", "ml", "inferenceservices", good)
        with pytest.raises(ApiException) as e:
            api.patch_namespaced_custom_object(
                "serving.kserve.io",
                "v1beta1",
                "ml",
                "inferenceservices",
                "hhpulse",
                {"spec": {"predictor": {"containers": "not a list"}}},
            )
        assert e.value.status == 422
        assert k8s.objects[("ml", "hhpulse")]["spec"] == good["spec"]
    finally:
        k8s.stop()


def test_creates_when_absent_then_patches_when_present(store, tmp_path):
    k8s = FakeK8s(ready_after=2)
    try:
        v1 = _publish(store, tmp_path, "v1")
        r = deploy(store, VALUES, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        assert r.action == "created" and r.url == "http://hhpulse-ml.example.com"
        calls = [(q["method"], q["path"]) for q in k8s.requests]
        assert calls[:2] == [("GET", f"{BASE}/hhpulse"), ("POST", BASE)]
        created = k8s.requests[1]["body"]
        assert created == render_inferenceservice(VALUES, version="v1", storage_uri=v1.uri)
        v2 = _publish(store, tmp_path, "v2")
        r = deploy(store, VALUES, version="v2", storage_uri=v2.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        assert r.action == "patched"
        patch = [q for q in k8s.requests if q["method"] == "PATCH"][0]
        assert patch["path"] == f"{BASE}/hhpulse"
        assert patch["content_type"] in ("application/merge-patch+json", "application/json-patch+json")
        env = patch["body"]["spec"]["predictor"]["containers"][0]["env"]
        assert env == [{"name": "STORAGE_URI", "value": v2.uri}]
    finally:
        k8s.stop()


def test_timeout_rolls_back_to_the_previous_version(store, tmp_path):
    k8s = FakeK8s(ready_after=None)  # never Ready
    try:
        _publish(store, tmp_path, "v1")
        v2 = _publish(store, tmp_path, "v2")
        with pytest.raises(DeployError, match=r"not Ready after 0s.*rolled back to v1"):
            deploy(store, VALUES, version="v2", storage_uri=v2.uri, timeout_s=0.2, poll_s=0.05, api=k8s.api())
        assert champion(store).version == "v1"  # the pointer moved back
        obj = k8s.objects[("ml", "hhpulse")]
        assert obj["spec"]["predictor"]["containers"][0]["env"][0]["value"].endswith("models/hhpulse/v1")
    finally:
        k8s.stop()


def test_a_failed_deploy_never_rolls_back_a_promotion_made_meanwhile(store, tmp_path):
    k8s = FakeK8s(ready_after=None)  # never Ready
    try:
        _publish(store, tmp_path, "v1")
        v2 = _publish(store, tmp_path, "v2")
        promoted = threading.Timer(0.05, lambda: _publish(store, tmp_path, "v3"))  # another run
        promoted.start()
        with pytest.raises(
            DeployError, match=r"not rolled back: it names v3, not v2 \(another run moved it\)"
        ):
            deploy(store, VALUES, version="v2", storage_uri=v2.uri, timeout_s=2, poll_s=0.05, api=k8s.api())
        promoted.join()
        assert champion(store).version == "v3" and champion(store).previous == ["v2", "v1"]
    finally:
        k8s.stop()


def test_failed_first_deploy_says_there_is_nothing_to_roll_back_to(store, tmp_path):
    k8s = FakeK8s(fail=True)
    try:
        v1 = _publish(store, tmp_path, "v1")
        with pytest.raises(DeployError, match="predictor crashed; no previous version"):
            deploy(store, VALUES, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
    finally:
        k8s.stop()


def test_canary_patch_then_promotion(store, tmp_path):
    k8s = FakeK8s(ready_after=1)
    try:
        v1 = _publish(store, tmp_path, "v1")
        deploy(store, VALUES, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        v2 = _publish(store, tmp_path, "v2")
        canary = DeployValues(name="hhpulse", namespace="ml", canary_traffic_percent=10)
        deploy(store, canary, version="v2", storage_uri=v2.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        patch = [q for q in k8s.requests if q["method"] == "PATCH"][-1]["body"]
        assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
        v3 = _publish(store, tmp_path, "v3")
        deploy(store, VALUES, version="v3", storage_uri=v3.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        last = [q for q in k8s.requests if q["method"] == "PATCH"][-1]["body"]
        assert last["spec"]["predictor"]["canaryTrafficPercent"] is None  # merge-patch null deletes it
        assert "canaryTrafficPercent" not in k8s.objects[("ml", "hhpulse")]["spec"]["predictor"]  # promoted
    finally:
        k8s.stop()


def test_logger_on_then_off_and_prometheus_scraping_always(store, tmp_path):
    sink = "http://hhpulse-logsink.ml.svc.cluster.local"
    k8s = FakeK8s(ready_after=1)
    try:
        v1 = _publish(store, tmp_path, "v1")
        logged = DeployValues(name="hhpulse", namespace="ml", logger_url=sink)
        deploy(store, logged, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        obj = k8s.objects[("ml", "hhpulse")]
        assert obj["spec"]["predictor"]["logger"] == {"mode": "all", "url": sink}
        assert obj["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
        v2 = _publish(store, tmp_path, "v2")
        deploy(store, VALUES, version="v2", storage_uri=v2.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        patch = [q for q in k8s.requests if q["method"] == "PATCH"][-1]["body"]
        assert patch["spec"]["predictor"]["logger"] is None  # merge-patch null deletes it
        assert "logger" not in k8s.objects[("ml", "hhpulse")]["spec"]["predictor"]
    finally:
        k8s.stop()
    with pytest.raises(ValueError, match="http"):
        DeployValues(logger_url="hhpulse-logsink:80")


def test_render_to_store_is_the_local_mode(store):
    key = render_to_store(store, VALUES, version="v9", storage_uri="s3://b/p/models/hhpulse/v9")
    doc = yaml.safe_load(store.get_bytes("deploy/v9/inferenceservice.yaml"))
    assert key.endswith("deploy/v9/inferenceservice.yaml") and doc["kind"] == "InferenceService"
    with pytest.raises(ValueError, match="canary_traffic_percent"):
        DeployValues(canary_traffic_percent=150)


def test_a_remote_storage_uri_gets_no_local_path_note(store):
    assert local_storage_note("s3://b/p/models/hhpulse/v9") is None
    render_to_store(store, VALUES, version="v9", storage_uri="s3://b/p/models/hhpulse/v9")
    assert not store.get_bytes("deploy/v9/inferenceservice.yaml").startswith(b"#")
    assert "path on this machine" in local_storage_note("/home/me/.hhpulse/store/models/hhpulse/v9")


@pytest.mark.parametrize(
    ("pct", "canary"), [(None, None), (0, None), (1, 1), (10, 10), (99, 99), (100, None)]
)
def test_one_canary_rule_for_the_manifest(pct, canary):
    """1-99 is a canary share; 0 (the CLI's and the pipeline's default) and 100 promote fully."""
    pred = render_inferenceservice(
        DeployValues(canary_traffic_percent=pct), version="v1", storage_uri="s3://b/v1"
    )["spec"]["predictor"]
    assert pred.get("canaryTrafficPercent") == canary
    if canary is None:
        assert "canaryTrafficPercent" not in pred


def test_one_canary_rule_said_the_same_everywhere():
    """The CLI's help, the pipeline parameter and the deploy step's input say CANARY_RULE, word for word."""
    from components.deploy_model import deploy_model
    from pipelines.hhpulse_pipeline import build_pipeline

    from hhpulse.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command")
    flag = next(a for a in sub.choices["deploy"]._actions if "--canary-traffic-percent" in a.option_strings)
    assert flag.help.startswith(CANARY_RULE)
    pipeline_param = build_pipeline().component_spec.inputs["canary_traffic_percent"].description
    step_input = deploy_model.component_spec.inputs["canary_traffic_percent"].description
    assert pipeline_param.rstrip(".") == CANARY_RULE
    assert step_input.rstrip(".") == CANARY_RULE
    with pytest.raises(ValueError, match="1-99 sends that share"):
        DeployValues(canary_traffic_percent=-5)


def test_the_chart_follows_the_same_canary_rule():
    """The chart passes serving.canaryTrafficPercent to the deploy step as a run parameter; the
    InferenceService the step renders from it follows the one rule."""
    helm = pytest.importorskip("helm_python")
    from pipelines.kfp_api import declared_parameters, typed_parameters

    from conftest import REPO

    declared = declared_parameters(REPO / "pipelines" / "hhpulse.yaml")
    for pct, canary in ((None, None), (0, None), (10, 10), (100, None)):
        values = {"serving": {"canaryTrafficPercent": pct}}
        out = helm.Chart.load(str(REPO / "helm" / "hhpulse")).render(values, name="hhpulse", namespace="ml")
        cm = yaml.safe_load(next(t for path, t in out.items() if path.endswith("templates/configmap.yaml")))
        raw = dict(line.split("=", 1) for line in cm["data"]["params"].splitlines() if line)
        param = typed_parameters({"canary_traffic_percent": raw["canary_traffic_percent"]}, declared)
        isvc = render_inferenceservice(
            DeployValues(canary_traffic_percent=param["canary_traffic_percent"]),
            version="v1",
            storage_uri="s3://b/v1",
        )
        assert isvc["spec"]["predictor"].get("canaryTrafficPercent") == canary, pct


def test_standard_mode_and_a_non_root_pod_for_kserve_s_injected_containers():
    isvc = render_inferenceservice(VALUES, version="v1", storage_uri="s3://b/v1")
    # RawDeployment is deprecated for Standard (KServe >= 0.16 reads both)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    # the storage initializer KServe injects sets no securityContext: the pod's covers it
    assert isvc["spec"]["predictor"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_serving_values_reach_the_manifest_and_a_patch_drops_what_was_removed(store, tmp_path):
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}
    values = DeployValues(
        name="hhpulse",
        namespace="ml",
        image="registry.example.com/ml/hhpulse-serving:0.1.0",
        model_name="salaries",
        min_replicas=2,
        max_replicas=5,
        resources=resources,
        image_pull_secrets=("registry-credentials",),
    )
    pred = render_inferenceservice(values, version="v1", storage_uri="s3://b/v1")["spec"]["predictor"]
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 5)
    assert pred["imagePullSecrets"] == [{"name": "registry-credentials"}]
    c = pred["containers"][0]
    assert c["resources"] == resources and c["args"][:2] == ["--model_name", "salaries"]
    assert c["image"] == "registry.example.com/ml/hhpulse-serving:0.1.0"
    k8s = FakeK8s(ready_after=1)
    try:
        v1 = _publish(store, tmp_path, "v1")
        deploy(store, values, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        v2 = _publish(store, tmp_path, "v2")
        deploy(store, VALUES, version="v2", storage_uri=v2.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        patch = [q for q in k8s.requests if q["method"] == "PATCH"][-1]["body"]
        assert patch["spec"]["predictor"]["imagePullSecrets"] is None  # merge-patch null deletes it
        live = k8s.objects[("ml", "hhpulse")]["spec"]["predictor"]
        assert "imagePullSecrets" not in live and live["minReplicas"] == 1
    finally:
        k8s.stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "replicas"),
        ({"max_replicas": 0}, "replicas"),
        ({"resources": {"requests": {"cpu": "1"}, "limit": {}}}, "resources must be"),
        ({"resources": {"requests": ["cpu"]}}, "resources.requests"),
    ],
)
def test_bad_serving_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeployValues(**kwargs)


def test_the_deploy_step_takes_every_serving_value_from_the_pipeline():
    from components.deploy_model import deploy_model
    from pipelines.hhpulse_pipeline import build_pipeline

    step = set(deploy_model.component_spec.inputs)
    assert {"model_name", "min_replicas", "max_replicas", "resources", "image_pull_secrets"} <= step
    pipeline = set(build_pipeline().component_spec.inputs)
    assert {
        "model_name",
        "min_replicas",
        "max_replicas",
        "serving_resources",
        "image_pull_secrets",
    } <= pipeline


def test_rbac_refusal_is_a_clear_deploy_error(store, tmp_path):
    k8s = FakeK8s(forbid=("POST",))
    try:
        v1 = _publish(store, tmp_path, "v1")
        with pytest.raises(
            DeployError, match=r"cannot create InferenceService ml/hhpulse: 403 .*cannot create"
        ):
            deploy(store, VALUES, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
    finally:
        k8s.stop()


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "deploy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_renders_the_champion_and_refuses_an_unknown_version(store, tmp_path):
    p = _cli("--store", str(store.root))
    assert p.returncode == 2 and "no champion" in p.stderr
    v1 = _publish(store, tmp_path, "v1")
    p = _cli("--store", str(store.root), "--namespace", "ml")
    assert p.returncode == 0, p.stderr
    manifest = yaml.safe_load(p.stdout)
    assert manifest == render_inferenceservice(
        DeployValues(
            name="hhpulse", namespace="ml", image=manifest["spec"]["predictor"]["containers"][0]["image"]
        ),
        version="v1",
        storage_uri=v1.uri,
    )
    assert store.exists("deploy/v1/inferenceservice.yaml")
    # the store is a local folder: the output says that a cluster cannot use that STORAGE_URI
    assert f"STORAGE_URI {v1.uri} is a path on this machine" in p.stderr
    assert "cluster" in p.stderr and "s3://" in p.stderr
    assert p.stdout.startswith("# NOTE: STORAGE_URI ")  # and so does the manifest itself
    p = _cli("--store", str(store.root), "--version", "v9")
    assert p.returncode == 2 and "version v9 is not published" in p.stderr
    p = _cli("--store", str(store.root), "--rollback", "--resources", "{not json")
    assert p.returncode == 2 and p.stderr.startswith("hhpulse deploy: ")
    assert "rolled back" not in p.stderr  # a bad value is refused before the pointer moves


def test_cli_applies_through_a_kubeconfig_and_rolls_back(store, tmp_path):
    k8s = FakeK8s(ready_after=1)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": k8s.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "fake",
            }
        )
    )
    env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
    try:
        _publish(store, tmp_path, "v1")
        v2 = _publish(store, tmp_path, "v2")
        p = _cli("--store", str(store.root), "--namespace", "ml", "--apply", "--timeout", "30", env=env)
        assert p.returncode == 0, p.stderr
        assert "created ml/hhpulse with v2: ready at http://hhpulse-ml.example.com" in p.stdout
        assert (
            k8s.objects[("ml", "hhpulse")]["spec"]["predictor"]["containers"][0]["env"][0]["value"] == v2.uri
        )
        p = _cli("--store", str(store.root), "--namespace", "ml", "--apply", "--rollback", env=env)
        assert p.returncode == 0, p.stderr
        assert "champion rolled back to v1" in p.stderr and "patched ml/hhpulse with v1" in p.stdout
        assert champion(store).version == "v1"
        env_now = k8s.objects[("ml", "hhpulse")]["spec"]["predictor"]["containers"][0]["env"][0]["value"]
        assert env_now.endswith("/models/hhpulse/v1")
        p = _cli("--store", str(store.root), "--rollback", env=env)
        assert p.returncode == 2 and "nothing to roll back to" in p.stderr
        k8s.forbid = ("PATCH",)
        p = _cli("--store", str(store.root), "--namespace", "ml", "--apply", env=env)
        assert p.returncode == 1 and "403" in p.stderr and "cannot patch" in p.stderr
    finally:
        k8s.stop()
    p = _cli("--store", str(store.root), "--apply", env={"KUBECONFIG": str(tmp_path / "none")})
    assert p.returncode == 1 and "no Kubernetes credentials" in p.stderr


def test_grpc_port_adds_the_h2c_port_and_the_flags():
    isvc = render_inferenceservice(DeployValues(grpc_port=8081), version="v1", storage_uri="s3://b/v1")
    c = isvc["spec"]["predictor"]["containers"][0]
    assert [p.get("name") for p in c["ports"]] == ["http1", "h2c"]
    assert c["args"][-4:] == ["--enable_grpc", "true", "--grpc_port", "8081"]
    plain = render_inferenceservice(DeployValues(), version="v1", storage_uri="s3://b/v1")
    assert plain["spec"]["predictor"]["containers"][0]["ports"] == [
        {"containerPort": 8080, "protocol": "TCP"}
    ]
    for bad in (8080, 0, 70000):
        with pytest.raises(ValueError, match="grpc_port"):
            DeployValues(grpc_port=bad)
