"""The real systems' rules, offline, over what hhpulse installs: Kubernetes RBAC with Kubeflow's
aggregated ClusterRoles, Pod Security levels, KServe's storage initializer and its credentials,
KFP's parameter types, the calls KFP's driver, launcher and Argo's executor make, and every
executor's image, time limit and retries in the compiled pipeline.

The rules live in tests/k8s_rbac.py, tests/pod_security.py, tests/kserve_storage.py and
tests/kfp_rules.py (each names its sources); what they run on is vendored in tests/upstream
(tests/upstream/SOURCES.md). Each rule is first shown to refuse what the real system refuses.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

import kfp_rules
import kserve_storage
import kubeflow_profile
import pod_security
from conftest import REPO
from install import manifests, pod_specs, readme_install, render_chart
from k8s_rbac import Rbac, Subject

NS = "hhpulse"
GOLDEN = REPO / "pipelines" / "hhpulse.yaml"
CALLS = yaml.safe_load((REPO / "tests" / "upstream" / "kfp-calls.yaml").read_text())
VALUES_FILES = sorted((REPO / "helm" / "hhpulse" / "ci").glob("*-values.yaml"))


def cluster(docs, namespace=NS):
    """The RBAC of a profile namespace with the chart installed, under Kubeflow's ClusterRoles."""
    return Rbac(kubeflow_profile.cluster_roles() + kubeflow_profile.profile_objects(namespace) + docs)


def compiled():
    spec, platform = list(yaml.safe_load_all(GOLDEN.read_text()))
    return spec, platform


def compile_with(tmp_path, *args):
    out = tmp_path / "p.yaml"
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "compile", "--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stderr
    return list(yaml.safe_load_all(out.read_text()))


# -- the rules refuse what the real systems refuse -------------------------------------------------


def test_rbac_aggregation_gives_default_editor_kfp_and_kserve_but_not_role_creation():
    rbac = cluster([])
    editor = Subject.service_account(NS, "default-editor")
    # kubeflow-edit <- kubeflow-pipelines-edit <- aggregate-to-kubeflow-pipelines-edit (+ -view)
    assert rbac.can(editor, "create", "pipelines.kubeflow.org", "jobs", NS)
    assert rbac.can(editor, "list", "pipelines.kubeflow.org", "jobs", NS)  # through the view role
    assert rbac.can(editor, "patch", "serving.kserve.io", "inferenceservices", NS, "hhpulse")
    assert rbac.can(editor, "create", "argoproj.io", "workflowtaskresults", NS)
    assert not rbac.can(editor, "create", "rbac.authorization.k8s.io", "roles", NS)
    assert not rbac.can(editor, "create", "pipelines.kubeflow.org", "jobs", "another-profile")
    stranger = Subject.service_account(NS, "hhpulse-pipeline")
    assert not rbac.can(stranger, "get", "", "configmaps", NS, "kfp-launcher")  # nothing bound: denied
    owner = kubeflow_profile.owner()
    assert rbac.can(owner, "create", "rbac.authorization.k8s.io", "roles", NS)  # kubeflow-admin
    assert not rbac.can(
        owner, "create", "networking.istio.io", "destinationrules", NS
    )  # read-only in Kubeflow


def test_rbac_resource_names_limit_a_rule_and_never_allow_create_or_list():
    role = {
        "kind": "Role",
        "metadata": {"name": "r", "namespace": NS},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["a"],
                "verbs": ["get", "create", "list"],
            }
        ],
    }
    bind = {
        "kind": "RoleBinding",
        "metadata": {"name": "r", "namespace": NS},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": NS}],
    }
    rbac = Rbac([role, bind])
    sa = Subject.service_account(NS, "sa")
    assert rbac.can(sa, "get", "", "secrets", NS, "a")
    assert not rbac.can(sa, "get", "", "secrets", NS, "b")
    assert not rbac.can(sa, "create", "", "secrets", NS)
    assert not rbac.can(sa, "list", "", "secrets", NS)
    # escalation: a user may grant only what it holds
    assert (
        rbac.uncovered(
            sa, NS, [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]}]
        )
        == []
    )
    assert rbac.uncovered(sa, NS, [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]) == [
        "get core/secrets"
    ]


