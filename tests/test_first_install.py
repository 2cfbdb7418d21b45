"""A first install, rehearsed offline: the README's commands on a Kubeflow profile, its setup Job's
own script against KFP's multi-user API, the first run's deploy step against the Kubernetes API,
and every pod, role and credential checked by the real systems' rules.

- the chart is rendered with the values of the README's `helm install` into the profile's
  namespace; the Secret is the one the README's kubectl commands make;
- KFP is tests/fake_kfp.py in multi-user mode: it reviews a token for the audience the Job's
  projected token has, authorizes each call with Kubernetes' RBAC rules over the rendered chart,
  Kubeflow's aggregated ClusterRoles and the profile's bindings, needs the namespace, and checks
  the run parameters' types as KFP 2.17 does;
- the Job's script is taken from the rendered Job and run with bash, with `hhpulse` from this
  checkout (the image's), its mounts (the ConfigMap's params, the token) at temporary paths;
- the deploy step (the component's own code) creates the InferenceService as the runs'
  ServiceAccount, against tests/fake_k8s.py with the same RBAC;
- every pod (the chart's, the manifests', KFP's driver and step pods for the package the Job
  uploaded, the predictor with KServe's storage initializer) is checked against the Pod Security
  level the profile enforces, and the storage initializer's S3 settings against KServe's rules.

What it cannot show (docs/operations.md says so too): that images pull, pods schedule on a GPU
node, Istio routes, MinIO answers, and KServe and KFP behave as their sources say.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import kfp_rules
import kserve_storage
import kubeflow_profile
import pod_security
from conftest import REPO
from fake_k8s import FakeK8s
from fake_kfp import FakeKfp
from install import manifests, pod_specs, readme_install, render_chart
from k8s_rbac import Rbac, Subject


@pytest.fixture
def profile(shared_specs):
    readme = readme_install()
    ns = readme["namespace"]
    docs = render_chart(readme["values"], name=readme["release"], namespace=ns)
    rbac = Rbac(kubeflow_profile.cluster_roles() + kubeflow_profile.profile_objects(ns) + docs)
    return SimpleNamespace(
        readme=readme, ns=ns, docs=docs, rbac=rbac, swagger=shared_specs / "kfp-api-v2beta1.swagger.json"
    )


def _one(docs, kind):
    (obj,) = [d for d in docs if d["kind"] == kind]
    return obj


def run_setup_job(docs, kfp, tmp_path, *, token=None, audience=None, namespace="hhpulse"):
    """Run the rendered Job's script as its pod would: its env, its mounts at temporary paths,
    a token the fake KFP issued to its ServiceAccount for the audience its projected volume asks."""
    job = _one(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["bash", "-ceu"]
    script = container["args"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    root = tmp_path / "pod"
    # the ConfigMap volume
    cm_name = volumes["params"]["configMap"]["name"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    params_dir = root / mounts["params"].lstrip("/")
    params_dir.mkdir(parents=True)
    for key, text in cm["data"].items():
        (params_dir / key).write_text(text)
    # the projected ServiceAccount token, for its audience
    token_dir = root / mounts["kfp-token"].lstrip("/")
    token_dir.mkdir(parents=True)
    src = volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]
    who = Subject.service_account(namespace, pod["serviceAccountName"])
    (token_dir / src["path"]).write_text(token or kfp.issue_token(who, audience or src["audience"]))
    tmp = root / mounts["tmp"].lstrip("/")
    tmp.mkdir(parents=True)
    paths = sorted(mounts.values(), key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(m) for m in paths) + ")")
    script = pattern.sub(lambda m: str(root / m.group(1).lstrip("/")), script)  # each mount, once
    token_path = env["KF_PIPELINES_SA_TOKEN_PATH"]
    env_run = {
        **os.environ,
        **env,
        "KFP_HOST": kfp.url,
        "KF_PIPELINES_SA_TOKEN_PATH": str(root / token_path.lstrip("/")),
        "HOME": str(tmp),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env_run.pop("KFP_TOKEN", None)
    return subprocess.run(
        ["bash", "-ceu", script], capture_output=True, text=True, timeout=600, env=env_run, cwd=tmp
    )


def _uploaded(kfp):
    upload = [
        r for r in kfp.requests if r["path"].endswith(("/pipelines/upload", "/pipelines/upload_version"))
    ][-1]
    spec, platform = list(yaml.safe_load_all(upload["upload"]))
    return spec, platform


def _publish(store, tmp_path, version):
    from hhpulse.model.bundle import FORMAT, write_manifest
    from hhpulse.model.registry import publish

    d = tmp_path / "bundles" / version
    d.mkdir(parents=True)
    (d / "bundle.json").write_text(json.dumps({"format": FORMAT, "version": version}))
    write_manifest(d, version)
    return publish(store, d), d


def _kubeconfig(tmp_path, url):
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.mark.slow
def test_first_install_on_a_kubeflow_profile(profile, tmp_path, monkeypatch):
    readme, ns, docs = profile.readme, profile.ns, profile.docs
    kfp = FakeKfp(profile.swagger, multi_user=True, rbac=profile.rbac, version="2.17.0")
    try:
        # 1. helm install: the setup Job checks KFP, compiles, uploads and schedules
        p = run_setup_job(docs, kfp, tmp_path, namespace=ns)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "recurring run" in p.stdout and "new schedule" in p.stdout
        setup = f"system:serviceaccount:{ns}:hhpulse-setup"
        assert kfp.reviews and all(
            r["allowed"] and r["user"] == setup and r["namespace"] == ns for r in kfp.reviews
        )
        assert {r["resource"] for r in kfp.reviews} == {"pipelines", "experiments", "jobs"}
        (rr,) = kfp.recurring.values()
        assert rr["namespace"] == ns and rr["service_account"] == "hhpulse-pipeline"
        assert rr["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}} and rr["max_concurrency"] == "1"
        params = rr["runtime_config"]["parameters"]
        assert (
            params["area"] == "113"
            and params["min_replicas"] == 1
            and isinstance(params["serving_resources"], dict)
        )
        assert params["serving_image"] == "registry.example.com/ml/hhpulse-serving:0.1.0"
        spec, platform = _uploaded(kfp)
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {"registry.example.com/ml/hhpulse-pipeline:0.1.0"}
        assert kfp_rules.parameter_error(spec, params) is None

        # 2. helm upgrade: the same Job again replaces the schedule with a new pipeline version
        p = run_setup_job(docs, kfp, tmp_path / "again", namespace=ns)
        assert p.returncode == 0, p.stderr
        assert len(kfp.recurring) == 1 and "replaced 1 earlier schedule" in p.stdout
        assert len(next(iter(kfp.versions.values()))) == 2

        # 3. the first winning run's deploy step, as the runs' ServiceAccount, on the run's parameters
        from components.deploy_model import deploy_model

        from hhpulse.data.store import LocalStore

        store = LocalStore(tmp_path / "store")
        published, bundle = _publish(store, tmp_path, "v20260301-030000")
        k8s = FakeK8s(
            ready_after=1, rbac=profile.rbac, subject=Subject.service_account(ns, rr["service_account"])
        )
        try:
            from kubernetes.config import kube_config

            # the step reads a kubeconfig when not in a pod (the module read $KUBECONFIG at import)
            monkeypatch.setattr(
                kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(_kubeconfig(tmp_path, k8s.url))
            )
            monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")
            declared = spec["root"]["inputDefinitions"]["parameters"]
            run = {k: params.get(k, declared[k].get("defaultValue")) for k in declared}
            url = deploy_model.python_func(
                store=str(store.root),
                s3_endpoint="",
                bundle=SimpleNamespace(path=str(bundle)),
                model_uri=f"s3://hhpulse/prod/models/hhpulse/{published.version}",
                mode=run["deploy_mode"],
                namespace=run["namespace"],
                service_name=run["service_name"],
                serving_image=run["serving_image"],
                service_account=run["service_account"],
                canary_traffic_percent=run["canary_traffic_percent"],
                timeout_seconds=10,
                logger_url=run["logger_url"],
                model_name=run["model_name"],
                min_replicas=run["min_replicas"],
                max_replicas=run["max_replicas"],
                resources=run["serving_resources"],
                image_pull_secrets=run["image_pull_secrets"],
            )
            assert url == f"http://hhpulse-{ns}.example.com"
            assert [q["method"] for q in k8s.requests][:2] == ["GET", "POST"]  # created, as hhpulse-pipeline
            isvc = k8s.objects[(ns, "hhpulse")]
        finally:
            k8s.stop()
    finally:
        kfp.stop()

    # 4. every pod, against the level the profile enforces
    level = pod_security.enforced_level(kubeflow_profile.namespace_labels())
    assert level == "baseline"
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    secret = readme["secret"]
    predictor, notes = kserve_storage.predictor_pod(isvc, sas, {secret["metadata"]["name"]: secret})
    pods = pod_specs(docs) + pod_specs(manifests()) + [("predictor", predictor, {})]
    pods += [("KFP driver", kfp_rules.driver_pod(), {})]
    pods += [
        (label, kfp_rules.executor_pod(spec, platform, label), {})
        for label in spec["deploymentSpec"]["executors"]
    ]
    for name, pod_spec, ann in pods:
        assert pod_security.violations(pod_spec, level, ann) == [], name

    # 5. the model server gets the store's endpoint and keys from the README's Secret
    init = predictor["initContainers"][0]
    assert notes == []
    assert kserve_storage.env_value(init, "AWS_ENDPOINT_URL") == readme["values"]["store"]["endpoint"]
    assert init["args"] == [f"s3://hhpulse/prod/models/hhpulse/{published.version}", "/mnt/models"]


def test_the_setup_job_says_what_is_wrong(profile, tmp_path):
    """An old KFP, a token for another audience, a Job without its Role: one clear line each."""
    docs, ns = profile.docs, profile.ns
    kfp = FakeKfp(profile.swagger, multi_user=True, rbac=profile.rbac, version="2.5.0")  # Kubeflow 1.10's
    try:
        p = run_setup_job(docs, kfp, tmp_path / "old", namespace=ns)
        assert p.returncode == 1
        assert "hhpulse schedule: KFP at" in p.stderr and "is 2.5.0, older than 2.14.0" in p.stderr, p.stderr[
            -3000:
        ]
        assert not [r for r in kfp.requests if r["method"] == "POST"]  # nothing uploaded
    finally:
        kfp.stop()
    kfp = FakeKfp(profile.swagger, multi_user=True, rbac=profile.rbac)
    try:
        p = run_setup_job(
            docs, kfp, tmp_path / "aud", namespace=ns, audience="https://kubernetes.default.svc"
        )
        assert p.returncode == 1 and "HTTP 401" in p.stderr and "User identity is empty" in p.stderr, (
            p.stderr[-3000:]
        )
    finally:
        kfp.stop()
    without_role = Rbac(
        kubeflow_profile.cluster_roles()
        + kubeflow_profile.profile_objects(ns)
        + [d for d in docs if not (d["kind"] == "RoleBinding" and d["metadata"]["name"] == "hhpulse-setup")]
    )
    kfp = FakeKfp(profile.swagger, multi_user=True, rbac=without_role)
    try:
        p = run_setup_job(docs, kfp, tmp_path / "norole", namespace=ns)
        assert p.returncode == 1 and "HTTP 403" in p.stderr and "PermissionDenied" in p.stderr, p.stderr[
            -3000:
        ]
        assert "Namespace:hhpulse,Verb:get,Group:pipelines.kubeflow.org" in p.stderr
        assert p.stderr.count("\n") <= 2  # a message, not a traceback
    finally:
        kfp.stop()


def test_kfp_refuses_what_the_old_install_sent(profile):
    """What the fake enforces, shown on the old install's requests: no namespace, JSON-decoded area."""
    from pipelines.kfp_api import KfpApi, KfpApiError

    kfp = FakeKfp(profile.swagger, multi_user=True, rbac=profile.rbac)
    try:
        token = kfp.issue_token(Subject.service_account(profile.ns, "hhpulse-setup"))
        os.environ.pop("KF_PIPELINES_SA_TOKEN_PATH", None)
        api = KfpApi(kfp.url, namespace=None, token_env="HHPULSE_TEST_TOKEN")
        api.session.headers["Authorization"] = f"Bearer {token}"
        with pytest.raises(KfpApiError, match="multi-user mode: pass --namespace"):
            api.check_server()
        with pytest.raises(
            KfpApiError, match="An experiment cannot have an empty namespace in multi-user mode"
        ):
            api.experiment("hhpulse")
        api.namespace = profile.ns
        pid, vid = api.upload(REPO / "pipelines" / "hhpulse.yaml", "hhpulse-retrain", "v1")
        eid = api.experiment("hhpulse")
        with pytest.raises(KfpApiError, match="input parameter area requires type string"):
            api.schedule("s", "0 0 3 * * *", pid, vid, eid, {"area": 113})
        assert not kfp.recurring
    finally:
        kfp.stop()
