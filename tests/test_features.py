"""The TF-IDF vectorizer: fit on train, identical after save/load, zeros for missing fields."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import FeatureConfig
from hhpulse.model.features import TextVectorizer, VectorizerError
from hhpulse.model.text import TOKENIZER_VERSION

ROWS = pd.DataFrame(
    {
        "responsibility": [
            "Разработка на Python",
            "Доставка заказов",
            "Разработка API на Python",
            "Продажи и переговоры",
        ],
        "name": ["Python-разработчик", "Курьер", None, "Менеджер"],
        "requirement": ["SQL", None, "Docker", "CRM"],
    }
)


def test_fit_transform_save_load_identical(tmp_path):
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    X = vec.transform(ROWS)
    assert X.shape == (4, vec.n_features)
    resp = X[:, : len(vec.vocabulary("responsibility"))]  # each field block is L2-normalised on its own
    assert np.allclose(np.asarray(resp.multiply(resp).sum(axis=1)).ravel(), 1.0)
    assert (
        "responsibility:разработка" in vec.feature_names()
        and "responsibility:на python" in vec.feature_names()
    )
    vec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idf.npz", "vectorizer.json"]
    X2 = TextVectorizer.load(tmp_path).transform(ROWS)
    assert (X != X2).nnz == 0


def test_missing_optional_fields_give_zeros():
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    only = vec.transform([{"responsibility": "Разработка на Python"}])
    full = vec.transform([{"responsibility": "Разработка на Python", "name": "Курьер", "requirement": "SQL"}])
    n_resp = len(vec.vocabulary("responsibility"))
    assert only[:, n_resp:].nnz == 0 and full[:, n_resp:].nnz > 0
    assert (only[:, :n_resp] != full[:, :n_resp]).nnz == 0


def test_transform_reports_known_tokens_from_its_own_tokenization():
    from hhpulse.model.text import analyze

    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    rows = [
        {"responsibility": "Разработка на Python и Rust", "name": "Курьер"},
        {"responsibility": "совсем другое"},
    ]
    plain = vec.transform(rows)
    stats: dict = {}
    assert (plain != vec.transform(rows, stats=stats)).nnz == 0  # the same matrix with or without stats
    assert set(stats) == set(vec.config.fields)
    for field in vec.config.fields:
        expected = []
        for r in rows:
            tokens = analyze(r.get(field) or "")
            expected.append((sum(t in vec.vocabulary(field) for t in tokens), len(tokens)))
        assert stats[field] == expected
    assert (
        stats["responsibility"][1] == (0, 2)
        and 0 < stats["responsibility"][0][0] < stats["responsibility"][0][1]
    )


def test_unknown_words_and_empty_text():
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    assert vec.transform([{"responsibility": "совсем другое"}]).nnz == 0


def test_matches_a_reference_tfidf():
    """Same numbers as scikit-learn's TfidfVectorizer (smooth idf, sublinear tf, l2) on our tokens."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from hhpulse.model.features import ngrams
    from hhpulse.model.text import analyze

    cfg = FeatureConfig(fields=("responsibility",), min_df=1, ngram_max=2)
    vec = TextVectorizer(cfg).fit(ROWS)
    ref = TfidfVectorizer(analyzer=lambda s: ngrams(analyze(s), 2), sublinear_tf=True)
    R = ref.fit_transform(ROWS["responsibility"])
    X = vec.transform(ROWS)
    order = [ref.vocabulary_[t.split(":", 1)[1]] for t in vec.feature_names()]
    assert np.allclose(X.toarray(), R.toarray()[:, order])


def test_min_df_and_max_features_limit_the_vocabulary():
    texts = pd.DataFrame({"responsibility": ["a b c", "a b", "a", "a d"]})
    v2 = TextVectorizer(FeatureConfig(fields=("responsibility",), min_df=2, ngram_max=1)).fit(texts)
    assert v2.vocabulary() == {"a", "b"}
    v1 = TextVectorizer(
        FeatureConfig(
            fields=("responsibility",), min_df=1, ngram_max=1, max_features=(("responsibility", 1),)
        )
    ).fit(texts)
    assert v1.vocabulary() == {"a"}  # the most frequent term wins
    assert v2.common_terms(n=1) == ["a"]


def test_list_of_mappings_equals_dataframe_and_nan_is_empty():
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    as_records = vec.transform(ROWS.to_dict("records"))
    assert (as_records != vec.transform(ROWS)).nnz == 0
    nan_name = vec.transform(
        [{"responsibility": "Доставка заказов", "name": float("nan"), "requirement": None}]
    )
    assert (nan_name != vec.transform([{"responsibility": "Доставка заказов"}])).nnz == 0
    assert "name:nan" not in vec.feature_names()


def test_markup_does_not_change_the_features():
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    a = vec.transform([{"responsibility": "Разработка на <highlighttext>Python</highlighttext>..."}])
    b = vec.transform([{"responsibility": "разработка  на python"}])
    assert (a != b).nnz == 0 and a.nnz > 0


def test_transform_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="before fit"):
        TextVectorizer().transform(ROWS)


def test_saved_files_are_json_and_plain_npz(tmp_path):
    TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS).save(tmp_path)
    meta = json.loads((tmp_path / "vectorizer.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"] == TOKENIZER_VERSION and set(meta["vocabularies"]) == set(FeatureConfig().fields)
    with np.load(tmp_path / "idf.npz", allow_pickle=False) as idf:
        assert all(idf[f].dtype == np.float64 for f in idf.files)


def _tamper(folder, fn):
    meta = json.loads((folder / "vectorizer.json").read_text(encoding="utf-8"))
    fn(meta)
    (folder / "vectorizer.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="other/9"), "unknown format"),
        (lambda m: m.update(tokenizer="razdel/0"), "refit the vectorizer"),
        (lambda m: m["vocabularies"]["name"].popitem(), "disagree in size"),
        (lambda m: m["vocabularies"].pop("requirement"), "no vocabulary or idf"),
        (
            lambda m: m["vocabularies"]["name"].update({k: 0 for k in m["vocabularies"]["name"]}),
            "does not index",
        ),
    ],
)
def test_load_rejects_inconsistent_files(tmp_path, change, message):
    TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS).save(tmp_path)
    _tamper(tmp_path, change)
    with pytest.raises(VectorizerError, match=message):
        TextVectorizer.load(tmp_path)


def test_load_refuses_pickled_idf(tmp_path):
    TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS).save(tmp_path)
    np.savez(tmp_path / "idf.npz", responsibility=np.array([{"a": 1}], dtype=object))
    with pytest.raises(VectorizerError, match="idf.npz"):
        TextVectorizer.load(tmp_path)
