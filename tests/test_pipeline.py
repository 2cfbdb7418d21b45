"""The Kubeflow pipeline: compile-level structure, the golden YAML, components called directly,
and a whole local run through kfp.local."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agreement import card_contradictions, card_facts, disagreements, report_facts, summary_facts
from conftest import REPO
from hhpulse.data.store import LocalStore
from hhpulse.model.registry import champion

GOLDEN = REPO / "pipelines" / "hhpulse.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pipelines.compile import compile_pipeline

    out = compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    return out, docs[0], docs[1]


def test_golden_yaml_is_up_to_date(compiled):
    out, _, _ = compiled
    assert out.read_bytes() == GOLDEN.read_bytes(), (
        "pipelines/hhpulse.yaml is stale: run `make compile` and commit it"
    )


def _compile_in_a_process(path, seed):
    code = "import sys; from pipelines.compile import compile_pipeline; compile_pipeline(sys.argv[1])"
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    p = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return path.read_bytes()


def test_compile_is_byte_identical_whatever_the_hash_seed(tmp_path):
    """The header comment lists dict defaults: with KFP's own order they follow the hash seed."""
    first = _compile_in_a_process(tmp_path / "a.yaml", 1)
    second = _compile_in_a_process(tmp_path / "b.yaml", 2)
    assert first == second
    assert first == GOLDEN.read_bytes()
    assert b"'params': {" in first  # the candidate defaults are in the comment, in sorted key order


def _executor_of(spec, task_name):
    for comp in spec["components"].values():
        dag = comp.get("dag", {})
        if task_name in dag.get("tasks", {}):
            return dag["tasks"][task_name]
    return spec["root"]["dag"]["tasks"].get(task_name)


def _container(spec, component_ref):
    exec_label = spec["components"][component_ref]["executorLabel"]
    return spec["deploymentSpec"]["executors"][exec_label]["container"]


def test_train_tasks_ask_for_the_gpu_and_tolerate_its_taint_without_a_node_selector(compiled):
    """A GPU node is found by its resource and taint: no hand-set label an autoscaled node lacks."""
    _, spec, platform = compiled
    xgb_task = _executor_of(spec, "train-candidate")
    res = _container(spec, xgb_task["componentRef"]["name"])["resources"]
    assert (
        res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        and int(res["accelerator"]["resourceCount"]) == 1
    )
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_exec = spec["components"][xgb_task["componentRef"]["name"]]["executorLabel"]
    assert "nodeSelector" not in k8s[gpu_exec]
    assert k8s[gpu_exec]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert not [e for e in k8s.values() if "nodeSelector" in e]


