"""Explanations: they add up to the logit, follow the text, and come over KServe's v1 :explain."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from hhpulse.config import CandidateConfig, LabelConfig
from hhpulse.data.history_store import load_history, rates_by_run
from hhpulse.flows.workflow import bundle_from_results
from hhpulse.model.bundle import load_bundle
from hhpulse.model.calibration import softmax
from hhpulse.model.dataset import build_dataset
from hhpulse.model.explain import top_terms_by_cohort, top_terms_markdown
from hhpulse.model.text import token_spans, tokenize
from hhpulse.model.train import evaluate_candidate, featurize, fit_on, select_winner
from test_serving import assert_refused_then_serving, start_server, stop_server, wait_ready

# a linear salary model and an XGBoost demand model: both kinds of explanation
FAST = [
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig(
        "demand-xgb", "demand", "xgboost", {"max_depth": 3, "n_estimators": 20, "learning_rate": 0.3}
    ),
]


@pytest.fixture(scope="module")
def market(demo_store):
    return demo_store


@pytest.fixture(scope="module")
def bundle_dir(market, tmp_path_factory):
    """FAST's two models as the winners (bypassing selection, where the TF-IDF + logistic
    regression baseline can win demand), so both kinds of explanation are served."""
    out = tmp_path_factory.mktemp("b") / "bundle"
    ds = build_dataset(load_history(market), rates_by_run(market))
    vec, sets = featurize(ds)
    winners = {c.task: fit_on(sets[c.task], c, device="cpu") for c in FAST}
    results = {
        t: select_winner(
            t,
            {
                w.config.name: {
                    "kind": w.config.kind,
                    "info": w.info,
                    "metrics": evaluate_candidate(w, sets[t]),
                }
            },
        )
        for t, w in winners.items()
    }
    bundle_from_results(out, ds, vec, winners, results, label_config=LabelConfig())
    return out


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.models["salary"].config.kind == "logreg" and b.models["demand"].config.kind == "xgboost"
    return b


@pytest.fixture(scope="module")
def texts(market):
    hist = load_history(market)
    return [
        {"responsibility": r, "name": n, "requirement": q}
        for r, n, q in hist[["responsibility", "name", "requirement"]].head(30).itertuples(index=False)
        if r
    ]


def _all_terms(e):
    return e["toward"] + e["away"]


def test_explanations_add_up_to_the_logit_of_the_served_probabilities(bundle, texts):
    explained = bundle.explain(texts, top=3)
    served = bundle.predict_proba(texts)
    assert len(explained) == len(texts)
    for i, ex in enumerate(explained):
        assert ex["model_version"] == bundle.version
        for task in ("salary", "demand"):
            e = ex[task]
            assert len(e["toward"]) <= 3 and len(e["away"]) <= 3
            total = e["bias"] + sum(t["contribution"] for t in _all_terms(e)) + e["rest"]
            assert total == pytest.approx(e["logit"], abs=1e-4)
            logits = np.array([[e["logits"][c] for c in bundle.cohorts[task]]])
            assert softmax(logits)[0] == pytest.approx(served[task][i], abs=1e-4)
            assert e["cohort"] == bundle.cohorts[task][int(np.argmax(served[task][i]))]
            assert e["logit"] == pytest.approx(e["logits"][e["cohort"]])
            assert all(t["contribution"] > 0 for t in e["toward"])
            assert all(t["contribution"] < 0 for t in e["away"])
            assert [t["contribution"] for t in e["toward"]] == sorted(
                (t["contribution"] for t in e["toward"]), reverse=True
            )
    # the linear model's contributions are exact: coefficient x TF-IDF value / temperature
    e = explained[0]["salary"]
    X = bundle.vectorizer.transform([texts[0]])
    names = bundle.vectorizer.feature_names()
    k = bundle.cohorts["salary"].index(e["cohort"])
    t = e["toward"][0]
    j = names.index(f"{t['field']}:{t['token']}")
    coef = bundle.models["salary"].model["coef"][k, j]
    assert t["contribution"] == pytest.approx(
        coef * X[0, j] / bundle.calibrators["salary"].temperature, abs=1e-6
    )


def test_removing_the_top_term_removes_it_from_the_explanation(bundle, texts):
    checked = 0
    for inst in texts:
        for task in ("salary", "demand"):
            e = bundle.explain([inst])[0][task]
            top = next(
                (t for t in e["toward"] if t["field"] == "responsibility" and " " not in t["token"]), None
            )
            if top is None:
                continue
            words = [w for w in inst["responsibility"].split() if top["token"] not in tokenize(w)]
            edited = {**inst, "responsibility": " ".join(words) or "пусто"}
            assert top["token"] not in tokenize(edited["responsibility"])
            after = bundle.explain([edited])[0][task]
            gone = [
                t
                for t in _all_terms(after)
                if t["field"] == "responsibility" and top["token"] in t["token"].split()
            ]
            assert not gone, (top, gone)
            checked += 1
    assert checked >= 5


def test_terms_are_shown_as_written():
    text = "Разработка на Python и C++, поддержка 1C:Предприятие"
    spans = token_spans(text)
    assert [(tok, text[a:b]) for tok, a, b in spans][:3] == [
        ("разработка", "Разработка"),
        ("на", "на"),
        ("python", "Python"),
    ]
    assert ("c++", "C++") in [(tok, text[a:b]) for tok, a, b in spans]
    assert [tok for tok, _, _ in spans] == tokenize(text)


def test_written_form_in_an_explanation(bundle):
    # a term the demo market knows, written in capitals: the linear salary model gives every
    # term of the text a non-zero weight, so it is listed, as written, with its own token
    vocab = sorted(bundle.vectorizer.vocabulary("responsibility"), key=len, reverse=True)
    word = next(v for v in vocab if " " not in v and v.isalpha() and len(v) > 4)
    text = f"{word.upper()} каждый день"
    e = bundle.explain([{"responsibility": text}], top=50)[0]["salary"]
    shown = {t["token"]: t for t in _all_terms(e)}
    assert shown[word]["term"] == word.upper() and shown[word]["field"] == "responsibility"


def test_top_terms_per_cohort_markdown(bundle, texts):
    terms = top_terms_by_cohort(bundle, texts, "salary", n=5)
    assert set(terms) == set(bundle.cohorts["salary"])
    assert any(d["toward"] for d in terms.values())
    md = top_terms_markdown(terms, "salary")
    assert md.startswith("# Strongest terms per salary cohort")
    for cohort in bundle.cohorts["salary"]:
        assert f"## {cohort}" in md
    xgb_terms = top_terms_by_cohort(bundle, texts, "demand", n=5)
    assert set(xgb_terms) == set(bundle.cohorts["demand"])


def test_predict_explain_adds_explanations_to_the_json_lines(bundle_dir, texts, tmp_path):
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(gzip.compress("\n".join(json.dumps(t, ensure_ascii=False) for t in texts[:3]).encode()))
    out = tmp_path / "out.jsonl"
    p = subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", "predict", "--model", str(bundle_dir), "--input", str(src),
         "--output", str(out), "--explain"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    local = load_bundle(bundle_dir).explain(texts[:3])
    assert len(rows) == 3
    for row, ex in zip(rows, local, strict=True):
        assert row["explanation"]["salary"] == ex["salary"] and row["explanation"]["demand"] == ex["demand"]
        assert row["salary"]["cohort"] == ex["salary"]["cohort"]


# -- over real HTTP ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(bundle_dir):
    proc, url = start_server(bundle_dir)
    try:
        wait_ready(proc, url)
        yield url
    finally:
        stop_server(proc)


def test_v1_explain_round_trip(server, bundle, texts):
    r = requests.post(f"{server}/v1/models/hhpulse:explain", json={"instances": texts[:2]}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"explanations"} and len(body["explanations"]) == 2
    local = bundle.explain(texts[:2])
    for got, want in zip(body["explanations"], local, strict=True):
        for task in ("salary", "demand"):
            assert got[task]["cohort"] == want[task]["cohort"]
            assert got[task]["toward"] == want[task]["toward"] and got[task]["away"] == want[task]["away"]
            assert got[task]["logit"] == pytest.approx(want[task]["logit"], abs=1e-6)
    # the predictions over :predict agree with the explanations' cohorts
    pred = requests.post(f"{server}/v1/models/hhpulse:predict", json={"instances": texts[:2]}, timeout=30)
    for p, e in zip(pred.json()["predictions"], body["explanations"], strict=True):
        assert p["salary"]["cohort"] == e["salary"]["cohort"]
        assert p["salary"]["probabilities"][p["salary"]["cohort"]] == pytest.approx(
            e["salary"]["probability"], abs=1e-5
        )


BAD = [
    ("no instances key", {"inputs": []}, None, 400, "no 'instances'"),
    ("empty text", {"instances": [" "]}, None, 400, "empty"),
    ("not a string", {"instances": [{"responsibility": 5}]}, None, 400, "must be a string"),
    ("unknown field", {"instances": [{"responsibility": "a", "salary": 1}]}, None, 400, "unknown field"),
    ("too many", {"instances": ["a"] * 51}, None, 400, "over the limit of 50"),
    ("text too long", {"instances": ["a" * 301]}, None, 400, "over the limit of 300"),
    ("body too large", {"instances": ["a" * 250] * 100}, None, 413, "over the limit of 20000"),
    ("invalid json", b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (
        "no content type, not json",
        b"instances=a",
        {},
        400,
        "not valid JSON (and it came without a Content-Type)",
    ),
    ("wrong content type", b'{"instances": ["a"]}', {"Content-Type": "text/plain"}, 415, "text/plain"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_explain_input_is_a_4xx(server, case, body, headers, status, message):
    assert_refused_then_serving(f"{server}/v1/models/hhpulse:explain", body, headers, status, message)


def test_request_cli_explain_table(server):
    run = [sys.executable, "-m", "hhpulse.cli", "request", "--url", server]
    p = subprocess.run(
        [*run, "--explain", "--text", "Доставка заказов клиентам"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "salary:" in p.stdout and "demand:" in p.stdout and "(other terms)" in p.stdout
    assert "contribution" in p.stdout and "model " in p.stdout
    p = subprocess.run(
        [*run, "--explain", "--protocol", "v2", "--text", "Доставка"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "v1" in p.stderr


def test_equal_contributions_come_from_terms_that_always_occur_together(market, tmp_path):
    """The serving docs' demo text (docs/serving.md) explains with several terms at the same contribution. They are
    right: coefficient x TF-IDF value each, and those terms (the words and bigrams of one demo
    phrase) occur in exactly the same training rows, so their TF-IDF columns are identical and
    logistic regression gives them identical coefficients."""
    import scipy.sparse as sp

    from hhpulse.flows.workflow import train_on_dataset

    ds = build_dataset(load_history(market), rates_by_run(market))
    lr = [CandidateConfig(f"{t}-only-lr", t, "logreg", {"C": 1.0}) for t in ("salary", "demand")]
    b = load_bundle(
        train_on_dataset(ds, tmp_path / "b", label_config=LabelConfig(), candidates=lr).bundle_dir
    )
    if b.models["salary"].config.kind != "logreg":  # pragma: no cover - both candidates are linear
        pytest.skip("the salary winner is not linear")
    text = "Разработка backend-сервисов на Python"
    ex = b.explain([text])[0]["salary"]
    X = sp.csr_matrix(b.vectorizer.transform([{"responsibility": text}]))
    names = b.vectorizer.feature_names()
    col = {names[j]: (j, v) for j, v in zip(X.indices, X.data, strict=True)}
    ci = b.cohorts["salary"].index(ex["cohort"])
    coef = np.asarray(b.models["salary"].model["coef"])[ci] / float(b.calibrators["salary"].temperature)
    terms = ex["toward"] + ex["away"]
    for t in terms:  # exact: coefficient x TF-IDF value, on the calibrated scale
        j, v = col[f"{t['field']}:{t['token']}"]
        assert t["contribution"] == pytest.approx(coef[j] * v, abs=1e-6)
    groups: dict[float, list[str]] = {}
    for t in terms:
        groups.setdefault(t["contribution"], []).append(f"{t['field']}:{t['token']}")
    tied = max(groups.values(), key=len)
    assert len(tied) >= 2, groups  # the demo's phrases make ties
    train = ds.tasks["salary"].part("train")[["responsibility", "name", "requirement"]].to_dict("records")
    Xt = sp.csc_matrix(b.vectorizer.transform(train))
    first = Xt[:, col[tied[0]][0]].toarray().ravel()
    for name in tied[1:]:  # the same rows, the same values: nothing in the data tells them apart
        assert np.allclose(Xt[:, col[name][0]].toarray().ravel(), first)