def test_pod_security_levels_refuse_what_admission_refuses():
    bare = {"containers": [{"name": "c", "image": "x"}]}
    assert pod_security.violations(bare, "baseline") == []
    assert pod_security.violations(bare, "restricted")  # no non-root, no seccomp, nothing dropped
    privileged = {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    found = pod_security.violations(privileged, "baseline")
    assert any("hostNetwork" in v for v in found) and any("privileged" in v for v in found)
    caps = {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}
    assert any("NET_ADMIN" in v for v in pod_security.violations(caps, "baseline"))
    ok = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [{"name": "t", "emptyDir": {}}],
    }
    assert pod_security.violations(ok, "restricted") == []
    ok["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert any("hostPath" in v for v in pod_security.violations(ok, "baseline"))


def test_kfp_parameter_types_are_checked_as_v2_template_go_does():
    spec, _ = compiled()
    assert kfp_rules.parameter_error(spec, {"area": "113", "demo_size": 50, "queries": ["a"]}) is None
    assert kfp_rules.parameter_error(spec, {"area": 113}) == (
        "input parameter area requires type string, but the input parameter is not of string value type"
    )
    assert "requires type double or integer" in kfp_rules.parameter_error(spec, {"demo_size": "50"})
    assert "requires type double or integer" in kfp_rules.parameter_error(spec, {"demo_size": True})
    assert "requires type bool" in kfp_rules.parameter_error(spec, {"random_split": "false"})
    assert "requires type list" in kfp_rules.parameter_error(spec, {"queries": "Python"})
    assert (
        kfp_rules.parameter_error(spec, {"nope": 1})
        == "parameter(s) provided are not required by pipeline: nope"
    )


def test_kserve_reads_the_endpoint_from_the_secret_not_the_service_account():
    """The old chart's annotations on the predictor's ServiceAccount: KServe ignores them without an
    IAM role, so the storage initializer called AWS with MinIO's keys."""
    secret = {
        "metadata": {"name": "s3", "annotations": {}},
        "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    }
    sa = {
        "metadata": {
            "name": "p",
            "annotations": {
                "serving.kserve.io/s3-endpoint": "minio:9000",
                "serving.kserve.io/s3-usehttps": "0",
            },
        },
        "secrets": [{"name": "s3"}],
    }
    init, notes = kserve_storage.storage_initializer("s3://b/m", sa, {"s3": secret})
    assert kserve_storage.env_value(init, "S3_ENDPOINT") is None
    assert any("ignored without eks.amazonaws.com/role-arn" in n for n in notes)
    secret["metadata"]["annotations"] = {
        "serving.kserve.io/s3-endpoint": "minio:9000",
        "serving.kserve.io/s3-usehttps": "0",
    }
    init, _ = kserve_storage.storage_initializer("s3://b/m", sa, {"s3": secret})
    assert kserve_storage.env_value(init, "S3_ENDPOINT") == "minio:9000"
    assert kserve_storage.env_value(init, "AWS_ENDPOINT_URL") == "http://minio:9000"
    assert kserve_storage.env_value(init, "S3_USE_HTTPS") == "0"
    # or the Secret's S3_ENDPOINT key, with its scheme
    secret["metadata"]["annotations"] = {}
    secret["stringData"]["S3_ENDPOINT"] = "https://s3.example"
    init, _ = kserve_storage.storage_initializer("s3://b/m", sa, {"s3": secret})
    assert (
        kserve_storage.env_value(init, "S3_ENDPOINT"),
        kserve_storage.env_value(init, "S3_USE_HTTPS"),
    ) == ("s3.example", "1")
    assert "securityContext" not in init  # kserve/kserve#5373


# -- the chart and the pipeline under those rules ---------------------------------------------------


@pytest.fixture(scope="module", params=VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def installed(request):
    values = yaml.safe_load(request.param.read_text())
    docs = render_chart(values, namespace=NS)
    return values, docs, cluster(docs)


def _sa(docs, component):
    return next(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount"
        and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component
    )


def _pod_name():
    return "hhpulse-retrain-7x2kq-system-container-impl-4242"  # pods are named by Argo; rules name none


def test_the_runs_service_account_may_make_every_call_of_kfp_argo_and_the_deploy_step(installed):
    values, docs, rbac = installed
    run_sa = values.get("pipeline", {}).get("runServiceAccount") or _sa(docs, "pipeline")
    who = Subject.service_account(NS, run_sa)
    missing = []
    for call in CALLS["run_pods"]:
        if call["when"] != "always":
            continue
        name = _pod_name() if call.get("name") == "*" else call.get("name", "")
        if not rbac.can(who, call["verb"], call["group"], call["resource"], NS, name):
            missing.append(f"{call['who']}: {call['verb']} {call['resource']} {name} ({call['source']})")
    assert missing == [], f"{run_sa} is refused:\n" + "\n".join(missing)


def test_the_chart_s_run_role_grants_nothing_else(installed):
    values, docs, rbac = installed
    if values.get("pipeline", {}).get("runServiceAccount"):
        pytest.skip("the runs use an account the cluster provides")
    who = Subject.service_account(NS, _sa(docs, "pipeline"))
    assert not rbac.can(
        who, "get", "", "secrets", NS, "hhpulse-s3"
    )  # the store's keys reach steps as env only
    assert not rbac.can(who, "list", "", "secrets", NS)
    assert not rbac.can(who, "create", "", "pods", NS)
    assert not rbac.can(who, "delete", "serving.kserve.io", "inferenceservices", NS, "hhpulse")
    assert not rbac.can(who, "create", "pipelines.kubeflow.org", "runs", NS)


def test_the_setup_job_may_make_every_kfp_api_call_and_no_kubernetes_call(installed):
    _, docs, rbac = installed
    who = Subject.service_account(NS, _sa(docs, "pipeline-setup"))
    for call in CALLS["api_server"]:
        if "verb" not in call or call["resource"] == "runs":  # runs: `hhpulse submit`, not the Job
            continue
        assert rbac.can(who, call["verb"], "pipelines.kubeflow.org", call["resource"], NS), call["route"]
    assert not rbac.can(who, "create", "pipelines.kubeflow.org", "runs", NS)
    for resource in ("secrets", "configmaps", "pods"):
        assert not rbac.can(who, "get", "", resource, NS, "x")


def test_the_pipeline_makes_none_of_the_conditional_calls():
    """The calls the runs' Role does not allow are ones this pipeline never triggers."""
    text = GOLDEN.read_text()
    _, platform = compiled()
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for call in CALLS["run_pods"]:
        for placeholder in call.get("placeholders", []):
            assert placeholder not in text, call["source"]
        if call.get("platform_key"):
            assert not [e for e in executors.values() if call["platform_key"] in e], call["source"]


def test_the_profile_owner_can_install_every_object_and_grant_every_role(installed):
    """Kubernetes refuses a Role that grants more than its creator holds (escalation check): the
    chart's Roles are within kubeflow-admin, so the profile's owner installs the chart."""
    values, docs, rbac = installed
    owner = kubeflow_profile.owner()
    groups = {
        "Role": "rbac.authorization.k8s.io",
        "RoleBinding": "rbac.authorization.k8s.io",
        "Job": "batch",
        "Deployment": "apps",
        "PodMonitor": "monitoring.coreos.com",
        "DestinationRule": "networking.istio.io",
        "NetworkPolicy": "networking.k8s.io",
    }
    refused = []
    for d in docs:
        kind = d["kind"]
        resource = {
            "DestinationRule": "destinationrules",
            "PodMonitor": "podmonitors",
            "NetworkPolicy": "networkpolicies",
        }.get(kind, kind.lower() + "s")
        for verb in ("create", "get", "patch", "delete"):
            if not rbac.can(
                owner,
                verb,
                groups.get(kind, ""),
                resource,
                NS,
                d["metadata"]["name"] if verb != "create" else "",
            ):
                refused.append(f"{verb} {kind}")
        if kind == "Role":
            assert rbac.uncovered(owner, NS, d["rules"]) == [], d["metadata"]["name"]
    expected = set()
    if values.get("monitoring", {}).get("podMonitor", {}).get("enabled"):
        expected |= {
            f"{v} PodMonitor" for v in ("create", "get", "patch", "delete")
        }  # prometheus-operator's CRD: not Kubeflow's
    if values.get("logger", {}).get("sink", {}).get("istioDestinationRule"):
        expected |= {
            f"{v} DestinationRule" for v in ("create", "patch", "delete")
        }  # Kubeflow keeps Istio read-only
    assert set(refused) == expected
    # a contributor with kubeflow-edit cannot: RBAC objects are kubeflow-admin's
    rbac_editor = Rbac(
        kubeflow_profile.cluster_roles()
        + kubeflow_profile.profile_objects(NS)
        + [
            {
                "kind": "RoleBinding",
                "metadata": {"name": "c", "namespace": NS},
                "roleRef": {"kind": "ClusterRole", "name": "kubeflow-edit"},
                "subjects": [{"kind": "User", "name": "contributor@example.com"}],
            }
        ]
    )
    assert not rbac_editor.can(
        Subject.user("contributor@example.com"), "create", "rbac.authorization.k8s.io", "roles", NS
    )


def test_every_pod_the_chart_and_manifests_make_passes_restricted(installed):
    _, docs, _ = installed
    for name, spec, ann in pod_specs(docs) + pod_specs(manifests()):
        assert pod_security.violations(spec, "restricted", ann) == [], name


def test_the_profile_namespace_enforces_baseline_and_the_kfp_api_admits_it():
    labels = kubeflow_profile.namespace_labels()
    assert pod_security.enforced_level(labels) == "baseline"
    policy = kubeflow_profile.kfp_network_policy()
    from k8s_rbac import _selector_matches

    admitted = [f["namespaceSelector"] for f in policy["spec"]["ingress"][0]["from"]]
    assert any(_selector_matches(sel, labels) for sel in admitted)
    plain = {"kubernetes.io/metadata.name": "hhpulse"}  # `kubectl create namespace hhpulse`
    assert not any(_selector_matches(sel, plain) for sel in admitted)
    profile = yaml.safe_load((REPO / "manifests" / "profile.yaml").read_text())
    assert profile["kind"] == "Profile" and profile["metadata"]["name"] == NS


@pytest.mark.parametrize(
    ("version", "restricted"), [((2, 14, 0), False), ((2, 16, 0), True), ((2, 17, 0), True)]
)
def test_every_step_pod_passes_the_profile_s_level(version, restricted):
    """KFP builds a driver and a step pod per task; both pass baseline (the profile's level) on every
    supported KFP, and restricted from 2.16, where KFP sets security contexts and takes the steps'
    non-root user from the compiled pipeline."""
    spec, platform = compiled()
    pods = [("driver", kfp_rules.driver_pod(kfp_version=version))] + [
        (label, kfp_rules.executor_pod(spec, platform, label, kfp_version=version))
        for label in spec["deploymentSpec"]["executors"]
    ]
    for name, pod in pods:
        assert pod_security.violations(pod, "baseline") == [], name
        assert (pod_security.violations(pod, "restricted") == []) is restricted, name
    step = kfp_rules.executor_pod(spec, platform, "exec-collect-vacancies")
    assert step["containers"][1]["securityContext"]["runAsUser"] == 10001


def _readme_objects():
    readme = readme_install()
    docs = render_chart(readme["values"], name=readme["release"], namespace=readme["namespace"])
    return readme, docs


def test_the_predictor_pod_with_kserve_s_storage_initializer_passes_baseline_not_restricted():
    """Why the profile enforces baseline: KServe's injected container sets no securityContext."""
    from hhpulse.flows.deploy import DeployValues, render_inferenceservice

    readme, docs = _readme_objects()
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    secret = readme["secret"]
    for logger in (None, "http://hhpulse-logsink.hhpulse.svc.cluster.local"):
        isvc = render_inferenceservice(
            DeployValues(namespace=NS, logger_url=logger),
            version="v1",
            storage_uri="s3://hhpulse/prod/models/hhpulse/v1",
        )
        pod, _ = kserve_storage.predictor_pod(isvc, sas, {secret["metadata"]["name"]: secret})
        assert pod_security.violations(pod, "baseline") == []
        found = pod_security.violations(pod, "restricted")
        assert found and all("initContainers[storage-initializer]" in v for v in found), found
        assert len(found) == 2  # allowPrivilegeEscalation, capabilities: the pod covers non-root and seccomp


def test_the_storage_initializer_gets_the_endpoint_on_the_readme_s_path():
    readme, docs = _readme_objects()
    secret = readme["secret"]
    assert secret is not None, "the README creates no Secret"
    sa = next(
        d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "hhpulse-predictor"
    )
    init, notes = kserve_storage.storage_initializer(
        "s3://hhpulse/prod/models/hhpulse/v1", sa, {secret["metadata"]["name"]: secret}
    )
    endpoint = readme["values"]["store"]["endpoint"]
    assert kserve_storage.env_value(init, "AWS_ENDPOINT_URL") == endpoint
    assert kserve_storage.env_value(init, "S3_ENDPOINT") == endpoint.split("://", 1)[1]
    assert kserve_storage.env_value(init, "S3_USE_HTTPS") == "0"
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"] if "valueFrom" in e}
    assert keys == {
        "AWS_ACCESS_KEY_ID": {"name": "hhpulse-s3", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "hhpulse-s3", "key": "AWS_SECRET_ACCESS_KEY"},
    }
    assert notes == []
    # without the README's annotate step, no endpoint: what the install did before
    secret = {**secret, "metadata": {**secret["metadata"], "annotations": {}}}
    init, _ = kserve_storage.storage_initializer("s3://b/m", sa, {secret["metadata"]["name"]: secret})
    assert kserve_storage.env_value(init, "S3_ENDPOINT") is None


def test_the_chart_s_own_secret_gives_the_same_endpoint():
    docs = render_chart({"store": {"createSecret": True, "accessKey": "a", "secretKey": "b"}})
    secret = next(d for d in docs if d["kind"] == "Secret")
    sa = next(
        d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "hhpulse-predictor"
    )
    init, _ = kserve_storage.storage_initializer(
        "s3://hhpulse/prod/m", sa, {secret["metadata"]["name"]: secret}
    )
    assert kserve_storage.env_value(init, "AWS_ENDPOINT_URL") == "http://minio.hhpulse.svc.cluster.local:9000"


# -- the compiled pipeline: images, pull secrets, time limits, retries --------------------------


def test_every_executor_runs_the_chart_s_image_with_its_pull_secrets(tmp_path):
    """The setup Job compiles with the chart's registry, tag and pull secrets: every executor names
    the image `make push` pushed, and pulls it with the Secret."""
    readme, docs = _readme_objects()
    values = {
        **readme["values"],
        "image": {
            **readme["values"]["image"],
            "pullSecrets": ["registry-credentials"],
            "pipelineTag": "0.1.0-rc1",
        },
    }
    job = next(d for d in render_chart(values) if d["kind"] == "Job")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    compile_line = [ln for ln in script.splitlines() if "compile_args" in ln]
    args = []
    for ln in compile_line:
        m = re.match(r"\s*compile_args\+?=\((.*)\)\s*$", ln)
        if m:
            import shlex

            args += shlex.split(m.group(1))
    args = [a for a in args if not a.startswith("--output")]
    args = args[1:] if args and args[0] == "/tmp/hhpulse.yaml" else args
    spec, platform = compile_with(tmp_path, *args)
    image = "registry.example.com/ml/hhpulse-pipeline:0.1.0-rc1"
    images = {label: e["container"]["image"] for label, e in spec["deploymentSpec"]["executors"].items()}
    assert set(images.values()) == {image}, images
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image  # the Job runs the same build
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for label in images:
        assert [s["secretName"] for s in k8s[label]["imagePullSecret"]] == ["registry-credentials"], label
        assert k8s[label]["imagePullPolicy"] == "IfNotPresent"
    assert spec["root"]["inputDefinitions"]["parameters"]["serving_image"]["defaultValue"] == image.replace(
        "pipeline", "serving"
    )


def test_the_committed_pipeline_names_the_local_build_not_a_registry():
    spec, _ = compiled()
    import hhpulse

    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"hhpulse-pipeline:{hhpulse.__version__}"}
    assert "ghcr.io" not in GOLDEN.read_text()


def test_every_step_has_a_time_limit_and_all_but_publish_and_deploy_retry():
    spec, platform = compiled()
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])
    for label, cfg in k8s.items():
        assert int(cfg["activeDeadlineSeconds"]) >= 1800, label
        assert cfg["securityContext"] == {
            "runAsGroup": "10001",
            "runAsNonRoot": True,
            "runAsUser": "10001",
        }, label
    retried, not_retried = set(), set()
    for comp in [spec["root"], *spec["components"].values()]:
        for name, task in (comp.get("dag") or {}).get("tasks", {}).items():
            if "componentRef" in task and "executorLabel" in spec["components"][task["componentRef"]["name"]]:
                (retried if task.get("retryPolicy") else not_retried).add(name)
    assert not_retried == {"publish-model", "deploy-model"}
    assert {"collect-vacancies", "record-outcome", "train-candidate"} <= retried
    policy = spec["root"]["dag"]["tasks"]["record-outcome"]["retryPolicy"]
    assert policy["maxRetryCount"] == 2 and policy["backoffDuration"] == "60s"


