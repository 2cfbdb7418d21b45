"""The deploy step against a fake Kubernetes API server: create, patch, wait, time-out, rollback, canary."""

from __future__ import annotations

import json

import pytest
import yaml

from fake_k8s import FakeK8s
from hhpulse.bundle import FORMAT, write_manifest
from hhpulse.deploy import DeployError, DeployValues, deploy, render_inferenceservice, render_to_store
from hhpulse.registry import champion, publish
from hhpulse.store import LocalStore

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


def test_creates_when_absent_then_patches_when_present(store, tmp_path):
    k8s = FakeK8s(ready_after=2)
    try:
        v1 = _publish(store, tmp_path, "v1")
        r = deploy(store, VALUES, version="v1", storage_uri=v1.uri, timeout_s=5, poll_s=0.01, api=k8s.api())
        assert r.action == "created" and r.url == "http://hhpulse.ml.example.com"
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


def test_render_to_store_is_the_local_mode(store):
    key = render_to_store(store, VALUES, version="v9", storage_uri="s3://b/p/models/hhpulse/v9")
    doc = yaml.safe_load(store.get_bytes("deploy/v9/inferenceservice.yaml"))
    assert key.endswith("deploy/v9/inferenceservice.yaml") and doc["kind"] == "InferenceService"
    with pytest.raises(ValueError, match="canary_traffic_percent"):
        DeployValues(canary_traffic_percent=150)
