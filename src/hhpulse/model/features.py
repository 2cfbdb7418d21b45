"""Text features: TF-IDF over :func:`hhpulse.model.text.analyze` tokens, one vocabulary per text field.

The vectorizer saves as JSON (vocabularies, config) plus npz (idf), never pickle, and a
loaded vectorizer transforms exactly as the fitted one did. Training and serving call
the same :meth:`TextVectorizer.transform`, which cleans and tokenizes with
:func:`hhpulse.model.text.analyze`.

A missing or empty optional field (``name``, ``requirement``) gives zeros for that
field's block, so a model trained on all fields still answers on responsibility alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hhpulse.config import FeatureConfig
from hhpulse.data.store import atomic_write_bytes
from hhpulse.model.text import TOKENIZER_VERSION, analyze

FORMAT = "hhpulse-tfidf/1"


class VectorizerError(ValueError):
    """A saved vectorizer cannot be loaded (unknown format, other tokenizer, inconsistent files)."""


def ngrams(tokens: Sequence[str], n_max: int) -> list[str]:
    """The tokens, then every 2..``n_max``-gram joined by a space."""
    out = list(tokens)
    for n in range(2, n_max + 1):
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def field_texts(records: pd.DataFrame | Iterable[Mapping[str, Any]], name: str) -> list[str]:
    """The raw text of one field for every record ("" where missing, None or NaN)."""
    if isinstance(records, pd.DataFrame):
        if name not in records:
            return [""] * len(records)
        return [_text(v) for v in records[name]]
    return [_text(r.get(name)) for r in records]


class _FieldTfidf:
    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, n_max: int, sublinear: bool) -> None:
        self.vocabulary = vocabulary
        self.idf = idf
        self.n_max = n_max
        self.sublinear = sublinear

    @classmethod
    def fit(
        cls, texts: Sequence[str], n_max: int, min_df: int, max_features: int, sublinear: bool
    ) -> _FieldTfidf:
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(ngrams(analyze(text), n_max)))
        kept = [(t, c) for t, c in df.items() if c >= min_df]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))  # deterministic: by document frequency, then term
        kept = kept[:max_features]
        terms = sorted(t for t, _ in kept)
        vocab = {t: i for i, t in enumerate(terms)}
        n = len(texts)
        idf = np.array([np.log((1 + n) / (1 + df[t])) + 1.0 for t in terms], dtype=np.float64)
        return cls(vocab, idf, n_max, sublinear)


# {field: [(known tokens, tokens) per row]}: filled by TextVectorizer.transform(stats=...)
TermStats = dict[str, list[tuple[int, int]]]


class TextVectorizer:
    """TF-IDF over :func:`hhpulse.model.text.analyze` tokens, one block per field in ``config.fields``."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._fields: dict[str, _FieldTfidf] = {}
        self._offsets: list[int] = []  # each field's first column
        self._idf = np.zeros(0)  # every field's idf, in column order

    def _prepared(self) -> TextVectorizer:
        """Lay out the fitted fields once: their column offsets and one idf for all columns."""
        self._offsets = list(np.cumsum([0] + [len(v.vocabulary) for v in self._fields.values()])[:-1])
        self._idf = np.concatenate([v.idf for v in self._fields.values()]) if self._fields else np.zeros(0)
        return self

    @property
    def fitted(self) -> bool:
        return bool(self._fields)

    def fit(self, records: pd.DataFrame | Sequence[Mapping[str, Any]]) -> TextVectorizer:
        """Fit on the training rows only."""
        c = self.config
        self._fields = {
            f: _FieldTfidf.fit(
                field_texts(records, f), c.ngram_max, c.min_df, c.max_features_for(f), c.sublinear_tf
            )
            for f in c.fields
        }
        return self._prepared()

    def transform(
        self, records: pd.DataFrame | Sequence[Mapping[str, Any]], *, stats: TermStats | None = None
    ) -> sp.csr_matrix:
        """Rows with ``responsibility`` and the optional ``name``/``requirement`` (raw text).

        ``stats``, when given, gets ``{field: [(known tokens, tokens) per row]}`` from this
        tokenization (the predictor's known-term metric; nothing is tokenized twice).

        One pass over the rows builds the matrix in CSR order (row by row, each field's block
        after the earlier ones', columns sorted), so a one-row predict pays a handful of numpy
        calls and no sort: tf (sublinear), times idf, each field's block scaled to unit L2 norm.
        """
        if not self.fitted:
            raise RuntimeError("TextVectorizer.transform before fit/load")
        n_rows, n_max = len(records), self.config.ngram_max
        blocks = [
            (field_texts(records, f), v.vocabulary, off, None if stats is None else stats.setdefault(f, []))
            for (f, v), off in zip(self._fields.items(), self._offsets, strict=True)
        ]
        cols: list[int] = []
        counts: list[int] = []
        sizes: list[int] = []  # terms in each (row, field) block, row by row
        for r in range(n_rows):
            for texts, vocab, off, known in blocks:
                tokens = analyze(texts[r])
                found = Counter(i for g in ngrams(tokens, n_max) if (i := vocab.get(g)) is not None)
                if known is not None:
                    known.append((sum(t in vocab for t in tokens), len(tokens)))
                terms = sorted(found)
                cols.extend([off + i for i in terms])
                counts.extend([found[i] for i in terms])
                sizes.append(len(terms))
        col = np.array(cols, dtype=np.int32)
        val = np.array(counts, dtype=np.float64)
        if self.config.sublinear_tf:
            val = 1.0 + np.log(val)
        val *= self._idf[col]
        size = np.array(sizes, dtype=np.int64)
        block = np.repeat(np.arange(len(size)), size)
        norms = np.sqrt(np.bincount(block, weights=val * val, minlength=len(size)))
        norms[norms == 0] = 1.0
        val /= norms[block]
        indptr = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(size.reshape(n_rows, len(blocks)).sum(axis=1), out=indptr[1:])
        x = sp.csr_matrix((val, col, indptr), shape=(n_rows, len(self._idf)))
        x.has_sorted_indices = True  # built sorted: columns ascend within each row
        return x

    def fit_transform(self, records: pd.DataFrame | Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        return self.fit(records).transform(records)

    @property
    def n_features(self) -> int:
        return sum(len(v.vocabulary) for v in self._fields.values())

    def feature_names(self) -> list[str]:
        names: list[str] = []
        for f, v in self._fields.items():
            inv = sorted(v.vocabulary, key=v.vocabulary.__getitem__)
            names.extend(f"{f}:{t}" for t in inv)
        return names

    def vocabulary(self, field: str = "responsibility") -> set[str]:
        return set(self._fields[field].vocabulary) if field in self._fields else set()

    def common_terms(self, field: str = "responsibility", n: int = 300) -> list[str]:
        """The ``n`` terms of ``field`` found in the most training documents (lowest idf)."""
        v = self._fields.get(field)
        if v is None:
            return []
        inv = {i: t for t, i in v.vocabulary.items()}
        return [inv[int(i)] for i in np.argsort(v.idf, kind="stable")[:n]]

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``vectorizer.json`` and ``idf.npz`` (no pickle)."""
        folder = Path(folder)
        meta = {
            "format": FORMAT,
            "tokenizer": TOKENIZER_VERSION,
            "config": self.config.to_dict(),
            "vocabularies": {f: v.vocabulary for f, v in self._fields.items()},
        }
        atomic_write_bytes(
            folder / "vectorizer.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
        )
        import io

        buf = io.BytesIO()
        np.savez(buf, **{f: v.idf for f, v in self._fields.items()})
        atomic_write_bytes(folder / "idf.npz", buf.getvalue())
        return [folder / "vectorizer.json", folder / "idf.npz"]

    @classmethod
    def load(cls, folder: str | Path) -> TextVectorizer:
        """Read ``vectorizer.json`` and ``idf.npz`` (``allow_pickle=False``) and check they agree."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "vectorizer.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VectorizerError(f"{folder}/vectorizer.json: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise VectorizerError(
                f"{folder}/vectorizer.json: unknown format {meta.get('format')!r}, expected {FORMAT}"
            )
        if meta.get("tokenizer") != TOKENIZER_VERSION:
            raise VectorizerError(
                f"{folder}/vectorizer.json: fitted with tokenizer {meta.get('tokenizer')!r}, this code "
                f"tokenizes as {TOKENIZER_VERSION!r}; refit the vectorizer"
            )
        config = FeatureConfig.from_dict(meta["config"])
        vec = cls(config)
        try:
            idf_file = np.load(folder / "idf.npz", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise VectorizerError(f"{folder}/idf.npz: {exc}") from exc
        with idf_file as idf:
            for f in config.fields:
                if f not in meta.get("vocabularies", {}) or f not in idf.files:
                    raise VectorizerError(f"{folder}: no vocabulary or idf for field {f!r}")
                vocab = {str(t): int(i) for t, i in meta["vocabularies"][f].items()}
                try:
                    weights = np.asarray(idf[f], dtype=np.float64)
                except (ValueError, TypeError) as exc:  # object arrays (pickles) are refused
                    raise VectorizerError(f"{folder}/idf.npz: {f}: {exc}") from exc
                if weights.ndim != 1 or len(vocab) != len(weights):
                    raise VectorizerError(f"{folder}: vocabulary and idf of {f!r} disagree in size")
                if sorted(vocab.values()) != list(range(len(vocab))):
                    raise VectorizerError(
                        f"{folder}: the vocabulary of {f!r} does not index 0..{len(vocab) - 1}"
                    )
                vec._fields[f] = _FieldTfidf(vocab, weights, config.ngram_max, config.sublinear_tf)
        return vec._prepared()
