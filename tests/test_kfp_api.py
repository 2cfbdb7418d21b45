"""submit and schedule against a fake KFP API server that follows the real v2beta1 swagger."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pipelines.kfp_api import CronError, validate_cron

from conftest import REPO
from fake_kfp import FakeKfp


@pytest.fixture
def kfp(shared_specs):
    fake = FakeKfp(shared_specs / "kfp-api-v2beta1.swagger.json")
    yield fake
    fake.stop()


def cli(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("expr", ["0 0 3 * * *", "*/30 * * * * *", "0 15 10 ? * MON-FRI", "0 0 0 1 1,6 *"])
def test_valid_crons(expr):
    assert validate_cron(expr) == expr


def test_five_field_cron_is_rejected_with_the_reason():
    with pytest.raises(CronError, match="5 fields: KFP cron expressions have 6, with SECONDS first .* UTC"):
        validate_cron("0 3 * * *")
    with pytest.raises(CronError, match="outside 0-23"):
        validate_cron("0 0 25 * * *")


def test_submit_uploads_then_adds_versions_and_starts_runs(kfp):
    p = cli(
        "submit",
        "--host",
        kfp.url,
        "--param",
        "source=demo",
        "--param",
        "demo_size=50",
        env={"KFP_TOKEN": "tok"},
    )
    assert p.returncode == 0, p.stderr
    upload = [r for r in kfp.requests if r["path"].endswith("/pipelines/upload")][0]
    assert upload["query"]["name"] == "hhpulse-retrain"
    assert upload["upload"] == (REPO / "pipelines" / "hhpulse.yaml").read_bytes()
    assert upload["headers"]["Authorization"] == "Bearer tok"
    run = [r for r in kfp.requests if r["path"].endswith("/runs")][0]["json"]
    assert run["runtime_config"]["parameters"] == {"source": "demo", "demo_size": 50}
    assert run["pipeline_version_reference"]["pipeline_id"] in kfp.pipelines
    p = cli("submit", "--host", kfp.url)
    assert p.returncode == 0, p.stderr
    assert (
        len(kfp.pipelines) == 1 and len(next(iter(kfp.versions.values()))) == 2
    )  # a new version, not a new pipeline
    assert len(kfp.experiments) == 1 and len(kfp.runs) == 2


def test_schedule_is_idempotent(kfp):
    for _ in range(2):
        p = cli("schedule", "--host", kfp.url, "--cron", "0 0 3 * * *", "--namespace", "team-ml")
        assert p.returncode == 0, p.stderr
    assert len(kfp.recurring) == 1  # re-running replaced the schedule, never duplicated it
    rr = next(iter(kfp.recurring.values()))
    assert rr["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert rr["max_concurrency"] == "1" and rr["no_catchup"] is True and rr["mode"] == "ENABLE"
    assert "replaced 1 earlier schedule" in p.stdout
    assert [
        r
        for r in kfp.requests
        if r["method"] == "GET" and r["path"].endswith("/pipelines/names/hhpulse-retrain")
    ][0]["query"] == {"namespace": "team-ml"}


def test_schedule_rejects_five_fields_before_any_request(kfp):
    p = cli("schedule", "--host", kfp.url, "--cron", "0 3 * * *")
    assert p.returncode == 2 and "SECONDS first" in p.stderr
    assert kfp.requests == []


def test_unreachable_host_is_a_clear_error():
    p = cli("submit", "--host", "http://127.0.0.1:9")
    assert p.returncode == 1 and "cannot reach the KFP API" in p.stderr


def test_parameters_take_the_types_the_compiled_pipeline_declares(kfp):
    """KFP refuses a value of another type (v2_template.go); `area=113` must stay the string "113"."""
    p = cli(
        "submit",
        "--host",
        kfp.url,
        "--param",
        "area=113",
        "--param",
        "demo_size=50",
        "--param",
        "allow_mixed_data=true",
        "--param",
        "margin=0.01",
        "--param",
        'queries=["Python", "Go"]',
        "--param",
        'serving_resources={"requests": {"cpu": "1"}}',
    )
    assert p.returncode == 0, p.stderr
    params = [r for r in kfp.requests if r["path"].endswith("/runs")][0]["json"]["runtime_config"][
        "parameters"
    ]
    assert params == {
        "area": "113",
        "demo_size": 50,
        "allow_mixed_data": True,
        "margin": 0.01,
        "queries": ["Python", "Go"],
        "serving_resources": {"requests": {"cpu": "1"}},
    }


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            "demo_size=many",
            "demo_size=many: the pipeline declares it NUMBER_INTEGER, so the value must be an integer",
        ),
        ("allow_mixed_data=yes", "must be true or false"),
        ("queries=Python", "must be a JSON list"),
        ("colour=red", "the pipeline has no such parameter (it has: allow_mixed_data, area,"),
        ("area", "expected KEY=VALUE"),
    ],
)
def test_a_bad_parameter_is_refused_before_any_request(kfp, param, message):
    p = cli("schedule", "--host", kfp.url, "--param", param)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1  # one line, no traceback
    assert kfp.requests == []


def test_an_old_kfp_is_refused_with_the_version_it_needs(shared_specs):
    fake = FakeKfp(shared_specs / "kfp-api-v2beta1.swagger.json", version="2.5.0")
    try:
        p = cli("schedule", "--host", fake.url)
        assert p.returncode == 1
        assert "is 2.5.0, older than 2.14.0" in p.stderr and "dsl.Collected over a ParallelFor" in p.stderr
        assert [r["path"] for r in fake.requests] == ["/apis/v2beta1/healthz"]
    finally:
        fake.stop()
    fake = FakeKfp(shared_specs / "kfp-api-v2beta1.swagger.json", version="unknown")
    try:
        p = cli("schedule", "--host", fake.url)
        assert p.returncode == 0 and "warning: the KFP API server does not say its version" in p.stderr
    finally:
        fake.stop()


def test_multi_user_kfp_needs_the_namespace_and_a_token(shared_specs, tmp_path):
    import kubeflow_profile
    from k8s_rbac import Rbac, Subject

    rbac = Rbac(kubeflow_profile.cluster_roles() + kubeflow_profile.profile_objects("team-ml"))
    fake = FakeKfp(shared_specs / "kfp-api-v2beta1.swagger.json", multi_user=True, rbac=rbac)
    try:
        p = cli("schedule", "--host", fake.url)
        assert p.returncode == 1 and "multi-user mode: pass --namespace" in p.stderr
        p = cli("schedule", "--host", fake.url, "--namespace", "team-ml")
        assert p.returncode == 1 and "HTTP 401" in p.stderr
        token = tmp_path / "token"
        token.write_text(fake.issue_token(Subject.service_account("team-ml", "default-editor")))
        env = {"KF_PIPELINES_SA_TOKEN_PATH": str(token)}
        p = cli("schedule", "--host", fake.url, "--namespace", "team-ml", env=env)
        assert p.returncode == 0, p.stderr
        (rr,) = fake.recurring.values()
        assert rr["namespace"] == "team-ml"
        assert all(r["allowed"] for r in fake.reviews)
        p = cli("schedule", "--host", fake.url, "--namespace", "another-team", env=env)
        assert p.returncode == 1 and "PermissionDenied" in p.stderr  # default-editor of team-ml only
    finally:
        fake.stop()
