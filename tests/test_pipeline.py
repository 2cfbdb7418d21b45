"""The Kubeflow pipeline: compile-level structure, the golden YAML, components called directly,
and a whole local run through kfp.local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from hhpulse.registry import champion
from hhpulse.store import LocalStore

GOLDEN = REPO / "pipelines" / "hhpulse.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pipelines.compile import compile_pipeline

    out = compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    return out, docs[0], docs[1]


def test_golden_yaml_is_up_to_date(compiled):
    # The parsed documents must be equal. (KFP's leading comment lists dict defaults in protobuf-map
    # order, which varies between runs, so the comment itself is not compared.)
    out, _, _ = compiled
    fresh = list(yaml.safe_load_all(out.read_text()))
    golden = list(yaml.safe_load_all(GOLDEN.read_text()))
    assert fresh == golden, "pipelines/hhpulse.yaml is stale: run `make compile` and commit it"


def _executor_of(spec, task_name):
    for comp in spec["components"].values():
        dag = comp.get("dag", {})
        if task_name in dag.get("tasks", {}):
            return dag["tasks"][task_name]
    return spec["root"]["dag"]["tasks"].get(task_name)


def _container(spec, component_ref):
    exec_label = spec["components"][component_ref]["executorLabel"]
    return spec["deploymentSpec"]["executors"][exec_label]["container"]


def test_train_tasks_ask_for_gpu_node_pool(compiled):
    _, spec, platform = compiled
    xgb_task = _executor_of(spec, "train-candidate")
    res = _container(spec, xgb_task["componentRef"]["name"])["resources"]
    assert (
        res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        and int(res["accelerator"]["resourceCount"]) == 1
    )
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_exec = spec["components"][xgb_task["componentRef"]["name"]]["executorLabel"]
    assert k8s[gpu_exec]["nodeSelector"]["labels"] == {"hhpulse.io/pool": "gpu"}
    assert k8s[gpu_exec]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_every_step_has_cpu_and_memory_requests(compiled):
    _, spec, _ = compiled
    for name, ex in spec["deploymentSpec"]["executors"].items():
        res = ex["container"].get("resources", {})
        assert res.get("cpuRequest") and res.get("memoryRequest"), name


def test_collect_has_caching_disabled_and_image_is_pinned(compiled):
    _, spec, _ = compiled
    collect = _executor_of(spec, "collect-vacancies")
    assert collect["cachingOptions"] == {} or collect["cachingOptions"].get("enableCache") is False
    import hhpulse

    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"ghcr.io/hhpulse/hhpulse-pipeline:{hhpulse.__version__}"}


def test_secrets_come_from_a_kubernetes_secret_not_parameters(compiled):
    out, spec, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    collect_exec = spec["components"][_executor_of(spec, "collect-vacancies")["componentRef"]["name"]][
        "executorLabel"
    ]
    env = k8s[collect_exec]["secretAsEnv"][0]
    assert env["secretName"] == "hhpulse-s3"
    assert {m["envVar"] for m in env["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if any(w in p.lower() for w in ("secret", "password", "access_key"))]
    assert "AWS_SECRET_ACCESS_KEY=" not in out.read_text()


def test_deploy_sits_under_the_condition(compiled):
    _, spec, _ = compiled
    cond = [c for c in spec["components"].values() if "deploy-model" in c.get("dag", {}).get("tasks", {})]
    assert cond, "deploy-model is not inside a sub-DAG"
    parent = [
        t
        for c in spec["components"].values()
        for t in c.get("dag", {}).get("tasks", {}).values()
        if t.get("triggerPolicy", {}).get("condition")
    ]
    assert any("select-winner" in t["triggerPolicy"]["condition"] for t in parent)


def test_every_parameter_has_a_default_and_description(compiled):
    _, spec, _ = compiled
    for name, p in spec["root"]["inputDefinitions"]["parameters"].items():
        assert "defaultValue" in p, name
        assert p.get("description"), name


def test_components_called_directly(tmp_path):
    from components.build_dataset import build_dataset
    from components.collect_vacancies import collect_vacancies
    from components.validate_vacancies import validate_vacancies
    from kfp.dsl import Dataset, Markdown

    store = str(tmp_path / "store")
    raw = Dataset(name="raw", uri=str(tmp_path / "raw.jsonl.gz"), metadata={})
    raw.path = str(tmp_path / "raw.jsonl.gz")
    run_id = collect_vacancies.python_func(
        store=store,
        s3_endpoint="",
        source="demo",
        queries=[],
        area="",
        contact="t@example.com",
        demo_size=20,
        raw_run=raw,
    )
    assert Path(raw.path).stat().st_size > 0 and raw.metadata["items"] > 0
    report = Markdown(name="r", uri=str(tmp_path / "r.md"), metadata={})
    report.path = str(tmp_path / "r.md")
    validate_vacancies.python_func(
        store=store, s3_endpoint="", run_id=run_id, max_bad_fraction=0.2, report=report
    )
    assert "Data contract report" in Path(report.path).read_text()
    ds = Dataset(name="d", uri=str(tmp_path / "ds"), metadata={})
    ds.path = str(tmp_path / "ds")
    collect_vacancies.python_func(
        store=store,
        s3_endpoint="",
        source="demo",
        queries=[],
        area="",
        contact="t@example.com",
        demo_size=20,
        raw_run=raw,
    )
    build_dataset.python_func(store=store, s3_endpoint="", random_split=False, dataset=ds)
    assert (tmp_path / "ds" / "salary.parquet").exists() and ds.metadata["salary"] > 0


@pytest.mark.slow
def test_whole_pipeline_runs_locally_twice(tmp_path):
    cands = tmp_path / "c.json"
    cands.write_text(
        json.dumps(
            {
                "candidates": [
                    {
                        "name": "salary-xgb",
                        "task": "salary",
                        "kind": "xgboost",
                        "params": {"max_depth": 3, "n_estimators": 30},
                    },
                    {"name": "salary-lr", "task": "salary", "kind": "logreg", "params": {"C": 2.0}},
                    {"name": "demand-lr", "task": "demand", "kind": "logreg", "params": {"C": 1.0}},
                ]
            }
        )
    )
    store = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "hhpulse.cli",
        "run",
        "--store",
        str(store),
        "--demo-size",
        "30",
        "--candidates",
        str(cands),
        "--margin",
        "-1",
        "--ece-margin",
        "1",
    ]
    env = {**__import__("os").environ, "TMPDIR": str(tmp_path)}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "first model: no champion to compare with" in first.stdout
    st = LocalStore(store)
    v1 = champion(st).version
    assert st.exists(f"deploy/{v1}/inferenceservice.yaml")
    assert [k for k in st.list("runs/") if k.endswith("outcome.json")]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    # the second run compared against the first champion, and its verdict is in the store and the summary
    assert any(
        line.strip().startswith("gate:") and f"vs champion {v1}:" in line
        for line in second.stdout.splitlines()
    )
    verdicts = [st.get_json(k) for k in st.list("gates/")]
    assert any(v["champion_version"] == v1 for v in verdicts)
    ch = champion(st)
    assert ch.version != v1 and ch.previous == [v1]  # margin -1: the challenger always wins here
    outcome = st.get_json(sorted(k for k in st.list("runs/") if k.endswith("outcome.json"))[-1])
    assert outcome["succeeded"] is True
