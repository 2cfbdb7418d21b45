"""The chart's NetworkPolicies and the dev MinIO's, rendered offline and judged by who they let in.

Each policy is validated against the Kubernetes schema, then evaluated with a small model of
NetworkPolicy's ingress rules (label selectors, namespace selectors, named ports) against the
pods that would run: the sink's pods as the chart renders them, the predictor's pods with the
labels KServe 0.21 gives them (see :func:`kserve_predictor_pod`), and the pods around them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from conftest import REPO
from test_helm_chart import K8S_VERSION, VALUES_FILES, deploy_values, render, run_parameters

NS = "ml"
MONITORING = {
    "monitoring": {"podMonitor": {"enabled": True}},
    "logger": {"enabled": True},
}


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


def namespace_labels(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}  # set on every namespace since Kubernetes 1.22


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against labels (an empty selector selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": not (key in labels and labels[key] in values),
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_admits(peer: dict, policy_ns: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods are told apart by their labels here, not their addresses
    if "namespaceSelector" in peer:
        ns_ok = selects(peer["namespaceSelector"], namespace_labels(source.namespace))
    else:
        ns_ok = source.namespace == policy_ns  # no namespaceSelector: the policy's own namespace
    return ns_ok and ("podSelector" not in peer or selects(peer["podSelector"], source.labels))


def admits(policy: dict, target: Pod, source: Pod, port: int) -> bool:
    """Whether ``policy`` (which must select ``target``) lets ``source`` reach ``target:port``."""
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == target.namespace and selects(spec["podSelector"], target.labels)
    assert "Ingress" in spec["policyTypes"]
    for rule in spec.get("ingress") or []:
        peers = rule.get("from")
        assert peers, "a rule without peers admits everyone"
        ports = [target.ports.get(p["port"], p["port"]) for p in rule.get("ports") or []]
        if ports and port not in ports:
            continue
        if any(peer_admits(peer, target.namespace, source) for peer in peers):
            return True
    return False


def kserve_predictor_pod(isvc: dict) -> Pod:
    """The labels KServe 0.21 puts on a RawDeployment predictor pod of ``isvc`` (kserve/kserve,
    unchanged from release-0.20 to the 0.21 development line):

    * ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``, ``buildObjectMeta``:
      the union of the ServingRuntime's labels, the InferenceService's, the predictor's, then
      ``serving.kserve.io/inferenceservice: <name>`` and ``component: predictor`` (last: they win);
    * ``pkg/controller/v1beta1/inferenceservice/reconcilers/deployment/deployment_reconciler.go``,
      ``createRawDefaultDeployment``: ``app: isvc.<name>-predictor`` on the pod template.

    Ports: kserve-container's 8080 and the agent's 9081 (``pkg/constants``,
    ``InferenceServiceDefaultAgentPort``), which KServe injects with the logger.
    """
    name = isvc["metadata"]["name"]
    labels = {
        **(isvc["metadata"].get("labels") or {}),
        **(isvc["spec"]["predictor"].get("labels") or {}),
        "serving.kserve.io/inferenceservice": name,
        "component": "predictor",
        "app": f"isvc.{name}-predictor",
    }
    return Pod(isvc["metadata"]["namespace"], labels, {"http": 8080, "agent": 9081})


def policies(docs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "NetworkPolicy"}


def only(docs, kind, name):
    (doc,) = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def inference_service(docs) -> dict:
    """The InferenceService the pipeline's deploy step creates from the chart's run parameters."""
    from hhpulse.flows.deploy import render_inferenceservice

    return render_inferenceservice(
        deploy_values(run_parameters(docs)), version="v1", storage_uri="s3://hhpulse/prod/models/hhpulse/v1"
    )


def sink_pod(docs) -> Pod:
    template = only(docs, "Deployment", "hhpulse-logsink")["spec"]["template"]
    (c,) = template["spec"]["containers"]
    return Pod(NS, template["metadata"]["labels"], {p["name"]: p["containerPort"] for p in c["ports"]})


CASES = {p.stem: yaml.safe_load(p.read_text()) for p in VALUES_FILES} | {
    "monitoring-and-logger": MONITORING,
    "extra-peers": {
        **MONITORING,
        "networkPolicy": {
            "monitoringFrom": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}},
                    "podSelector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": ["prom"]}]
                    },
                }
            ],
            "predictor": {
                "gatewayFrom": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}}}
                ],
                "extraFrom": [
                    {"podSelector": {"matchLabels": {"app": "client"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                ],
            },
        },
    },
}


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_every_network_policy_validates_against_the_kubernetes_schema(values):
    import kubernetes_validate

    docs, _ = render(values, namespace=NS)
    found = policies(docs)
    # no predictor when the deploy step only renders its manifest (serving.enabled=false)
    expected = {"hhpulse-predictor"} if values.get("serving", {}).get("enabled", True) else set()
    logger = values.get("logger", {})
    if logger.get("enabled") and not logger.get("url"):
        expected.add("hhpulse-logsink")
    assert set(found) == expected
    for policy in found.values():
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert all(rule["from"] for rule in policy["spec"]["ingress"])  # an empty `from` admits all


def test_the_sink_takes_events_only_from_this_release_s_predictor_pods():
    docs, _ = render(MONITORING, namespace=NS)
    policy = policies(docs)["hhpulse-logsink"]
    sink = sink_pod(docs)
    isvc = inference_service(docs)
    predictor = kserve_predictor_pod(isvc)
    http, metrics = sink.ports["http"], sink.ports["metrics"]
    assert (http, metrics) == (8080, 9090)
    # the policy selects the sink's pods, and neither the predictor's nor the test pod's
    assert selects(policy["spec"]["podSelector"], sink.labels)
    assert not selects(policy["spec"]["podSelector"], predictor.labels)
    assert admits(policy, sink, predictor, http)
    assert not admits(policy, sink, predictor, metrics)
    others = {
        "another InferenceService here": kserve_predictor_pod(
            {**isvc, "metadata": {**isvc["metadata"], "name": "fraud-model"}}
        ),
        "this chart's labels, another component": Pod(
            NS, {**sink.labels, "app.kubernetes.io/component": "test"}
        ),
        "a pipeline step here": Pod(NS, {"pipelines.kubeflow.org/v2_component": "true"}),
        "the same labels in another namespace": Pod("team-b", predictor.labels),
        "Prometheus": Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    }
    for what, pod in others.items():
        assert not admits(policy, sink, pod, http), what
    # Prometheus reaches the metrics port alone, and only with the PodMonitor
    assert admits(policy, sink, others["Prometheus"], metrics)
    docs, _ = render({**MONITORING, "monitoring": {"podMonitor": {"enabled": False}}}, namespace=NS)
    assert not admits(policies(docs)["hhpulse-logsink"], sink, others["Prometheus"], metrics)


def test_the_sink_s_identity_is_what_kserve_s_agent_sends_from_the_predictor_pod():
    """KServe's agent names its InferenceService by the pod's ``serving.kserve.io/inferenceservice``
    label and its namespace by the pod's (kserve pkg/webhook/admission/pod/agent_injector.go:
    ``--inference-service``, ``--namespace``; pkg/logger/worker.go puts them in ``ce-*``)."""
    from datetime import datetime, timezone

    from hhpulse.watch.logsink import REQUEST, Forbidden, Origin, agent_headers

    docs, _ = render(MONITORING, namespace=NS)
    predictor = kserve_predictor_pod(inference_service(docs))
    (c,) = only(docs, "Deployment", "hhpulse-logsink")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    origin = Origin(env["HHPULSE_LOGSINK_INFERENCESERVICE"], env["HHPULSE_LOGSINK_NAMESPACE"])
    assert str(origin) == "ml/hhpulse"
    now = datetime.now(timezone.utc)

    def sent_by(pod: Pod) -> dict[str, str]:
        headers = agent_headers(
            "x",
            REQUEST,
            time=now,
            inference_service=pod.labels["serving.kserve.io/inferenceservice"],
            namespace=pod.namespace,
        )
        return {k.lower(): v for k, v in headers.items()}

    origin.check(sent_by(predictor))
    with pytest.raises(Forbidden):
        origin.check(sent_by(Pod("team-b", predictor.labels)))
    # the metrics port the PodMonitor scrapes is the one the sink serves alone
    assert "--metrics-port=9090" in c["args"]
    (monitor,) = [
        d for _, d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"] == "hhpulse-logsink"
    ]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("logger", [False, True], ids=["no-logger", "logger"])
def test_the_predictor_takes_traffic_from_the_gateway_the_test_pod_and_extra_peers(logger):
    values = {**MONITORING, "logger": {"enabled": logger}}
    docs, _ = render(values, namespace=NS)
    policy = policies(docs)["hhpulse-predictor"]
    predictor = kserve_predictor_pod(inference_service(docs))
    # where the predictor Service sends traffic: the agent with the logger, kserve-container without
    traffic = 9081 if logger else 8080
    gateway = Pod("istio-system", {"app": "istio-ingressgateway", "istio": "ingressgateway"})
    test_pod = Pod(NS, only(docs, "Pod", "hhpulse-test-predict")["metadata"]["labels"])
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    client = Pod(NS, {"app": "client"})
    assert admits(policy, predictor, gateway, traffic)
    assert admits(policy, predictor, test_pod, traffic)
    assert admits(policy, predictor, prometheus, 8080)  # KServe's scraping annotation: /metrics on 8080
    assert not admits(policy, predictor, prometheus, 9081)
    assert not admits(policy, predictor, client, traffic)
    assert not admits(policy, predictor, Pod("team-b", test_pod.labels), traffic)
    if logger:
        assert not admits(policy, predictor, gateway, 8080)  # no way around the agent, so around the log
        assert not selects(policy["spec"]["podSelector"], sink_pod(docs).labels)
    # values add sources (and replace the defaults)
    extra = {
        "predictor": {
            "gatewayFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}}}
            ],
            "extraFrom": [{"podSelector": {"matchLabels": {"app": "client"}}}],
        }
    }
    extra["predictor"]["metricsPorts"] = [8080, 15020]  # Istio's merged metrics
    docs, _ = render({**values, "networkPolicy": extra}, namespace=NS)
    policy = policies(docs)["hhpulse-predictor"]
    assert admits(policy, predictor, prometheus, 15020) and not admits(policy, predictor, client, 15020)
    assert admits(policy, predictor, client, traffic)
    assert admits(policy, predictor, Pod("kserve", {"app": "kserve-ingress-gateway"}), traffic)
    assert not admits(policy, predictor, gateway, traffic)


def test_empty_peer_lists_admit_nobody_and_the_policies_can_be_switched_off():
    import kubernetes_validate

    none = {"monitoringFrom": [], "predictor": {"gatewayFrom": [], "extraFrom": []}}
    docs, _ = render({**MONITORING, "networkPolicy": none}, namespace=NS)
    found = policies(docs)
    sink_rules = found["hhpulse-logsink"]["spec"]["ingress"]
    predictor_rules = found["hhpulse-predictor"]["spec"]["ingress"]
    assert len(sink_rules) == 1 and len(predictor_rules) == 1  # the predictor's pods; the test pod
    for policy in found.values():
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    docs, _ = render({**MONITORING, "networkPolicy": {"enabled": False}}, namespace=NS)
    assert policies(docs) == {}


def test_schema_refuses_bad_peers():
    import helm_python as helm

    for bad in (
        {"networkPolicy": {"enabled": "yes"}},
        {"networkPolicy": {"monitoringFrom": [{}]}},  # a peer must say who
        {"networkPolicy": {"monitoringFrom": [{"namespace": "monitoring"}]}},
        {"networkPolicy": {"predictor": {"extraFrom": [{"podSelector": {"matchLabels": {"app": 1}}}]}}},
        {"networkPolicy": {"predictor": {"gatewayFrom": {"namespaceSelector": {}}}}},
        {"networkPolicy": {"predictor": {"metricsPorts": []}}},
        {"networkPolicy": {"predictor": {"metricsPorts": ["http"]}}},
    ):
        with pytest.raises(helm.errors.HelmError):
            render(bad)


def test_dev_minio_takes_ingress_only_from_its_own_namespace():
    import kubernetes_validate

    kust = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert "minio-networkpolicy.yaml" in kust["resources"]
    ns = "hhpulse"  # kubectl -n hhpulse apply -k manifests/
    policy = yaml.safe_load((REPO / "manifests" / "minio-networkpolicy.yaml").read_text())
    policy["metadata"]["namespace"] = ns
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    deployment = yaml.safe_load((REPO / "manifests" / "minio-deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    minio = Pod(ns, template["metadata"]["labels"], ports)
    here = Pod(ns, {"serving.kserve.io/inferenceservice": "hhpulse", "component": "predictor"})
    for port in ports.values():
        assert admits(policy, minio, here, port)
        assert not admits(policy, minio, Pod("kubeflow", {"app": "ml-pipeline-ui"}), port)
        assert not admits(policy, minio, Pod("default", here.labels), port)
