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
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, pairwise
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
    return list(_grams(tokens, n_max))


def _grams(tokens: Sequence[str], n_max: int) -> Iterable[str]:
    """:func:`ngrams` one at a time, without building the list (the bigrams by ``pairwise``)."""
    if n_max < 2:
        return iter(tokens)
    longer = (" ".join(tokens[i : i + n]) for n in range(3, n_max + 1) for i in range(len(tokens) - n + 1))
    return chain(tokens, map(" ".join, pairwise(tokens)), longer)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
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


def _term_counts(tokens: Sequence[str], vocab: Mapping[str, int], n_max: int) -> dict[int, int]:
    """How often each vocabulary term among :func:`ngrams` (``tokens``, ``n_max``) occurs, by column."""
    found: dict[int, int] = {}
    get = vocab.get
    for gram in _grams(tokens, n_max):
        if (i := get(gram)) is not None:
            found[i] = found.get(i, 0) + 1
    return found


# sublinear tf, 1 + ln(count), of the counts a text can plausibly have: one table for the matrix
# of many rows and of one (numpy's log and Python's may differ in the last bit)
_TF_TABLE = 1.0 + np.log(np.arange(1, 4097, dtype=np.float64))
_TF_LIST = [math.nan, *_TF_TABLE.tolist()]


def _tf_value(count: int) -> float:
    return _TF_LIST[count] if count < len(_TF_LIST) else 1.0 + math.log(count)


def _tf(counts: np.ndarray) -> np.ndarray:
    """:func:`_tf_value` of each count."""
    small = counts < len(_TF_LIST)
    if small.all():
        return _TF_TABLE[counts - 1]
    return np.array([_tf_value(int(c)) for c in counts], dtype=np.float64)


# {field: [(known tokens, tokens) per row]}: filled by TextVectorizer.transform(stats=...)
TermStats = dict[str, list[tuple[int, int]]]


