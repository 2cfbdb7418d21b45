"""The XGBoost candidates' dense input and fast trees.

* Leakage is impossible by construction: a field that states the salary never reaches the
  salary task (not in its structured fields, not in its dataset rows, not in its dense input,
  whatever the instance says), and no training row's own label reaches its linear scores
  (time-ordered out of fold).
* Unseen employers are safe: every unseen (or too rare) employer gives the same input.
* The saved dense input and :class:`FastTrees` give exactly what was fitted and what XGBoost
  gives; a dense XGBoost candidate trains, saves, loads and predicts through a bundle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from hhpulse.config import CandidateConfig
from hhpulse.model.dataset import build_dataset, structured_columns
from hhpulse.model.features import DenseInput, TextVectorizer, VectorizerError
from hhpulse.model.inputs import STATES_SALARY, STRUCTURED_FIELDS, StructuredField, task_fields
from hhpulse.model.train import FastTrees, featurize, fit_on, load_candidate

SALARY = ["lt_100k", "100k_150k", "150k_200k", "ge_200k"]
DEMAND = ["high", "medium", "low"]
WORDS = ["python", "sql", "доставка", "склад", "курьер", "аналитик", "бухгалтер", "java", "отчёты", "клиенты"]


def _rows(n: int, seed: int = 0, classes=SALARY) -> tuple[pd.DataFrame, list[str]]:
    """Rows whose label shows in the text, the experience and (for the leak tests) salary_stated."""
    rng = np.random.default_rng(seed)
    y = [classes[i] for i in rng.integers(0, len(classes), n)]
    rows = []
    for i, label in enumerate(y):
        k = classes.index(label)
        words = [WORDS[(k * 2 + j) % len(WORDS)] for j in range(2)] + list(rng.choice(WORDS, 3))
        rows.append(
            {
                "responsibility": " ".join(words),
                "name": f"{WORDS[k]} специалист" if rng.random() < 0.7 else None,
                "requirement": None,
                "experience": ["noExperience", "between1And3", "between3And6", "moreThan6"][k % 4],
                "schedule": rng.choice(["fullDay", "remote", None]),
                "employment": "full",
                "area": rng.choice(["Москва", "Санкт-Петербург", "Казань"]),
                "employer": f"e{int(rng.integers(0, 40))}",
                "professional_roles": "96|10" if k % 2 else "96",
                "key_skills_count": float(rng.integers(0, 8)),
                "has_test": bool(rng.random() < 0.2),
                "response_letter_required": None,
                "salary_stated": k % 2 == 0,  # tied to the label: a leak if it ever reached salary
                "_order": i,
            }
        )
    return pd.DataFrame(rows), y


@pytest.fixture(scope="module")
def fitted():
    rows, y = _rows(400)
    vec = TextVectorizer().fit(rows)
    X = vec.transform(rows)
    dense, D, _ = DenseInput.fit("salary", SALARY, X, rows, y, vec.layout(), order=rows["_order"])
    return vec, rows, y, dense, D


# -- leakage ---------------------------------------------------------------------------------
def test_no_structured_field_that_states_the_salary_can_feed_the_salary_task():
    assert {"salary_stated"} == STATES_SALARY
    assert not {f.name for f in task_fields("salary")} & STATES_SALARY
    assert "salary_stated" in {f.name for f in task_fields("demand")}
    with pytest.raises(ValueError, match="states the salary"):
        StructuredField("salary_stated", "flag", ("salary", "demand"), "")
    assert all(f.name not in STATES_SALARY or f.tasks == ("demand",) for f in STRUCTURED_FIELDS)


def test_the_salary_input_is_the_same_whatever_the_instance_says_about_the_salary(fitted):
    vec, rows, _, dense, _ = fitted
    assert not [c for c in dense.columns if "salary" in c]
    X = vec.transform(rows)
    stated = dense.transform(X, rows.assign(salary_stated=True, salary_from=1e6, salary_to=2e6))
    hidden = dense.transform(X, rows.assign(salary_stated=False).drop(columns=["salary_stated"]))
    np.testing.assert_array_equal(stated, hidden)
    # the demand task reads it
    demand = DenseInput.fit(
        "demand", DEMAND, X, rows, [DEMAND[i % 3] for i in range(len(rows))], vec.layout()
    )[0]
    col = demand.columns.index("salary_stated")
    assert not np.array_equal(
        demand.transform(X, rows.assign(salary_stated=True))[:, col],
        demand.transform(X, rows.assign(salary_stated=False))[:, col],
    )


def test_the_salary_dataset_rows_never_carry_the_salary_stated_field():
    hist = pd.DataFrame(
        {
            "salary_from": [100_000.0, None],
            "salary_to": [None, None],
            "experience": ["between1And3", None],
            "employer_id": [None, "7"],
            "employer_name": ["ООО Ромашка", "X"],
            "area_name": ["Москва", None],
            "professional_roles": ["96", ""],
        }
    )
    assert "salary_stated" not in structured_columns(hist, "salary")
    demand = structured_columns(hist, "demand")
    assert demand["salary_stated"].tolist() == [True, False]
    assert demand["employer"].tolist() == ["ООО Ромашка", "7"]  # the id, or the name where a dump kept no id
    assert demand["professional_roles"].tolist() == ["96", None]
    # a history folded before the new fields: missing, not an error
    assert structured_columns(hist, "salary")["has_test"].isna().all()


def test_a_bundle_answers_the_same_salary_whatever_salary_stated_says(bundle):
    inst = {
        "responsibility": "Разработка на Python, SQL",
        "name": "Разработчик",
        "experience": "between3And6",
    }
    with_stated = bundle.predict_proba([{**inst, "salary_stated": True}], calibrated=False)
    without = bundle.predict_proba([{**inst, "salary_stated": False}], calibrated=False)
    np.testing.assert_array_equal(with_stated["salary"], without["salary"])


def test_no_training_row_s_own_label_reaches_its_scores():
    rows, y = _rows(240, seed=3)
    vec = TextVectorizer().fit(rows)
    X = vec.transform(rows)
    _, D, _ = DenseInput.fit("salary", SALARY, X, rows, y, vec.layout(), order=rows["_order"])
    scores = [
        i
        for i, c in enumerate(DenseInput("salary", SALARY, vec.layout(), X.shape[1]).columns)
        if c.startswith("score:")
    ]
    for i in (0, 5, 130, 239):  # the oldest block (scored by the newer ones), and newer blocks
        flipped = list(y)
        flipped[i] = next(c for c in SALARY if c != y[i])
        _, D2, _ = DenseInput.fit("salary", SALARY, X, rows, flipped, vec.layout(), order=rows["_order"])
        np.testing.assert_array_equal(D2[i, scores], D[i, scores])
        assert not np.array_equal(D2[:, scores], D[:, scores])  # the label did reach other rows


# -- unseen values ---------------------------------------------------------------------------
def test_unseen_employers_all_give_the_same_input_and_one_a_known_one_does_not(fitted):
    vec, rows, _, dense, _ = fitted
    row = rows.iloc[[0]]
    X = vec.transform(row)
    one = dense.transform(X, row.assign(employer="never-seen-1"))
    other = dense.transform(X, row.assign(employer="never-seen-2"))
    np.testing.assert_array_equal(one, other)
    assert one[0, dense.columns.index("employer:rows")] == 0
    known = dense.transform(X, row)
    assert known[0, dense.columns.index("employer:rows")] > 0
    missing = dense.transform(X, row.assign(employer=None))
    assert np.isnan(missing[0, dense.columns.index("employer:rows")])


def test_missing_fields_are_missing_and_text_alone_still_scores(fitted):
    vec, _, _, dense, _ = fitted
    rows = [{"responsibility": "python sql отчёты"}]
    D = dense.transform(vec.transform(rows), rows)
    cols = dense.columns
    assert not np.isnan(D[0, [i for i, c in enumerate(cols) if c.startswith("score:text:")]]).any()
    assert np.isnan(D[0, [i for i, c in enumerate(cols) if c.startswith("score:categories:")]]).all()
    assert np.isnan(D[0, cols.index("experience")]) and np.isnan(D[0, cols.index("name:tokens")])
    assert D[0, cols.index("responsibility:tokens")] == 3
    assert D.dtype == np.float32 and len(cols) < 40


def test_one_row_gives_exactly_its_row_of_many(fitted):
    """The predictor's one-row paths (TF-IDF in plain Python on a template matrix, the dense
    input from its tables) give the bits of the same row transformed among many, whatever
    the row holds: unseen and upper-case values, lists of roles, missing fields, a word said
    5,000 times (past the tf table), nothing at all."""
    vec, rows, _, dense, _ = fitted
    odd = [
        {"responsibility": "PYTHON  sql, sql; отчёты", "schedule": " Remote ", "employer": "never-seen"},
        {"responsibility": "склад " * 5000, "name": "курьер", "professional_roles": ["96", " 10 ", ""]},
        {"responsibility": "", "employment": "volunteer", "area": "Москва", "key_skills_count": 0},
        {"responsibility": None, "name": None, "requirement": "java java java"},
    ]
    many = [*rows.head(40).to_dict("records"), *odd]
    X = vec.transform(many)
    D = dense.transform(X, many)
    for i, row in enumerate(many):
        x = vec.transform([row])
        assert np.array_equal(x.indices, X[i].indices) and np.array_equal(x.data, X[i].data), i
        assert x.has_sorted_indices and x.shape == (1, X.shape[1]) and (x != X[i]).nnz == 0
        np.testing.assert_array_equal(dense.transform(x, [row]), D[i : i + 1])


# -- persistence and the fast trees ---------------------------------------------------------
def test_save_load_round_trip_and_refusals(fitted, tmp_path):
    vec, rows, _, dense, _ = fitted
    dense.save(tmp_path)
    back = DenseInput.load(tmp_path)
    X = vec.transform(rows)
    np.testing.assert_array_equal(back.transform(X, rows), dense.transform(X, rows))
    assert back.columns == dense.columns
    np.savez(tmp_path / "dense.npz", b=np.zeros(3, dtype=object))  # an object array: a pickle
    with pytest.raises(VectorizerError, match="dense.npz"):
        DenseInput.load(tmp_path)


def test_fast_trees_give_xgboost_s_own_answers():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    for depth, k in ((1, 2), (4, 4), (6, 3)):
        X = rng.normal(size=(1500, 12)).astype(np.float32)
        X[rng.random(X.shape) < 0.2] = np.nan
        y = rng.integers(0, k, 1500)
        booster = xgb.train(
            {"objective": "multi:softprob", "num_class": k, "max_depth": depth, "eta": 0.2, "nthread": 1},
            xgb.DMatrix(X, label=y),
            40,
        )
        fast = FastTrees(booster, 12, k)
        T = rng.normal(size=(300, 12)).astype(np.float32)
        T[rng.random(T.shape) < 0.3] = np.nan
        np.testing.assert_array_equal(fast.margin(T), booster.inplace_predict(T, predict_type="margin"))
        np.testing.assert_allclose(fast.proba(T), booster.inplace_predict(T), rtol=0, atol=2e-7)
        # one row alone (Python floats, few numpy calls) gets exactly its row of many
        many = fast.proba(T)
        for i in range(len(T)):
            np.testing.assert_array_equal(fast.proba(T[i : i + 1]), many[i : i + 1])


def test_one_row_s_tree_softmax_is_the_float32_softmax_of_many_rows():
    from hhpulse.model.train import softprob

    rng = np.random.default_rng(1)
    for k in (2, 3, 4, 9):
        # margins of every size, ties, and differences past float32's exp range
        z = (rng.normal(size=(4000, k)) * rng.choice([0.01, 1, 10, 100], size=(4000, 1))).astype(np.float32)
        z[::7, 0] = z[::7, -1]
        many = softprob(z)
        assert np.isfinite(many).all() and (many[:, 0] > 0).any() and (many == 0).any()
        np.testing.assert_array_equal(np.vstack([softprob(z[i : i + 1]) for i in range(len(z))]), many)
    assert np.isnan(softprob(np.array([[0.5, np.nan, 1.0]], dtype=np.float32))).all()


@pytest.fixture(scope="module")
def trained(demo_store):
    from hhpulse.data.history_store import load_history, rates_by_run

    ds = build_dataset(load_history(demo_store), rates_by_run(demo_store))
    vec, sets = featurize(ds)
    cfg = CandidateConfig(
        "salary-xgb", "salary", "xgboost", {"max_depth": 3, "n_estimators": 40, "learning_rate": 0.3}
    )
    return vec, sets["salary"], fit_on(sets["salary"], cfg, device="cpu")


def test_the_test_figure_s_interval_is_taken_on_the_rows_the_figure_was(trained, demo_store):
    """The model card's interval of an XGBoost winner's test figure reads the structured
    fields too: on texts alone its dense input would score another model."""
    from hhpulse.data.history_store import load_history, rates_by_run
    from hhpulse.flows.workflow import test_intervals
    from hhpulse.model.evaluate import classification_metrics

    vec, fs, cand = trained
    ds = build_dataset(load_history(demo_store), rates_by_run(demo_store))
    figure = classification_metrics(
        fs.y["test"], cand.predict_proba(fs.X["test"], fs.part_rows("test")), cand.classes
    )
    iv = test_intervals(ds, vec, {"salary": cand})["salary"]
    assert iv["rows"] == len(fs.y["test"])
    assert iv["value"] == pytest.approx(figure["roc_auc_ovo"], abs=1e-6)
    assert iv["low"] <= iv["value"] <= iv["high"]


def test_a_dense_candidate_trains_on_out_of_fold_scores_and_the_copies(trained, tmp_path):
    vec, fs, cand = trained
    assert cand.info["input"] == "dense" and cand.info["train_rows"] == 2 * fs.train_rows
    assert cand.info["features"] == len(cand.dense.columns) < 40
    cand.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "dense.json",
        "dense.npz",
        "model.json",
        "model.ubj",
    ]
    back = load_candidate(tmp_path / "m")
    for part in ("val", "test_resp"):
        X, rows = fs.X[part], fs.part_rows(part)
        np.testing.assert_array_equal(back.predict_proba(X, rows), cand.predict_proba(X, rows))
    # one row through the fast trees, many through XGBoost: the same answers
    X, rows = fs.X["test"], fs.part_rows("test")
    many = cand.predict_proba(X, rows)
    ones = np.vstack([cand.predict_proba(X[i], rows.iloc[[i]]) for i in range(min(20, X.shape[0]))])
    np.testing.assert_allclose(ones, many[: len(ones)], rtol=0, atol=2e-7)


@pytest.fixture(scope="module")
def bundle(trained, demo_store, tmp_path_factory):
    from hhpulse.config import LabelConfig
    from hhpulse.model.bundle import build_bundle, load_bundle

    vec, fs, cand = trained
    demand = fit_on(
        featurize_demand(demo_store, vec),
        CandidateConfig("demand-xgb", "demand", "xgboost", {"max_depth": 2, "n_estimators": 20}),
        device="cpu",
    )
    out = build_bundle(
        tmp_path_factory.mktemp("dense") / "bundle",
        vectorizer=vec,
        models={"salary": cand, "demand": demand},
        cohorts={"salary": cand.classes, "demand": demand.classes},
        label_config=LabelConfig().to_dict(),
        metrics={},
        card={},
    )
    return load_bundle(out)


def featurize_demand(demo_store, vec):
    from hhpulse.data.history_store import load_history, rates_by_run

    ds = build_dataset(load_history(demo_store), rates_by_run(demo_store))
    _, sets = featurize(ds)
    return sets["demand"]


def test_structured_fields_change_a_bundle_s_answer_and_bad_ones_are_refused(bundle):
    from hhpulse.model.inputs import InputError, check_instance

    base = {"responsibility": "Разработка сервисов на Python", "name": "Разработчик"}
    plain = bundle.predict_proba([base], calibrated=False)["salary"]
    senior = bundle.predict_proba([{**base, "experience": "moreThan6"}], calibrated=False)["salary"]
    junior = bundle.predict_proba([{**base, "experience": "noExperience"}], calibrated=False)["salary"]
    assert not np.array_equal(senior, junior) or not np.array_equal(senior, plain)
    inst = check_instance(
        {**base, "experience": "Более 6 лет", "professional_roles": ["96"], "has_test": True}
    )
    assert (inst.experience, inst.professional_roles, inst.has_test) == ("moreThan6", ("96",), True)
    with pytest.raises(InputError, match=r"has_test: must be true or false") as err:
        check_instance({**base, "has_test": "yes"})
    assert err.value.reason == "bad_field"
    with pytest.raises(InputError, match="key_skills_count: must be an integer >= 0"):
        check_instance({**base, "key_skills_count": -1})


def test_an_api_item_gives_its_structured_fields():
    from hhpulse.model.inputs import check_instance, to_instance

    item = {
        "id": "1",
        "name": "Аналитик",
        "snippet": {"responsibility": "Отчёты", "requirement": "SQL"},
        "experience": {"id": "between1And3", "name": "От 1 года до 3 лет"},
        "schedule": {"id": None, "name": "Удаленная работа"},
        "area": {"id": "1", "name": "Москва"},
        "employer": {"id": "42", "name": "X"},
        "professional_roles": [{"id": "10", "name": "Аналитик"}],
        "has_test": False,
        "response_letter_required": True,
        "salary": None,
    }
    inst = check_instance(item, api_items=True)
    assert inst.structured() == {
        "experience": "between1And3",
        "schedule": "remote",
        "area": "Москва",
        "employer": "42",
        "professional_roles": ("10",),
        "has_test": False,
        "response_letter_required": True,
        "salary_stated": False,
    }
    assert to_instance(item) == inst
    assert check_instance({**item, "salary": {"from": 1000, "currency": "RUR"}}, api_items=True).salary_stated


def test_features_keep_rows_and_layout_across_save_and_load(trained, tmp_path):
    from hhpulse.model.train import FeatureSet

    vec, fs, _ = trained
    fs.save(tmp_path / "fs")
    back = FeatureSet.load(tmp_path / "fs")
    assert back.layout == fs.layout == vec.layout()
    for part in ("train", "val", "test"):
        pd.testing.assert_frame_equal(back.rows[part], fs.rows[part], check_dtype=False)
    assert sp.issparse(back.X["train"])


def test_featurized_rows_carry_their_lengths_in_tokens_and_the_dense_input_reads_them(trained):
    """featurize counts each text field's tokens as it vectorizes; the dense input reads those
    counts instead of tokenizing again, and gets exactly what tokenizing gives."""
    from hhpulse.model.features import TOKENS
    from hhpulse.model.text import analyze
    from hhpulse.model.train import only_responsibility

    vec, fs, cand = trained
    for part in ("train", "val", "test"):
        rows = fs.rows[part]
        for f in vec.layout():
            assert rows[f + TOKENS].tolist() == [
                len(analyze(t)) if isinstance(t, str) else 0 for t in rows[f]
            ]
        bare = rows.drop(columns=[f + TOKENS for f in vec.layout()])
        for name in (part, f"{part}_resp"):
            if part == "train" or not fs.X[name].shape[0]:  # train: its matrix holds the copies too
                continue
            given = fs.part_rows(name)
            again = only_responsibility(bare) if name.endswith("_resp") else bare
            np.testing.assert_array_equal(
                cand.dense.transform(fs.X[name], given), cand.dense.transform(fs.X[name], again)
            )
    # a caller of the responsibility alone: the other fields' counts go with their texts
    alone = only_responsibility(fs.rows["val"])
    assert alone["name" + TOKENS].isna().all() and alone["responsibility" + TOKENS].notna().all()


def test_the_booster_takes_one_thread_per_fifty_thousand_rows_up_to_its_cores(monkeypatch):
    import os

    from hhpulse.model.train import booster_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [booster_threads(n) for n in (0, 18_000, 49_999, 50_000, 120_000, 10**7)] == [1, 1, 1, 1, 2, 4]


def test_a_bundle_reads_the_lengths_it_counted_and_answers_as_if_it_tokenized_again(bundle, trained):
    """ModelBundle.predict_proba hands the dense input the lengths its vectorizer counted; a
    row and a batch, with the lengths and without (tokenizing again), give the same input."""
    from hhpulse.model.dataset import instances
    from hhpulse.model.features import TOKENS
    from hhpulse.model.inputs import to_instance

    vec, fs, _ = trained
    rows = [to_instance(r).as_dict() for r in instances(fs.rows["val"].head(70))]
    lengths: dict[str, list[int]] = {}
    X = bundle.vectorizer.transform(rows, lengths=lengths)
    counted = [dict(r) for r in rows]
    for f, counts in lengths.items():
        for r, c in zip(counted, counts, strict=True):
            r[f + TOKENS] = c
    for task in ("salary", "demand"):
        dense = bundle.models[task].dense
        np.testing.assert_array_equal(dense.transform(X, counted), dense.transform(X, rows))
        np.testing.assert_array_equal(dense.transform(X[:1], counted[:1]), dense.transform(X[:1], rows[:1]))
    got = bundle.predict_proba(rows)
    for task in ("salary", "demand"):
        p = bundle.models[task].predict_proba(X, rows)
        np.testing.assert_allclose(got[task], bundle.calibrators[task].apply(p))


def test_one_row_of_any_values_walks_the_table_without_leaving_it(bundle):
    """The table path packs each tree's answers into an integer: the padding splits never
    answer right, so even a row of infinities stays inside the table."""
    for task in ("salary", "demand"):
        fast = bundle.models[task].fast_trees()
        for value in (np.inf, -np.inf, np.nan, 0.0):
            z = fast.margin(np.full((1, fast.n_features), value, dtype=np.float32))
            assert z.shape == (1, fast.n_classes) and np.isfinite(z).all()