def test_a_provider_label_pins_a_kind_of_gpu(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "hhpulse.cli",
            "compile",
            "--output",
            str(tmp_path / "p.yaml"),
            "--gpu-node-selector",
            "cloud.google.com/gke-accelerator=nvidia-l4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stderr
    spec, platform = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    selected = {k for k, e in k8s.items() if "nodeSelector" in e}
    assert selected == {"exec-train-candidate", "exec-refit-winners"}  # the XGBoost steps only
    for label in selected:
        assert k8s[label]["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


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
    assert images == {f"hhpulse-pipeline:{hhpulse.__version__}"}  # as `make images` names the build


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
    # image_pull_secrets names Secrets for the predictor's image; it holds no credential
    assert params["image_pull_secrets"]["defaultValue"] == []
    assert not [
        p
        for p in params
        if any(w in p.lower() for w in ("secret", "password", "access_key")) and p != "image_pull_secrets"
    ]
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


def test_the_refit_runs_after_the_gate_on_the_training_pool_and_is_what_is_published(compiled):
    """The gate measures the held-out fit; the winners are refitted on every row only when it
    passes, on the XGBoost training node pool, and publish/deploy take the refit's bundle."""
    _, spec, platform = compiled
    cond = [c for c in spec["components"].values() if "refit-winners" in c.get("dag", {}).get("tasks", {})]
    assert cond and "publish-model" in cond[0]["dag"]["tasks"], (
        "refit-winners is not under the gate's condition"
    )
    tasks = cond[0]["dag"]["tasks"]
    refit = tasks["refit-winners"]
    # the gate's (held-out) bundle comes into the condition's sub-DAG as a channel
    assert refit["inputs"]["artifacts"]["heldout"] == {
        "componentInputArtifact": "pipelinechannel--select-winner-bundle"
    }
    for consumer in ("publish-model", "deploy-model"):
        src = tasks[consumer]["inputs"]["artifacts"]["bundle"]["taskOutputArtifact"]
        assert src == {"outputArtifactKey": "bundle", "producerTask": "refit-winners"}, consumer
    res = _container(spec, refit["componentRef"]["name"])["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    label = spec["components"][refit["componentRef"]["name"]]["executorLabel"]
    xgb_label = spec["components"][_executor_of(spec, "train-candidate")["componentRef"]["name"]][
        "executorLabel"
    ]
    for key in ("nodeSelector", "tolerations"):
        assert k8s[label].get(key) == k8s[xgb_label].get(key), key
    assert k8s[label]["secretAsEnv"][0]["secretName"] == "hhpulse-s3"


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
    assert "history: " in Path(report.path).read_text()  # the validated run was folded into history
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
    build_dataset.python_func(store=store, s3_endpoint="", random_split=False, dataset=ds, window_days=30)
    assert (tmp_path / "ds" / "salary.parquet").exists() and ds.metadata["salary"] > 0
    # the second run was not validated (so not folded by that step): the dataset step folded it
    from hhpulse.data.history_store import folded_runs

    assert len(folded_runs(LocalStore(store))) == 2
    assert ds.metadata["window_days"] == 30
    summary = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    window = summary["summary"]["history_window"]
    assert window["window_days"] == 30 and window["runs_folded"] == 2

    from components.monitor_served import monitor_served
    from kfp.dsl import HTML, Metrics

    metrics = Metrics(name="m", uri=str(tmp_path / "m.json"), metadata={})
    page = HTML(name="h", uri=str(tmp_path / "h.html"), metadata={})
    page.path = str(tmp_path / "h.html")
    drift = monitor_served.python_func(store=store, s3_endpoint="", metrics=metrics, report=page)
    assert drift is False and metrics.metadata["total.records"] == 0  # nothing served, no champion yet
    assert "Served traffic" in Path(page.path).read_text() and LocalStore(store).exists("monitor/state.json")


def _hhpulse(*args, env=None, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.mark.parametrize("source", ["bogus", "file:{tmp}/missing.jsonl"])
def test_run_checks_its_arguments_before_any_step(tmp_path, source):
    """Refused at once, with the very message `collect` gives, and no step starts."""
    source = source.format(tmp=tmp_path)
    store = tmp_path / "store"
    run = _hhpulse("run", "--store", str(store), "--source", source, timeout=120)
    collect = _hhpulse("collect", "--store", str(tmp_path / "other"), "--source", source, timeout=120)
    assert run.returncode == 2 and collect.returncode == 2
    reason = collect.stderr.strip().removeprefix("hhpulse collect: ")
    assert run.stderr.strip() == f"hhpulse run: {reason}"
    assert "running the hhpulse pipeline" not in run.stdout
    assert not (tmp_path / "kfp-local").exists() and not (store / "runs").exists()


def test_run_refuses_a_missing_candidates_file_before_any_step(tmp_path):
    p = _hhpulse("run", "--store", str(tmp_path / "store"), "--candidates", str(tmp_path / "no.yaml"))
    assert p.returncode == 2 and p.stderr.startswith("hhpulse run: cannot read ")
    assert "Traceback" not in p.stderr and not (tmp_path / "kfp-local").exists()


def test_run_refuses_to_mix_real_data_into_a_synthetic_store_before_any_step(tmp_path):
    """The store's synthetic/real guard answers before kfp.local starts, as `collect` would."""
    store = tmp_path / "store"
    demo = _hhpulse("collect", "--store", str(store), "--source", "demo", "--demo-size", "5", timeout=120)
    assert demo.returncode == 0, demo.stderr
    dump = tmp_path / "dump.jsonl"
    dump.write_text('{"id": "1", "name": "Курьер"}\n', encoding="utf-8")
    run = _hhpulse("run", "--store", str(store), "--source", f"file:{dump}", timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("hhpulse run: the store ") and "--allow-mixed-data" in run.stderr
    assert "running the hhpulse pipeline" not in run.stdout and not (store / "runs").exists()


@pytest.mark.parametrize("flag", ["--rps", "--rates", "--demo-day", "--api-url"])
def test_run_has_no_flags_its_steps_would_ignore(tmp_path, flag):
    """`collect`'s client-side flags do not reach the pipeline's steps, so `run` does not take them."""
    p = _hhpulse("run", "--store", str(tmp_path / "store"), flag, "1", timeout=120)
    assert p.returncode == 2 and "unrecognized arguments" in p.stderr
    assert p.stderr.startswith("usage: hhpulse run")


def test_every_run_gets_its_own_outcome_record(tmp_path):
    """kfp.local names every run's exit status `local-pipeline-exit-handler-1`: the run id keeps them apart."""
    from hhpulse.flows.outcome import complete_outcome, record_outcome

    store = str(tmp_path / "store")
    job = "local-pipeline-exit-handler-1"
    a = record_outcome(
        store, "", "FAILED", job, "exit-handler-1", 1, "Task exit-handler-1 failed.", run_id="11"
    )
    b = record_outcome(store, "", "SUCCEEDED", job, "exit-handler-1", None, None, run_id="22")
    c = record_outcome(
        store, "", "SUCCEEDED", job, "exit-handler-1", None, None, run_id="{{$.pipeline_job_uuid}}"
    )
    assert len({a, b, c}) == 3 and a.endswith("-0000000b/outcome.json") and "{" not in c
    # one run-id style everywhere: <UTC time>-<8 hex>, as raw runs have
    assert all(re.fullmatch(r"runs/\d{8}T\d{6}Z-[0-9a-f]{8}/outcome.json", k) for k in (a, b, c)), (a, b, c)
    st = LocalStore(store)
    assert st.get_json(b)["succeeded"] is True and st.get_json(c)["run_id"] is None
    doc = complete_outcome(st, a, failed_step="build-dataset", reason="DatasetError: too few rows")
    assert st.get_json(a) == doc and doc["failed_step"] == "build-dataset" and doc["state"] == "FAILED"


def test_step_log_parsing_and_error_of_a_failed_step(tmp_path):
    """kfp.local's lines (as 2.17 writes them) become one event per step; the log file has no colours."""
    from pipelines.local import TaskLog

    lines = [
        "08:00:00.000 - INFO - Executing task \x1b[96m'collect-vacancies'\x1b[0m",
        "    [KFP Executor 2026-12-01 08:00:00,100 INFO]: Got executor_input:",
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "        raise SourceError('boom')",
        "    hhpulse.data.sources.SourceError: file 'x' line 3: broken JSON",
        "    ",
        "08:00:01.000 - ERROR - Task \x1b[96m'collect-vacancies'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
        "2026-12-01 08:00:01,000 INFO root: Skipping task validate-vacancies: upstream task(s) ['x'] failed.",
        "08:00:02.000 - INFO - Executing task \x1b[96m'record-outcome'\x1b[0m",
        "08:00:03.000 - INFO - Task \x1b[96m'record-outcome'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    ]
    seen = []
    log = TaskLog(tmp_path / "p.log", names={"collect-vacancies": "collect vacancies"}, on_step=seen.append)
    for line in lines:
        log.write(line + "\n")
    log.close()
    assert [(s.task, s.name, s.status) for s in seen] == [
        ("collect-vacancies", "collect vacancies", "failed"),
        ("validate-vacancies", "validate-vacancies", "skipped"),
        ("record-outcome", "record-outcome", "ok"),
    ]
    assert seen[0].error == "hhpulse.data.sources.SourceError: file 'x' line 3: broken JSON"
    assert seen[0].seconds is not None and seen[2].seconds is not None
    text = (tmp_path / "p.log").read_text()
    assert "\x1b" not in text and "Task 'collect-vacancies' finished with status FAILURE" in text


def test_a_loop_iteration_names_its_task_in_the_step_list(tmp_path):
    """The iterations of a ParallelFor share one display name; the training steps print which task
    they train, and the step list shows it."""
    from pipelines.local import TaskLog

    seen = []
    log = TaskLog(
        tmp_path / "p.log", names={"train-candidate": "train XGBoost candidate"}, on_step=seen.append
    )
    for line in ("hhpulse step: train XGBoost candidate (salary)", None):
        log.write("08:00:00.000 - INFO - Executing task \x1b[96m'train-candidate'\x1b[0m\n")
        if line:
            log.write(f"    {line}\n")
        log.write("08:00:01.000 - INFO - Task 'train-candidate' finished with status SUCCESS\n")
    log.close()
    assert [s.name for s in seen] == ["train XGBoost candidate (salary)", "train XGBoost candidate"]


def test_closing_lines_name_a_command_that_exists(monkeypatch, tmp_path):
    """Without the virtualenv on the PATH, the printed command is the script's path, which exists."""
    from hhpulse.commands.run import cli_command

    monkeypatch.setenv("PATH", str(tmp_path))  # `hhpulse` is not on it
    cmd = cli_command()
    assert cmd != "hhpulse"
    exe = cmd.split(" -m ")[0]
    assert Path(exe).is_file() and os.access(exe, os.X_OK)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    if Path(sys.executable).with_name("hhpulse").is_file():
        assert cli_command() == "hhpulse"  # activated: the plain name works


_STEP_LINE = re.compile(
    r"^  (?P<name>\S.*?)\s+(?P<status>ok|failed|skipped)\s+(?P<secs>\d+\.\ds|-)(  \(.*\))?$"
)


def _step_lines(stdout):
    return [m.groupdict() for m in map(_STEP_LINE.match, stdout.splitlines()) if m]


def outcomes_now(st: LocalStore) -> list[str]:
    return sorted(k for k in st.list("runs/") if k.endswith("outcome.json"))


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
    tmp = tmp_path / "tmp"  # the runs' temp directory: kfp.local's task folders must not stay there
    tmp.mkdir()
    env = {**__import__("os").environ, "TMPDIR": str(tmp)}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert sorted(tmp.iterdir()) == []
    assert first.returncode == 0, first.stderr[-3000:]
    assert "first model: no champion to compare with" in first.stdout
    # quiet by default: one line per step (name, status, seconds), then the summary; kfp.local's
    # JSON, its task logs and its warnings are in the run's pipeline.log, without colour codes
    steps = _step_lines(first.stdout)
    assert [s["name"] for s in steps][:2] == ["collect vacancies", "validate (data contract)"]
    assert {s["status"] for s in steps} == {"ok"} and steps[-1]["name"] == "record outcome"
    assert len(first.stdout.splitlines()) < 55, first.stdout  # one line a step, then the summary
    assert "executor_input" not in first.stdout and "Executing task" not in first.stdout
    assert "DockerRunner" not in first.stderr and "Warning" not in first.stderr
    assert "\x1b" not in first.stdout + first.stderr
    st = LocalStore(store)
    v1 = champion(st).version
    assert st.exists(f"deploy/{v1}/inferenceservice.yaml")
    # the champion is the refit on every row; its figures are the held-out fit's
    published = st.get_json(f"models/hhpulse/{v1}/metrics.json")
    fits = published["fits"]["salary"]
    assert fits["published"]["rows"] == sum(p["rows"] for p in fits["measured"]["parts"].values())
    assert "refit winners on every row" in [s["name"] for s in steps]
    outcomes = [k for k in st.list("runs/") if k.endswith("outcome.json")]
    assert len(outcomes) == 1
    assert [
        k for k in st.list("runs/") if k.endswith("running.json")
    ] == []  # the run's in-flight record is gone
    (raw_run,) = {k.split("/")[1] for k in st.list("raw/")}
    assert f"raw run:      {st.uri(f'raw/{raw_run}/')}" in first.stdout
    assert f"gate:         {v1} vs champion none" in first.stdout
    log_text = st.get_bytes(outcomes[0].replace("outcome.json", "pipeline.log")).decode()
    assert "Executing task 'collect-vacancies'" in log_text and "executor_input" in log_text
    assert "DockerRunner" in log_text and "\x1b" not in log_text
    assert f"log:          {st.uri(outcomes[0].replace('outcome.json', 'pipeline.log'))}" in first.stdout
    assert "trained on:   the open vacancies plus those closed in the 180 days" in first.stdout
    assert "1 run folded;" in first.stdout and "1 runs" not in first.stdout  # grammar
    assert re.search(r"^  data:\s+SYNTHETIC", first.stdout, re.M)  # the README promised the tag
    # kfp.local's workspace of each run goes when the run ends; its log and report are in the store
    assert not [p for p in (tmp_path / "kfp-local").glob("*") if p.is_dir()], list(
        (tmp_path / "kfp-local").iterdir()
    )
    card = st.get_bytes(f"models/hhpulse/{v1}/model_card.md").decode()
    assert "- history window: the open vacancies plus those closed in the 180 days" in card
    # the report: in the run's folder and in the published bundle, named in the summary
    report = outcomes[0].replace("outcome.json", "report.html")
    assert f"report:       {st.uri(report)}" in first.stdout
    page = st.get_bytes(report).decode()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Gate</h2>" in page and "<h2>Labels</h2>" in page
    assert st.get_bytes(f"models/hhpulse/{v1}/report.html").decode() == page
    # the summary, the report and the model card agree on every figure, rule and tag they name
    facts = {"summary": summary_facts(first.stdout), "report": report_facts(page), "card": card_facts(card)}
    assert facts["summary"]["figure"] and facts["report"]["rule"] and facts["card"]["rule"], facts
    assert facts["summary"]["tag"] == facts["report"]["tag"] == facts["card"]["tag"] == "SYNTHETIC"
    assert disagreements(facts) == [] and card_contradictions(card) == []
    assert f"model version {v1}" in " ".join(re.sub(r"<[^>]+>", " ", page[: page.index("<h2")]).split())
    # the closing lines' commands work as printed: their program exists
    serve = next(line for line in first.stdout.splitlines() if line.startswith("serve it:"))
    program = re.search(r"\(or: (.+?) serve --store", serve)[1].split(" -m ")[0]
    assert program == "hhpulse" or Path(program).is_file(), serve
    # -v shows the full logs as they come; colour codes are stripped when stdout is not a terminal
    second = subprocess.run([*cmd, "-v"], capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Executing task 'collect-vacancies'" in second.stdout and "executor_input" in second.stdout
    assert "\x1b" not in second.stdout
    # the second run compared against the first champion, and its verdict is in the store and the summary
    assert any(
        line.strip().startswith("gate:") and f"vs champion {v1}:" in line
        for line in second.stdout.splitlines()
    )
    gates = {k: st.get_json(k) for k in st.list("gates/")}
    assert any(v["champion_version"] == v1 for v in gates.values())
    key, judged = next((k, v) for k, v in gates.items() if v["champion_version"] == v1)
    assert judged["rule"] == "paired bootstrap and live evidence" and judged["bootstrap"]["resamples"] == 1000
    for task, iv in judged["intervals"].items():  # each task's difference and interval, on short lines
        assert iv["low"] <= iv["delta"] <= iv["high"] and iv["rows"] > 0
        assert any(line.startswith(f"{task}: compared, ") for line in judged["lines"])
    assert all(len(line) < 200 for line in judged["lines"])
    # the live evidence: the first champion's served log is empty here, so it is not weighed
    assert judged["live"]["demand"] == {"none": "no resolved served rows of the champion"}
    assert "demand live: not weighed (no resolved served rows of the champion)" in judged["lines"]
    # on the demand age proxy the rows new since run 1 are all young, one cohort: demand cannot
    # be compared. The champion's demand figure came from the age proxy too (a young history),
    # so it protects nothing against a challenger no younger: demand is left out, salary
    # decides, and with margin -1 the challenger (a refit) replaces it
    assert judged["young"]["champion"].startswith("demand on the age proxy")
    assert judged["tasks"]["demand"]["status"] == "excluded"
    assert judged["challenger_wins"] is True and judged["lines"][0].startswith("challenger wins: ")
    assert judged["intervals"]["salary"]["left_out"] > 0  # the rows the champion was fitted on
    assert champion(st).version == key.removeprefix("gates/").removesuffix(".json") != v1
    # the champion's figures only on rows it never saw, beside the challenger's on the same rows
    iv = judged["intervals"]["salary"]
    assert "on the same test set" not in second.stdout
    assert (
        f"on the {iv['rows']} test rows champion {v1} never saw: challenger {iv['challenger']:.3f}, "
        f"champion {iv['champion']:.3f}; the {iv['left_out']} rows it was fitted on left out"
    ) in second.stdout
    page2 = st.get_bytes(outcomes_now(st)[-1].replace("outcome.json", "report.html")).decode()
    assert disagreements({"summary": summary_facts(second.stdout), "report": report_facts(page2)}) == []
    outcomes = sorted(k for k in st.list("runs/") if k.endswith("outcome.json"))
    assert len(outcomes) == 2  # one record per run, none overwritten
    assert all(st.get_json(k)["succeeded"] is True for k in outcomes)
    assert sorted(tmp.iterdir()) == []
    # the monitor step ran after the history each time, and the summary shows its line
    assert "monitor served traffic" in [s["name"] for s in steps]
    assert st.get_json("monitor/state.json")["runs"] == 2
    assert any(line.strip().startswith("served:") for line in second.stdout.splitlines())


@pytest.mark.slow
def test_a_failed_step_is_recorded_with_its_own_name_and_error(tmp_path):
    """Not `exit-handler-1` / `Task exit-handler-1 failed.`, and in a record of its own."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(5)))  # no name, no text
    store = tmp_path / "store"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = _hhpulse("run", "--store", str(store), "--source", f"file:{bad}", env={"TMPDIR": str(tmp)})
    assert p.returncode == 1, p.stdout + p.stderr
    assert sorted(tmp.iterdir()) == []  # a failed run leaves no temp folders either
    failed = [s for s in _step_lines(p.stdout) if s["status"] == "failed"]
    assert len(failed) == 1, p.stdout
    st = LocalStore(store)
    outcomes = [k for k in st.list("runs/") if k.endswith("outcome.json")]
    assert len(outcomes) == 1
    outcome = st.get_json(outcomes[0])
    assert outcome["succeeded"] is False
    assert outcome["failed_step"] not in (None, "exit-handler-1")
    assert outcome["reason"] and "exit-handler" not in outcome["reason"]
    log_text = st.get_bytes(outcomes[0].replace("outcome.json", "pipeline.log")).decode()
    assert f"Task '{outcome['failed_step']}' finished with status FAILURE" in log_text
    assert outcome["reason"].splitlines()[0] in log_text  # the step's own error, from its traceback
    assert f"step {outcome['failed_step']} failed: {outcome['reason'].splitlines()[0]}" in p.stderr
    assert "\x1b" not in p.stdout + p.stderr


def test_a_private_tmpdir_is_the_temp_directory_inside_and_is_removed_after(tmp_path, monkeypatch):
    import tempfile

    from pipelines.local import PrivateTmpdir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with PrivateTmpdir("hhpulse-run-") as inside:
        assert inside.parent == tmp_path and os.environ["TMPDIR"] == str(inside)
        assert tempfile.gettempdir() == str(inside)
        # what a kfp.local task does: mktemp -d in a child process, never removed
        made = subprocess.run(["sh", "-c", "mktemp -d"], capture_output=True, text=True, check=True)
        assert Path(made.stdout.strip()).parent == inside
    assert sorted(tmp_path.iterdir()) == []
    assert os.environ["TMPDIR"] == str(tmp_path) and tempfile.tempdir == str(tmp_path)
    kept = PrivateTmpdir("hhpulse-tests-")
    path = kept.open()
    kept.close(keep=True)
    assert path.is_dir() and os.environ["TMPDIR"] == str(tmp_path)


def test_memory_follows_the_scale_benchmark(compiled):
    """Requests and limits per kind of step come from ClusterOptions (sized by bench_scale)."""
    from pipelines.hhpulse_pipeline import ClusterOptions

    _, spec, _ = compiled
    opts = ClusterOptions()
    expected = {
        "collect-vacancies": opts.collect,
        "validate-vacancies": opts.fold,
        "build-dataset": opts.data,
        "monitor-served": opts.data,
        "featurize": opts.features,
    }
    for task, (_, mem_req, _, mem_lim) in expected.items():
        res = _container(spec, _executor_of(spec, task)["componentRef"]["name"])["resources"]
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (mem_req, mem_lim), task
    for name, ex in spec["deploymentSpec"]["executors"].items():
        res = ex["container"]["resources"]
        assert res["memoryLimit"] >= res["memoryRequest"], name


def test_the_summary_shows_the_champion_only_on_rows_it_never_saw_and_says_what_not_to_rely_on(
    tmp_path, capsys
):
    """The second demo run printed `champion ... on the same test set: 0.930` and `0.810 [blocks]`
    (rows it was fitted on included) next to a gate line on 81 unseen rows; and on the real dump
    nothing said that demand was at chance, nor that every prediction was `high`."""
    from types import SimpleNamespace

    from hhpulse.commands.run import _summary

    st = LocalStore(tmp_path)
    st.put_json("store.json", {"data": "real"})
    interval = {
        "metric": "roc_auc_ovo",
        "rows": 81,
        "left_out": 244,
        "challenger": 0.8673,
        "champion": 0.8583,
    }
    st.put_json(
        "gates/v2.json",
        {
            "version": "v2",
            "champion_version": "v1",
            "reason": "champion stays: demand cannot be compared",
            "lines": ["champion stays: demand cannot be compared"],
            "winners": {"salary": "salary-logreg", "demand": "demand-logreg"},
            "challenger_test": {"salary": 0.863, "demand": 0.506},
            "champion_test": {"salary": 0.930, "demand": 0.810},  # on every test row: in-sample
            "test_rows": {"salary": 325, "demand": 1383},
            "tasks": {
                "salary": {"status": "compared", "interval": interval},
                "demand": {
                    "status": "blocks",
                    "reason": "roc_auc_ovo is undefined: one cohort in the test rows",
                },
            },
            "caveats": {
                "salary": {"reliable": True, "caveats": []},
                "demand": {
                    "reliable": False,
                    "caveats": [
                        "demand is no better than chance: test ROC AUC (OvO) 0.506 after calibration, where 0.5 is a coin toss",
                        "'high' is the predicted demand cohort for 1383 of 1383 test rows (100.0%)",
                    ],
                },
            },
        },
    )
    one = SimpleNamespace(version="v1", uri=st.uri("models/hhpulse/v1"))
    _summary(st, one, one, own={"gate": {"version": "v2"}})  # this run gated v2
    out = capsys.readouterr().out
    assert "0.930" not in out and "0.810" not in out and "on the same test set" not in out
    assert (
        "salary  challenger v2 (salary-logreg): test ROC AUC (OvO) 0.863 after calibration on 325 test rows"
        in out
    )
    assert (
        "on the 81 test rows champion v1 never saw: challenger 0.867, champion 0.858; the 244 rows it was fitted on left out"
        in out
    )
    assert (
        "champion v1: not compared on this test set (roc_auc_ovo is undefined: one cohort in the test rows)"
        in out
    )
    assert (
        "DO NOT RELY ON DEMAND: demand is no better than chance: test ROC AUC (OvO) 0.506 after calibration"
        in out
    )
    assert (
        "                'high' is the predicted demand cohort for 1383 of 1383 test rows (100.0%)\n" in out
    )
    assert "  data:         real hh.ru data" in out
