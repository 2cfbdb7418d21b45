"""Training on the synthetic market, the bundle round trip, tampering, and model behaviour."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hhpulse.config import CandidateConfig
from hhpulse.data.collect import collect
from hhpulse.data.history_store import load_history, rates_by_run, rebuild_history
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore
from hhpulse.flows.workflow import train_from_history
from hhpulse.model.bundle import BundleError, load_bundle, verify_manifest
from hhpulse.model.train import cuda_available, fit_candidate, resolve_device

FAST = [
    CandidateConfig(
        "salary-xgb", "salary", "xgboost", {"max_depth": 4, "n_estimators": 60, "learning_rate": 0.3}
    ),
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig(
        "demand-xgb", "demand", "xgboost", {"max_depth": 3, "n_estimators": 40, "learning_rate": 0.3}
    ),
    CandidateConfig("demand-lr", "demand", "logreg", {"C": 1.0}),
]


@pytest.fixture(scope="module")
def market_store(tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("store"))
    for _ in range(3):
        collect(make_source("demo", demo_size=60), store, progress=False)
    rebuild_history(store)
    return store


@pytest.fixture(scope="module")
def bundle_dir(market_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    report = train_from_history(
        load_history(market_store),
        rates_by_run(market_store),
        out,
        candidates=FAST,
        device="cpu",
        synthetic=True,
    )
    assert report.results["salary"].winner in ("salary-xgb", "salary-lr", "salary-baseline")
    return out


def test_bundle_layout_and_round_trip(bundle_dir):
    names = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file())
    assert {
        "MANIFEST.json",
        "bundle.json",
        "cohorts.json",
        "metrics.json",
        "model_card.md",
        "label_config.json",
        "vectorizer/vectorizer.json",
        "vectorizer/idf.npz",
    } <= set(names)
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    b = load_bundle(bundle_dir)
    preds = b.predict(
        ["Доставка заказов клиентам", {"responsibility": "Руководство командой", "name": "Руководитель"}]
    )
    assert len(preds) == 2 and preds[0]["model_version"] == b.version
    for p in preds:
        assert set(p) == {"salary", "demand", "model_version"}
        assert abs(sum(p["salary"]["probabilities"].values()) - 1) < 1e-4
        assert p["salary"]["cohort"] in b.cohorts["salary"] and p["demand"]["cohort"] in b.cohorts["demand"]
    card = (bundle_dir / "model_card.md").read_text()
    assert "SYNTHETIC" in card and "git commit" in card and "- salary labels from the stated salary: " in card
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    assert set(metrics["salary"]["candidates"]) == {"salary-xgb", "salary-lr", "salary-baseline"}
    assert metrics["salary"]["baseline"] == "salary-baseline"
    assert {"val", "test", "test_resp"} <= set(metrics["salary"]["candidates"]["salary-xgb"]["metrics"])


@pytest.mark.parametrize("damage", ["modify", "delete", "add"])
def test_tampered_bundle_is_refused(bundle_dir, tmp_path, damage):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    target = next(copy.glob("salary/model.*"))
    if damage == "modify":
        data = bytearray(target.read_bytes())
        data[-1] ^= 1
        target.write_bytes(bytes(data))
        match = "does not match its sha256"
    elif damage == "delete":
        target.unlink()
        match = "missing file"
    else:
        (copy / "salary" / "evil.pkl").write_bytes(b"x")
        match = "unexpected file"
    with pytest.raises(BundleError, match=match):
        load_bundle(copy)
    with pytest.raises(BundleError, match="is not a model bundle"):
        verify_manifest(tmp_path)


def test_invariant_to_highlight_tags_and_whitespace(bundle_dir):
    b = load_bundle(bundle_dir)
    plain = b.predict(["Разработка backend-сервисов на Python. Проектирование REST API"])[0]
    marked = b.predict(
        [
            "  Разработка backend-сервисов на <highlighttext>Python</highlighttext>.\n Проектирование  REST API..."
        ]
    )[0]
    assert plain == marked


def test_senior_and_lead_texts_do_not_get_lower_salary_than_interns(bundle_dir):
    b = load_bundle(bundle_dir)
    order = {c: i for i, c in enumerate(b.cohorts["salary"])}
    duties = [
        "Разработка backend-сервисов на Python",
        "Ведение бухгалтерского и налогового учёта",
        "Проведение UX-исследований",
        "Администрирование Kubernetes-кластеров",
        "Поиск и привлечение новых клиентов",
    ]
    intern = [f"Стажировка под руководством наставника. {d}" for d in duties]
    lead = [f"Руководство командой. Найм и развитие сотрудников. {d}" for d in duties]

    def expected_rank(texts):
        probs = b.predict_proba(texts)["salary"]
        return float((probs @ np.arange(len(order))).mean())

    assert expected_rank(lead) > expected_rank(intern)


def test_gpu_falls_back_to_cpu(caplog):
    if cuda_available():
        pytest.skip("a GPU is present: the fallback cannot be observed")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda") == "cpu"
    assert "training on the CPU" in caplog.text
    X = __import__("scipy.sparse", fromlist=["x"]).random(40, 10, density=0.3, format="csr", random_state=0)
    y = ["a", "b"] * 20
    cand = fit_candidate(
        CandidateConfig("x", "salary", "xgboost", {"n_estimators": 5, "device": "cuda"}),
        X,
        y,
        X,
        y,
        ["a", "b", "c"],
    )
    assert cand.info["device"] == "cpu" and cand.predict_proba(X).shape == (40, 3)


def test_cli_train_predict_evaluate(market_store, tmp_path):
    cands = tmp_path / "c.yaml"
    cands.write_text(json.dumps({"candidates": [c.to_dict() for c in FAST if c.kind == "logreg"]}))
    cands = cands.rename(tmp_path / "c.json")
    run = [sys.executable, "-m", "hhpulse.cli"]
    out = tmp_path / "m"
    p = subprocess.run(
        [*run, "train", "--data", str(market_store.root), "--out", str(out), "--candidates", str(cands)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "winner salary-lr" in p.stdout and "bundle v" in p.stdout
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"id": 7, "snippet": {"responsibility": "Доставка заказов"}, "name": "Курьер"}\n\n{"responsibility": "Продажи"}\n'
    )
    p = subprocess.run(
        [*run, "predict", "--model", str(out), "--input", str(inp), "--output", str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [x.get("id") for x in lines] == ["7", None]
    assert lines[0] == {
        "id": "7",
        **load_bundle(out).predict([{"responsibility": "Доставка заказов", "name": "Курьер"}])[0],
        "fields_used": ["responsibility", "name"],
    }
    inp.write_text('{"responsibility": "ok"}\n{oops\n')
    p = subprocess.run(
        [*run, "predict", "--model", str(out), "--input", str(inp), "--output", str(tmp_path / "o2.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "1 failed (bad_json: 1)" in p.stderr
    assert json.loads((tmp_path / "o2.jsonl").read_text().splitlines()[1])["reason"] == "bad_json"
    p = subprocess.run(
        [*run, "predict", "--model", str(out), "--input", str(inp), "--output", str(tmp_path / "o3.jsonl")]
        + ["--strict"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "in.jsonl:2" in p.stderr and not (tmp_path / "o3.jsonl").exists()
    p = subprocess.run(
        [*run, "evaluate", "--model", str(out), "--data", str(market_store.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "salary" in p.stdout and "ROC AUC ovo" in p.stdout and "drift" in p.stdout


def test_gate_compares_the_mean_primary_metric_with_a_margin():
    from hhpulse.flows.workflow import compare

    champ = {"salary": {"roc_auc_ovo": 0.70}, "demand": {"roc_auc_ovo": 0.60}}
    better = {"salary": {"roc_auc_ovo": 0.74}, "demand": {"roc_auc_ovo": 0.59}}
    assert compare(better, None) == {"challenger_wins": True, "reason": "no champion yet", "deltas": {}}
    v = compare(better, champ)
    assert v["challenger_wins"] and abs(v["mean_delta"] - 0.015) < 1e-9
    assert v["reason"].startswith(
        "challenger wins: mean roc_auc_ovo change +0.0150 (demand -0.0100, salary +0.0400"
    )
    v = compare(better, champ, margin=0.02)
    assert not v["challenger_wins"] and v["reason"].startswith("champion stays")
    # a task without a defined score on either side does not count
    assert compare({"salary": {"roc_auc_ovo": 0.71}, "demand": {}}, champ)["deltas"] == {
        "salary": 0.71 - 0.70
    }
