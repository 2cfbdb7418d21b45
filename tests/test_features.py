"""The TF-IDF vectorizer and the time-ordered split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hhpulse.config import FeatureConfig, SplitConfig
from hhpulse.dataset import time_split
from hhpulse.features import TextVectorizer

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


def test_unknown_words_and_empty_text():
    vec = TextVectorizer(FeatureConfig(min_df=1)).fit(ROWS)
    assert vec.transform([{"responsibility": "совсем другое"}]).nnz == 0


def test_time_split_puts_the_newest_last():
    t = pd.date_range("2026-01-01", periods=20, freq="D", tz="UTC")
    df = pd.DataFrame({"collected_at": t[::-1], "published_at": t[::-1]})
    s = time_split(df, SplitConfig(val_fraction=0.2, test_fraction=0.2))
    assert len(s.train) == 12 and len(s.val) == 4 and len(s.test) == 4
    assert df["collected_at"].iloc[s.train].max() < df["collected_at"].iloc[s.val].min()
    assert df["collected_at"].iloc[s.val].max() < df["collected_at"].iloc[s.test].min()
    assert s.boundaries["method"] == "time" and s.boundaries["sizes"]["test"] == 4
    r = time_split(df, SplitConfig(val_fraction=0.2, test_fraction=0.2, random=True))
    assert sorted(np.concatenate([r.train, r.val, r.test]).tolist()) == list(range(20))
    with pytest.raises(ValueError, match="at least 3"):
        time_split(df.head(2), SplitConfig())