def read_meta(path: Path, fmt: str) -> dict[str, Any]:
    """A saved input's JSON metadata, of format ``fmt``: anything else is a VectorizerError
    naming the file."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VectorizerError(f"{path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise VectorizerError(f"{path}: unknown format {found!r}, expected {fmt}")
    return meta


class TextVectorizer:
    """TF-IDF over :func:`hhpulse.model.text.analyze` tokens, one block per field in ``config.fields``."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._fields: dict[str, _FieldTfidf] = {}
        self._offsets: list[int] = []  # each field's first column
        self._idf = np.zeros(0)  # every field's idf, in column order
        self._idf_list: list[float] = []  # the same as Python floats (one row)
        self._one_row_template: sp.csr_matrix | None = None  # see _one_row_matrix

    def _prepared(self) -> TextVectorizer:
        """Lay out the fitted fields once: their column offsets and one idf for all columns."""
        self._offsets = list(np.cumsum([0] + [len(v.vocabulary) for v in self._fields.values()])[:-1])
        self._idf = np.concatenate([v.idf for v in self._fields.values()]) if self._fields else np.zeros(0)
        self._idf_list = self._idf.tolist()
        self._one_row_template = None
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
        self,
        records: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        stats: TermStats | None = None,
        lengths: dict[str, list[int]] | None = None,
    ) -> sp.csr_matrix:
        """Rows with ``responsibility`` and the optional ``name``/``requirement`` (raw text).

        ``stats``, when given, gets ``{field: [(known tokens, tokens) per row]}`` from this
        tokenization (the predictor's known-term metric; nothing is tokenized twice);
        ``lengths`` gets ``{field: [tokens per row]}`` alone.

        One pass over the rows builds the matrix in CSR order (row by row, each field's block
        after the earlier ones', columns sorted): tf (sublinear), times idf, each field's block
        scaled to unit L2 norm. Many rows take a handful of numpy calls; one row (the
        predictor's) is computed in plain Python (:meth:`_one_row_matrix`), to the same bits.
        """
        if not self.fitted:
            raise RuntimeError("TextVectorizer.transform before fit/load")
        n_rows, n_max = len(records), self.config.ngram_max
        blocks = [
            (
                field_texts(records, f),
                v.vocabulary,
                off,
                None if stats is None else stats.setdefault(f, []),
                None if lengths is None else lengths.setdefault(f, []),
            )
            for (f, v), off in zip(self._fields.items(), self._offsets, strict=True)
        ]
        cols: list[int] = []
        counts: list[int] = []
        sizes: list[int] = []  # terms in each (row, field) block, row by row
        for r in range(n_rows):
            for texts, vocab, off, known, length in blocks:
                tokens = analyze(texts[r])
                found = _term_counts(tokens, vocab, n_max)
                if known is not None:
                    known.append((sum(t in vocab for t in tokens), len(tokens)))
                if length is not None:
                    length.append(len(tokens))
                terms = sorted(found)
                cols.extend([off + i for i in terms])
                counts.extend([found[i] for i in terms])
                sizes.append(len(terms))
        if n_rows == 1:
            return self._one_row_matrix(cols, counts, sizes)
        col = np.array(cols, dtype=np.int32)
        val = (
            _tf(np.array(counts, dtype=np.int64))
            if self.config.sublinear_tf
            else np.array(counts, np.float64)
        )
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

    def _one_row_matrix(self, cols: list[int], counts: list[int], sizes: list[int]) -> sp.csr_matrix:
        """:meth:`transform`'s matrix of one row from its terms, the same numbers in plain Python
        (each block's tf times idf, over its L2 norm, summed in the same order as numpy's
        bincount) and without scipy's constructor: its format checks cost more than the rest of
        the row (about 15 us of 25, 2-core VM). The matrix is a copy of one built by
        ``scipy.sparse.csr_matrix`` with this vectorizer's shape, its arrays replaced by the
        row's (valid by construction: columns ascending and distinct, one row)."""
        idf, sublinear = self._idf_list, self.config.sublinear_tf
        val: list[float] = []
        at = 0
        for size in sizes:
            block = [
                (_tf_value(c) if sublinear else float(c)) * idf[j]
                for j, c in zip(cols[at : at + size], counts[at : at + size], strict=True)
            ]
            total = 0.0
            for v in block:
                total += v * v
            norm = math.sqrt(total) or 1.0
            val.extend([v / norm for v in block])
            at += size
        template = self._one_row_template
        if template is None:
            template = sp.csr_matrix(
                (np.zeros(1), np.zeros(1, dtype=np.int32), np.array([0, 1], dtype=np.int32)),
                shape=(1, len(self._idf)),
            )
            template.has_sorted_indices = True
            self._one_row_template = template
        x = sp.csr_matrix.__new__(sp.csr_matrix)
        x.__dict__.update(template.__dict__)
        x.data = np.array(val, dtype=np.float64)
        x.indices = np.array(cols, dtype=template.indices.dtype)
        x.indptr = np.array([0, len(cols)], dtype=template.indptr.dtype)
        return x

    def fit_transform(self, records: pd.DataFrame | Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        return self.fit(records).transform(records)

    @property
    def n_features(self) -> int:
        return sum(len(v.vocabulary) for v in self._fields.values())

    def layout(self) -> dict[str, list[int]]:
        """Each field's columns in :meth:`transform`'s matrix: ``{field: [start, stop)}``."""
        return {
            f: [int(off), int(off) + len(v.vocabulary)]
            for (f, v), off in zip(self._fields.items(), self._offsets, strict=True)
        }

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
        meta = read_meta(folder / "vectorizer.json", FORMAT)
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


# -- the trees' dense input ----------------------------------------------------------------------
DENSE_FORMAT = "hhpulse-dense/1"
CATEGORIES = "categories"  # the linear model over the categorical structured fields' values
TEXT = "text"  # the linear model over every text field
DEFAULT_SCORES = (TEXT, CATEGORIES)
EXPERIENCE_ORDER = {"noExperience": 0.0, "between1And3": 1.0, "between3And6": 2.0, "moreThan6": 3.0}
ONE_HOT = ("schedule", "employment")  # few levels: one column per level seen in training
FREQUENCY = ("area", "employer")  # many levels: how many training rows share the value (0: unseen)
MIN_CATEGORY_ROWS = 2  # a category value enters the categorical linear model from this many rows


def _values(rows: pd.DataFrame | Sequence[Mapping[str, Any]] | None, name: str, n: int) -> list[Any]:
    """One column of ``rows`` (a frame or dicts) as Python values; None where missing."""
    if rows is None:
        return [None] * n
    if isinstance(rows, pd.DataFrame):
        if name not in rows:
            return [None] * n
        return [None if _missing(v) else v for v in rows[name].tolist()]
    return [r.get(name) for r in rows]


def _missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and math.isnan(v)


def _key(v: Any) -> str | None:
    """A category value as a key: stripped and case-folded; None when blank or missing."""
    if type(v) is str:  # most values: no missing-value checks
        return v.strip().casefold() or None
    if _missing(v):
        return None
    text = str(v).strip().casefold()
    return text or None


def _roles(v: Any) -> list[str]:
    """Professional roles: a ``|``-joined string (a dataset's rows) or a list (an instance)."""
    if _missing(v):
        return []
    items = v.split("|") if isinstance(v, str) else list(v)
    return [k for r in items if (k := _key(r))]


TOKENS = ":tokens"  # a rows column "<field>:tokens": the field's length in tokens (featurize counts them)


def _lengths(rows: pd.DataFrame | Sequence[Mapping[str, Any]] | None, field: str, n: int) -> Any:
    """Each row's ``field`` length in tokens, NaN for none: the rows' ``<field>:tokens`` column
    where they carry one (counted as they were vectorized, so nothing is tokenized again),
    else by tokenizing the text."""
    if isinstance(rows, pd.DataFrame) and field + TOKENS in rows:
        counts = pd.to_numeric(rows[field + TOKENS], errors="coerce").to_numpy(dtype=np.float64)
        return np.where(counts > 0, counts, np.nan)
    if isinstance(rows, Sequence) and rows and all(field + TOKENS in r for r in rows):
        return [float(c) if (c := r[field + TOKENS]) else np.nan for r in rows]
    return [float(len(t)) if (t := analyze(_text(v))) else np.nan for v in _values(rows, field, n)]


def with_lengths(rows: list[dict[str, Any]], lengths: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """``rows`` (dicts, changed in place) with their ``<field>:tokens`` from ``lengths``."""
    for field, counts in lengths.items():
        for row, count in zip(rows, counts, strict=True):
            row[field + TOKENS] = count
    return rows


def token_counts(lengths: Mapping[str, Sequence[int]]) -> dict[str, Sequence[int]]:
    """The ``<field>:tokens`` columns of rows from the ``lengths`` of their vectorization
    (:meth:`TextVectorizer.transform`)."""
    return {field + TOKENS: counts for field, counts in lengths.items()}


def _flag(v: Any) -> float:
    return np.nan if _missing(v) else float(bool(v))


def _count(v: Any) -> float:
    return np.nan if _missing(v) else float(v)


class DenseInput:
    """The input of a task's XGBoost candidate: a few dozen dense columns, in two groups.

    * **Linear scores**: logistic regressions (balanced class weights), each giving one
      probability per cohort: ``text``, over every text field's TF-IDF (trained on the rows
      and their responsibility-only copies, as the linear candidates are, so that it scores
      either input well), or one per text field (``scores`` names them); and ``categories``,
      over the values of the categorical structured fields (experience, schedule, employment,
      area, employer, professional roles; a value seen in fewer than
      :data:`MIN_CATEGORY_ROWS` training rows has no weight, exactly like an unseen one). For
      the training rows these are **time-ordered out-of-fold** scores (:meth:`fit`); for every
      other row, the scores of the models fitted on every training row. An input without a
      known term (or a row without any categorical value) scores NaN: missing, which the trees
      have a branch for.
    * **Structured fields** (:func:`hhpulse.model.inputs.task_fields` of the task: never one
      that states the salary for the salary task): experience as its order (no experience 0 ..
      over 6 years 3), schedule and employment one-hot over the levels seen in training,
      area and employer as how many training rows share them (0 for an unseen one: an unseen
      employer looks like a rare one, never like a known one), the number of professional
      roles, the key skills count, has test, response letter required (and, for demand only,
      salary stated), and each text field's length in tokens. Missing is NaN.

    Saved as ``dense.json`` (columns, vocabularies, levels, frequencies) and ``dense.npz``
    (coefficients), never pickle; a loaded one transforms exactly as the fitted one.
    """

    def __init__(
        self,
        task: str,
        classes: Sequence[str],
        layout: Mapping[str, Sequence[int]],
        n_features: int,
        scores: Sequence[str] = DEFAULT_SCORES,
    ) -> None:
        from hhpulse.model.inputs import task_fields

        self.task = task
        self.classes = list(classes)
        self.layout = {f: (int(a), int(b)) for f, (a, b) in layout.items()}  # TF-IDF columns per text field
        self.n_features = int(n_features)
        unknown = [s for s in scores if s not in (TEXT, CATEGORIES, *self.layout)]
        if unknown or len(set(scores)) != len(scores) or not scores:
            raise ValueError(
                f"scores must be distinct names among {[TEXT, CATEGORIES, *self.layout]}, got {list(scores)}"
            )
        self.scores = tuple(scores)
        # the text fields each text score reads ("text": all of them)
        self.groups = {s: (list(self.layout) if s == TEXT else [s]) for s in self.scores if s != CATEGORIES}
        self._spans = {s: [self.layout[f] for f in fields] for s, fields in self.groups.items()}
        self.structured = tuple(f.name for f in task_fields(task))
        self.categorical = tuple(f.name for f in task_fields(task) if f.kind in ("category", "categories"))
        k = len(self.classes)
        self.W = np.zeros((self.n_features, len(self.groups) * k))  # every text score's coefficients
        self.b = np.zeros(len(self.groups) * k)
        self.vocab: dict[str, int] = {}  # "field=value" -> row of cat_W
        self.cat_W = np.zeros((0, k))
        self.cat_b = np.zeros(k)
        self.levels: dict[str, list[str]] = {f: [] for f in ONE_HOT if f in self.structured}
        self.frequency: dict[str, dict[str, int]] = {f: {} for f in FREQUENCY if f in self.structured}
        self.columns = self._columns()
        self._row: Any = None  # what one row's transform reads (_row_tables), built at its first call

    # -- layout ----------------------------------------------------------------------------
    def _columns(self) -> list[str]:
        cols = [f"score:{s}:{c}" for s in self.scores for c in self.classes]
        for f in self.structured:
            if f in ONE_HOT:
                cols += [f"{f}={v}" for v in self.levels[f]]
            elif f in FREQUENCY:
                cols.append(f"{f}:rows")
            elif f == "professional_roles":
                cols.append("professional_roles:count")
            else:
                cols.append(f)
        return cols + [f"{f}:tokens" for f in self.layout]

    def inputs(self) -> list[str]:
        """The input each column is computed from: a score's name (``text``, a text field,
        ``categories``), a structured field, or a text field (its length)."""
        return [
            c.split(":", 2)[1] if c.startswith("score:") else c.split(":", 1)[0].split("=", 1)[0]
            for c in self.columns
        ]

    def _group_columns(self, group: str) -> np.ndarray:
        return np.concatenate([np.arange(*self.layout[f]) for f in self.groups[group]])

    # -- fitting ---------------------------------------------------------------------------
    def _tokens(self, rows: Any, n: int) -> list[list[str]]:
        """Each row's categorical values as ``field=value`` tokens."""
        out: list[list[str]] = [[] for _ in range(n)]
        for f in self.categorical:
            for i, v in enumerate(_values(rows, f, n)):
                if f == "professional_roles":
                    out[i].extend(f"{f}={r}" for r in _roles(v))
                elif (key := _key(v)) is not None:
                    out[i].append(f"{f}={key}")
        return out

    def _onehot(self, tokens: list[list[str]]) -> sp.csr_matrix:
        indptr, cols = [0], []
        for toks in tokens:
            cols.extend(sorted({j for t in toks if (j := self.vocab.get(t)) is not None}))
            indptr.append(len(cols))
        return sp.csr_matrix(
            (np.ones(len(cols)), np.array(cols, dtype=np.int32), np.array(indptr, dtype=np.int64)),
            shape=(len(tokens), len(self.vocab)),
        )

    @classmethod
    def fit(
        cls,
        task: str,
        classes: Sequence[str],
        X: sp.csr_matrix,
        rows: pd.DataFrame,
        y: Sequence[str],
        layout: Mapping[str, Sequence[int]],
        *,
        X_alone: sp.csr_matrix | None = None,
        order: Sequence[Any] | None = None,
        scores: Sequence[str] = DEFAULT_SCORES,
        folds: int = 4,
        C: float = 1.0,
        seed: int = 42,
    ) -> tuple[DenseInput, np.ndarray, np.ndarray | None]:
        """Fit on the training rows; return it, the training rows' dense input (their scores
        **time-ordered out of fold**) and, with ``X_alone`` (the same rows with the
        responsibility alone: the field-dropout copies), the copies' dense input (every
        structured field missing), else None.

        The rows are ordered by ``order`` (oldest first; None: as given) and cut into ``folds``
        consecutive blocks. Each block but the oldest is scored by the linear models fitted
        on every older block, as the final models will score rows newer than their training
        rows; the oldest block, which has no older rows, by the models fitted on the blocks
        after it. A row's own label never reaches its scores (nor its copy's). The text scores
        train on the rows and their copies, when given.
        """
        n = X.shape[0]
        if len(rows) != n or len(y) != n or (X_alone is not None and X_alone.shape != X.shape):
            raise ValueError(f"DenseInput.fit: {n} matrix rows, {len(rows)} rows, {len(y)} labels")
        dense = cls(task, classes, layout, X.shape[1], scores)
        idx = {c: i for i, c in enumerate(dense.classes)}
        yi = np.array([idx[str(v)] for v in y])
        # the structured part needs no labels: frequencies and levels from every training row
        for f in dense.frequency:
            counts = Counter(k for v in _values(rows, f, n) if (k := _key(v)) is not None)
            dense.frequency[f] = dict(sorted(counts.items()))
        for f in dense.levels:
            dense.levels[f] = sorted({k for v in _values(rows, f, n) if (k := _key(v)) is not None})
        tokens = dense._tokens(rows, n)
        seen = Counter(t for toks in tokens for t in set(toks))
        dense.vocab = {
            t: i for i, t in enumerate(sorted(t for t, c in seen.items() if c >= MIN_CATEGORY_ROWS))
        }
        dense.columns = dense._columns()
        X = sp.csr_matrix(X)
        alone = None if X_alone is None else sp.csr_matrix(X_alone)
        # (matrix of the rows, matrix of their copies or None) per score, in column order
        inputs = [
            (X[:, dense._group_columns(s)], None if alone is None else alone[:, dense._group_columns(s)])
            if s != CATEGORIES
            else (dense._onehot(tokens), None)
            for s in dense.scores
        ]
        ordered = np.arange(n) if order is None else np.lexsort((np.arange(n), np.asarray(order)))
        cuts = np.array_split(ordered, max(2, min(folds, n // 2)))  # at least two blocks
        k = len(dense.classes)
        oof = np.full((n, len(inputs) * k), np.nan)
        oof_alone = np.full((n, len(inputs) * k), np.nan)
        for j, cut in enumerate(cuts):
            before = np.concatenate(cuts[:j]) if j else np.concatenate(cuts[1:])
            for s, (M, A) in enumerate(inputs):
                model = _fit_linear(*_stacked(M, A, yi, before), k, C, seed)
                oof[cut, s * k : (s + 1) * k] = _scores(model, M[cut])
                if A is not None:
                    oof_alone[cut, s * k : (s + 1) * k] = _scores(model, A[cut])
        # the final linear models, on every training row
        text_index = 0
        for s, (M, A) in enumerate(inputs):
            coef, intercept = _fit_linear(*_stacked(M, A, yi, np.arange(n)), k, C, seed)
            if dense.scores[s] == CATEGORIES:
                dense.cat_W, dense.cat_b = coef.T.copy(), intercept
                continue
            block = slice(text_index * k, (text_index + 1) * k)
            dense.W[dense._group_columns(dense.scores[s]), block] = coef.T
            dense.b[block] = intercept
            text_index += 1
        n_scores = len(inputs) * k
        D = dense.transform(X, rows)
        D[:, :n_scores] = np.where(np.isnan(D[:, :n_scores]), np.nan, oof)
        if alone is None:
            return dense, D, None
        from hhpulse.model.inputs import INPUT_FIELDS

        only = pd.DataFrame(
            {f: _values(rows, f, n) if f == "responsibility" else [None] * n for f in INPUT_FIELDS}
        )
        if isinstance(rows, pd.DataFrame) and "responsibility" + TOKENS in rows:
            only["responsibility" + TOKENS] = rows["responsibility" + TOKENS].to_numpy()
        D_alone = dense.transform(alone, only)
        D_alone[:, :n_scores] = np.where(np.isnan(D_alone[:, :n_scores]), np.nan, oof_alone)
        return dense, D, D_alone

    # -- transforming -----------------------------------------------------------------------
    def transform(
        self, X: sp.csr_matrix, rows: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None
    ) -> np.ndarray:
        """The dense input (float32, rows x :attr:`columns`) of ``X`` (the vectorizer's matrix of
        the same rows) and ``rows`` (their structured fields and texts; None: all missing)."""
        n, k = X.shape[0], len(self.classes)
        if X.shape[1] != self.n_features:
            raise ValueError(f"DenseInput: {X.shape[1]} TF-IDF columns, fitted on {self.n_features}")
        X = X if sp.isspmatrix_csr(X) else sp.csr_matrix(X)
        if n == 1:
            row = rows.iloc[0].to_dict() if isinstance(rows, pd.DataFrame) else (rows[0] if rows else {})
            return self._one(X, row)
        out = np.full((n, len(self.columns)), np.nan, dtype=np.float64)
        z = np.asarray(X @ self.W) + self.b
        text_index = 0
        for s, name in enumerate(self.scores):
            cols = slice(s * k, (s + 1) * k)
            if name == CATEGORIES:
                tokens = self._tokens(rows, n)
                has = np.array([bool(toks) for toks in tokens], dtype=bool)
                if has.any():
                    hits = [[j for t in toks if (j := self.vocab.get(t)) is not None] for toks in tokens]
                    zc = (
                        np.array([self.cat_W[h].sum(axis=0) if h else np.zeros(k) for h in hits]) + self.cat_b
                    )
                    out[has, cols] = _softmax(zc[has])
                continue
            known = np.zeros(n, dtype=bool)
            for f in self.groups[name]:
                known |= _row_has(X, *self.layout[f])
            out[known, cols] = _softmax(z[known, text_index * k : (text_index + 1) * k])
            text_index += 1
        col = len(self.scores) * k
        for f in self.structured:
            vals = _values(rows, f, n)
            if f in ONE_HOT:
                levels = self.levels[f]
                for i, v in enumerate(vals):
                    key = _key(v)
                    if key is not None:
                        out[i, col : col + len(levels)] = [float(key == lv) for lv in levels]
                col += len(levels)
                continue
            if f in FREQUENCY:
                freq = self.frequency[f]
                out[:, col] = [np.nan if (key := _key(v)) is None else freq.get(key, 0) for v in vals]
            elif f == "experience":
                out[:, col] = [np.nan if _missing(v) else EXPERIENCE_ORDER.get(str(v), np.nan) for v in vals]
            elif f == "professional_roles":
                out[:, col] = [float(len(r)) if (r := _roles(v)) else np.nan for v in vals]
            elif f == "key_skills_count":
                out[:, col] = [_count(v) for v in vals]
            else:
                out[:, col] = [_flag(v) for v in vals]
            col += 1
        for f in self.layout:  # in tokens: the same whatever the markup, spacing and punctuation
            out[:, col] = _lengths(rows, f, n)
            col += 1
        return out.astype(np.float32)

    def _one(self, X: sp.csr_matrix, row: Mapping[str, Any]) -> np.ndarray:
        """:meth:`transform` of one row (the predictor's call), the same values in plain Python
        and a few numpy calls, from tables built once (:meth:`_row_tables`): a row's few terms
        and fields make numpy's per-call cost the most of the work (0.75 ms against ~0.05 ms,
        profiled)."""
        if self._row is None:
            self._row = self._row_tables()
        b, cat_b, cat_rows, onehot = self._row
        k, nan = len(self.classes), math.nan
        out: list[float] = []
        indices = X.indices.tolist()
        z = (X.data @ self.W[X.indices] + self.b).tolist() if indices else b
        text_index = 0
        for name in self.scores:
            if name == CATEGORIES:
                zc, any_value = cat_b, False
                for f in self.categorical:
                    v, rows_w = row.get(f), cat_rows[f]
                    for value in _roles(v) if f == "professional_roles" else (_key(v),):
                        if value is None:
                            continue
                        any_value = True
                        if (w := rows_w.get(value)) is not None:
                            zc = [a + b for a, b in zip(zc, w, strict=True)]
                out += _softmax_list(zc) if any_value else [nan] * k
                continue
            # any term in the score's fields' columns (the indices ascend)
            known = any(bisect_left(indices, a) < bisect_left(indices, e) for a, e in self._spans[name])
            out += _softmax_list(z[text_index * k : (text_index + 1) * k]) if known else [nan] * k
            text_index += 1
        for f in self.structured:
            v = row.get(f)
            if f in onehot:
                values, unseen, missing = onehot[f]
                key = _key(v)
                out += missing if key is None else values.get(key, unseen)
            elif f in self.frequency:
                key = _key(v)
                out.append(nan if key is None else float(self.frequency[f].get(key, 0)))
            elif f == "experience":
                out.append(nan if _missing(v) else EXPERIENCE_ORDER.get(str(v), nan))
            elif f == "professional_roles":
                roles = _roles(v)
                out.append(float(len(roles)) if roles else nan)
            elif f == "key_skills_count":
                out.append(_count(v))
            else:
                out.append(_flag(v))
        for f in self.layout:
            count = row.get(f + TOKENS)
            count = len(analyze(_text(row.get(f)))) if count is None else count
            out.append(float(count) if count else nan)
        return np.array([out], dtype=np.float32)

    def _row_tables(self) -> tuple[list[float], list[float], dict[str, dict[str, list[float]]], Any]:
        """What :meth:`_one` reads, as Python lists and dicts: the text scores' intercepts; the
        categorical model's intercepts and coefficient rows by field and value; each one-hot
        field's columns by value (a value not seen in training: zeros; missing: NaN)."""
        nan = math.nan
        cat_rows: dict[str, dict[str, list[float]]] = {f: {} for f in self.categorical}
        weights = self.cat_W.tolist()
        for token, j in self.vocab.items():
            f, _, value = token.partition("=")
            if f in cat_rows:
                cat_rows[f][value] = weights[j]
        onehot = {
            f: (
                {lv: [float(lv == other) for other in levels] for lv in levels},
                [0.0] * len(levels),
                [nan] * len(levels),
            )
            for f, levels in self.levels.items()
        }
        return self.b.tolist(), self.cat_b.tolist(), cat_rows, onehot

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> list[Path]:
        """Write ``dense.json`` and ``dense.npz`` (no pickle)."""
        folder = Path(folder)
        meta = {
            "format": DENSE_FORMAT,
            "task": self.task,
            "classes": self.classes,
            "layout": [[f, a, e] for f, (a, e) in self.layout.items()],  # a list: the order counts
            "n_features": self.n_features,
            "scores": list(self.scores),
            "structured": list(self.structured),
            "vocab": self.vocab,
            "levels": self.levels,
            "frequency": self.frequency,
            "columns": self.columns,
        }
        atomic_write_bytes(
            folder / "dense.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
        )
        import io

        buf = io.BytesIO()
        k = len(self.classes)
        # each text score's coefficients, for its own fields' columns only (W is zero elsewhere)
        blocks = {
            f"W_{i}": self.W[self._group_columns(g), i * k : (i + 1) * k] for i, g in enumerate(self.groups)
        }
        np.savez(buf, b=self.b, cat_W=self.cat_W, cat_b=self.cat_b, **blocks)
        atomic_write_bytes(folder / "dense.npz", buf.getvalue())
        return [folder / "dense.json", folder / "dense.npz"]

    @classmethod
    def load(cls, folder: str | Path) -> DenseInput:
        """Read ``dense.json`` and ``dense.npz`` (``allow_pickle=False``) and check they agree."""
        folder = Path(folder)
        meta = read_meta(folder / "dense.json", DENSE_FORMAT)
        try:
            layout = {str(f): (int(a), int(e)) for f, a, e in meta["layout"]}
            dense = cls(meta["task"], meta["classes"], layout, meta["n_features"], meta["scores"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VectorizerError(f"{folder}/dense.json: {exc}") from exc
        if list(dense.structured) != list(meta["structured"]):
            raise VectorizerError(
                f"{folder}/dense.json: fitted on the structured fields {meta['structured']}, this code "
                f"reads {list(dense.structured)} for {dense.task}; retrain"
            )
        dense.vocab = {str(t): int(i) for t, i in meta["vocab"].items()}
        dense.levels = {f: [str(v) for v in meta["levels"][f]] for f in dense.levels}
        dense.frequency = {
            f: {str(v): int(c) for v, c in meta["frequency"][f].items()} for f in dense.frequency
        }
        k = len(dense.classes)
        try:
            with np.load(folder / "dense.npz", allow_pickle=False) as z:
                dense.b = np.asarray(z["b"], dtype=np.float64)
                dense.cat_W = np.asarray(z["cat_W"], dtype=np.float64)
                dense.cat_b = np.asarray(z["cat_b"], dtype=np.float64)
                for i, g in enumerate(dense.groups):
                    dense.W[dense._group_columns(g), i * k : (i + 1) * k] = np.asarray(
                        z[f"W_{i}"], dtype=np.float64
                    )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VectorizerError(f"{folder}/dense.npz: {exc}") from exc
        dense.columns = dense._columns()
        if (
            dense.columns != meta["columns"]
            or dense.cat_W.shape != (len(dense.vocab), k)
            or dense.b.shape != (len(dense.groups) * k,)
        ):
            raise VectorizerError(f"{folder}: dense.json and dense.npz disagree")
        return dense


def _stacked(
    M: sp.csr_matrix, A: sp.csr_matrix | None, y: np.ndarray, rows: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The rows ``rows`` of ``M``, then (when given) the same rows of ``A``: their copies."""
    if A is None:
        return M[rows], y[rows]
    return sp.csr_matrix(sp.vstack([M[rows], A[rows]])), np.concatenate([y[rows], y[rows]])


def one_blas_thread() -> Any:
    """A context in which BLAS (numpy's and scipy's OpenBLAS) runs on one thread: for the
    logistic regressions on sparse TF-IDF, whose dense products (rows x cohorts) are too small
    to share. OpenBLAS threads spin while they wait; on cores shared with other processes
    they took the cores from the work: a responsibility-block fit (6,455 rows) took 20 s with
    2 threads and 2.3 s with one (2-core machine, load average 15). Enter it after scikit-learn
    is imported: threadpoolctl limits the libraries loaded by then (scipy loads its own
    OpenBLAS)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _row_has(X: sp.csr_matrix, start: int, stop: int) -> np.ndarray:
    """Which rows of ``X`` have a non-zero in columns [start, stop)."""
    if X.shape[0] == 1:
        return np.array([bool(((X.indices >= start) & (X.indices < stop)).any())])
    return np.diff(X[:, start:stop].indptr) > 0


def _softmax_list(z: Sequence[float]) -> list[float]:
    top = max(z)
    e = [math.exp(v - top) for v in z]
    total = sum(e)
    return [v / total for v in e]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_linear(
    M: sp.csr_matrix, y: np.ndarray, k: int, C: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(coef k x d, intercept k) of a multinomial logistic regression on the rows of ``M`` that
    have a non-zero; a cohort absent from them gets a very low intercept. Too few rows (or one
    cohort): zeros and the log of the cohort shares (a prior, not a model)."""
    keep = np.diff(M.indptr) > 0
    coef, intercept = np.zeros((k, M.shape[1])), np.full(k, -30.0)
    present = np.unique(y[keep])
    if keep.sum() < 2 * k or len(present) < 2:
        shares = np.bincount(y, minlength=k) + 1.0
        return coef, np.log(shares / shares.sum())
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=200, tol=1e-3, class_weight="balanced", random_state=seed)
    with one_blas_thread():
        clf.fit(M[keep], y[keep])
    spread_fit(clf, coef, intercept)
    return coef, intercept


def spread_fit(clf: Any, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Write a fitted scikit-learn logistic regression's coefficients into ``coef``/``intercept``
    (one row per cohort, integer labels), in place: a binary fit's one row goes to its second
    class and the first gets logit 0; rows of cohorts it never saw stay as they were."""
    if len(clf.classes_) == 2:
        coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        intercept[clf.classes_[0]] = 0.0
    else:
        for row, c in enumerate(clf.classes_):
            coef[c], intercept[c] = clf.coef_[row], clf.intercept_[row]


def _scores(model: tuple[np.ndarray, np.ndarray], M: sp.csr_matrix) -> np.ndarray:
    coef, intercept = model
    return _softmax(np.asarray(M @ coef.T) + intercept)