def test_the_kfp_version_the_package_needs():
    from pipelines.kfp_api import required_kfp_version

    assert required_kfp_version(GOLDEN) == (2, 14, 0)  # dsl.Collected over a ParallelFor


def test_a_run_deadline_needs_kfp_2_17(tmp_path):
    from pipelines.kfp_api import required_kfp_version

    spec, platform = compile_with(tmp_path, "--run-timeout", "43200")
    assert platform["platforms"]["kubernetes"]["pipelineConfig"] == {"activeDeadlineSeconds": 43200}
    assert required_kfp_version(tmp_path / "p.yaml") == (2, 17, 0)


def test_the_pipeline_image_finds_the_gke_driver_libraries():
    text = (REPO / "images" / "pipeline.Dockerfile").read_text()
    m = re.search(r"^ENV LD_LIBRARY_PATH=(\S+)", text, re.M)
    assert m and "/usr/local/nvidia/lib64" in m.group(1).split(":")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step-timeout", "nope=5"], "--step-timeout takes KIND=SECONDS with KIND one of collect, fold"),
        (["--step-timeout", "train=soon"], "--step-timeout takes KIND=SECONDS"),
        (["--gpu-node-selector", "no-value"], "--gpu-node-selector takes KEY=VALUE"),
        (["--retries", "-1"], "--retries and --run-timeout must be >= 0"),
    ],
)
def test_compile_refuses_a_bad_option_in_one_line(tmp_path, args, message):
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "compile", "--output", str(tmp_path / "p.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "p.yaml").exists()
