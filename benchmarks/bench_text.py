"""Text analysis: speed of hhpulse.model.text against bare razdel, and what lemmas and char n-grams earn.

Measures, on the real dump (``vacancies_dev.api.jsonl.gz``, a time-ordered split):

* tokens per second of ``tokenize(clean(text))`` (cold, no cache: razdel plus the rejoin
  pass), of bare razdel (the baseline), of our tokens lemmatized with pymorphy3, and of a
  plain regular expression (what razdel costs);
* TF-IDF (word 1-2-grams, min_df 2, sublinear tf) + logistic regression on the salary
  cohorts (and the demand cohorts, whose labels are the age proxy on this dump), macro
  ROC AUC one-vs-one on validation and test, for: razdel tokens, our tokens, our
  tokens lemmatized, our tokens plus character 2-5-grams; with a paired bootstrap of
  the difference to our tokens on validation+test;
* TextVectorizer fit and transform throughput (documents per second).

docs/lemmatization.md records a run of this and the decisions it supports.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from benchmarks._common import RATES, real_data_or_skip

Tokenizer = Callable[[str], list[str]]


def _load():  # type: ignore[no-untyped-def]
    from hhpulse.config import LabelConfig, SplitConfig
    from hhpulse.data.history import RawRun, build_history
    from hhpulse.model.dataset import build_dataset

    path = real_data_or_skip()
    if path is None:
        return None
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh]
    doc = json.loads(RATES.read_text(encoding="utf-8"))
    rates = {c["code"]: float(c["rate"]) for c in doc["currency"]}
    run = "20260101T000000Z-00000000"
    hist = build_history([RawRun(run, {}, items)])
    return build_dataset(hist, {run: rates}, LabelConfig(), SplitConfig())


def _tokenizers() -> dict[str, Tokenizer]:
    import pymorphy3
    from razdel import tokenize as razdel_tokenize

    from hhpulse.model.text import tokenize

    word = re.compile(r"^[^\W_](?:[\w+#.\-]*[\w+#])?$")

    def razdel(text: str) -> list[str]:  # bare razdel: word tokens, no rejoin pass
        return [t for t in (tok.text.lower() for tok in razdel_tokenize(text)) if word.match(t)]

    # the regex tokenizer hhpulse used before it moved to razdel (a speed reference only)
    regex_token = re.compile(r"\d+(?:[.,/:]\d+)+|[^\W_]+(?:[.\-][^\W_]+)*(?:\+\+|#)?")

    def regex(text: str) -> list[str]:
        return regex_token.findall(text.lower().replace("ё", "е"))

    morph = pymorphy3.MorphAnalyzer()
    cyrillic = re.compile("[а-я]")
    cache: dict[str, str] = {}

    def lemma(token: str) -> str:
        out = cache.get(token)
        if out is None:
            out = cache[token] = morph.parse(token)[0].normal_form if cyrillic.search(token) else token
        return out

    def lemmas(text: str) -> list[str]:
        return [lemma(t) for t in tokenize(text)]

    lemmas.cache = cache  # type: ignore[attr-defined]
    return {"razdel": razdel, "hhpulse": tokenize, "hhpulse+lemma": lemmas, "regex": regex}


def _speed(texts: list[str], toks: dict[str, Tokenizer]) -> None:
    print(f"tokenizer speed on {len(texts):,} cleaned snippets (cold: no analyze cache, empty lemma cache)")
    base = None
    for name, fn in toks.items():
        getattr(fn, "cache", {}).clear()
        start = time.perf_counter()
        n = sum(len(fn(t)) for t in texts)
        secs = time.perf_counter() - start
        base = base or n / secs
        print(
            f"  {name:<15} {n:>9,} tokens {secs:6.2f}s {n / secs:>11,.0f} tokens/s  x{n / secs / base:.1f} vs razdel"
        )


def _auc(y: list[str], proba: np.ndarray, classes: list[str]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, proba, multi_class="ovo", average="macro", labels=classes))


def _fit_predict(frame, fields, tok: Tokenizer, char: bool):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from hhpulse.model.features import field_texts, ngrams
    from hhpulse.model.text import clean

    parts = {p: frame[frame["part"] == p] for p in ("train", "val", "test")}
    blocks: dict[str, list[sp.csr_matrix]] = {p: [] for p in parts}
    for f in fields:
        texts = {p: [clean(t) for t in field_texts(df, f)] for p, df in parts.items()}
        word = TfidfVectorizer(analyzer=lambda s: ngrams(tok(s), 2), min_df=2, sublinear_tf=True)
        vecs = [word]
        if char:
            vecs.append(
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True, lowercase=True
                )
            )
        for v in vecs:
            blocks["train"].append(v.fit_transform(texts["train"]))
            blocks["val"].append(v.transform(texts["val"]))
            blocks["test"].append(v.transform(texts["test"]))
    X = {p: sp.hstack(b).tocsr() for p, b in blocks.items()}
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=500)
    model.fit(X["train"], parts["train"]["label"])
    return {p: model.predict_proba(X[p]) for p in ("val", "test")}, list(model.classes_), X["train"].shape[1]


def _quality(ds, toks: dict[str, Tokenizer]) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    runs = [
        ("salary", ("responsibility",)),
        ("salary", ("responsibility", "name", "requirement")),
        ("demand", ("responsibility",)),
    ]
    variants = [("hhpulse", "hhpulse", False), ("razdel", "razdel", False)]
    variants += [("hhpulse+lemma", "hhpulse+lemma", False), ("hhpulse+char", "hhpulse", True)]
    print("\nTF-IDF + logistic regression, macro ROC AUC (one-vs-one); delta = paired bootstrap on val+test")
    for task, fields in runs:
        td = ds.tasks[task]
        y = {p: td.part(p)["label"].tolist() for p in ("val", "test")}
        y_both = y["val"] + y["test"]
        idx = [rng.integers(0, len(y_both), len(y_both)) for _ in range(300)]
        label = f"{task} ({'+'.join(fields)})"
        print(f"  {label}: train {len(td.part('train')):,}, val {len(y['val']):,}, test {len(y['test']):,}")
        ref = None
        for name, tok_name, char in variants:
            start = time.perf_counter()
            proba, classes, dims = _fit_predict(td.frame, fields, toks[tok_name], char)
            secs = time.perf_counter() - start
            both = np.vstack([proba["val"], proba["test"]])
            if name == "hhpulse":
                ref = both
            delta = ""
            if ref is not None and name != "hhpulse":
                yb = np.asarray(y_both)
                d = [_auc(list(yb[i]), both[i], classes) - _auc(list(yb[i]), ref[i], classes) for i in idx]
                lo, hi = np.percentile(d, [2.5, 97.5])
                delta = f"  delta {np.mean(d):+.4f} [{lo:+.4f}, {hi:+.4f}]"
            print(
                f"    {name:<14} val {_auc(y['val'], proba['val'], classes):.4f}  "
                f"test {_auc(y['test'], proba['test'], classes):.4f}  {dims:>7,} features {secs:5.1f}s{delta}",
                flush=True,
            )


def _vectorizer_speed(ds) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from hhpulse.config import FeatureConfig
    from hhpulse.model.features import TextVectorizer
    from hhpulse.model.text import _analyze_cached

    rows = pd.concat([td.frame for td in ds.tasks.values()]).drop_duplicates("id")
    _analyze_cached.cache_clear()
    start = time.perf_counter()
    vec = TextVectorizer(FeatureConfig()).fit(rows)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    X = vec.transform(rows)
    warm_s = time.perf_counter() - start
    _analyze_cached.cache_clear()
    start = time.perf_counter()
    vec.transform(rows)
    cold_s = time.perf_counter() - start
    print(f"\nTextVectorizer on {len(rows):,} rows x 3 fields: {vec.n_features:,} features, nnz {X.nnz:,}")
    print(f"  fit {fit_s:.2f}s ({len(rows) / fit_s:,.0f} rows/s, cold)")
    print(
        f"  transform {cold_s:.2f}s cold ({len(rows) / cold_s:,.0f} rows/s), {warm_s:.2f}s with the analyze cache"
    )


def main() -> None:
    ds = _load()
    if ds is None:
        return
    from hhpulse.model.features import field_texts
    from hhpulse.model.text import clean

    rows = [td.frame for td in ds.tasks.values()]
    texts = [
        clean(t) for df in rows for f in ("responsibility", "name", "requirement") for t in field_texts(df, f)
    ]
    texts = [t for t in texts if t]
    toks = _tokenizers()
    _speed(texts, toks)
    _vectorizer_speed(ds)
    _quality(ds, toks)


if __name__ == "__main__":
    main()
