"""Text processing: the one function that training and serving both call.

``analyze(text)`` = ``tokenize(clean(text))``, and :class:`hhpulse.features.TextVectorizer`
uses it as its analyzer, so a snippet is tokenized the same way at training and at
serving time.

* :func:`clean` strips ``<highlighttext>`` and any other HTML tags, unescapes entities
  (also double-escaped ones such as ``&amp;quot;``), drops soft hyphens and zero-width
  characters, normalises whitespace (NBSP included), and drops the trailing "..." / "…"
  of truncated search snippets. A ``<`` that does not open a tag (``опыт <3 лет``) stays.
* :func:`tokenize` lowercases and keeps word tokens with one precompiled regular
  expression. It keeps what matters in vacancy texts and what razdel splits apart:
  ``c++``, ``c#``, ``1с``, ``b2b``, ``node.js``, ``python-разработчик``, ``5/2``
  (a shift pattern), ``1.5``. Punctuation is dropped, ``ё`` becomes ``е``, and a word
  that mixes Cyrillic with look-alike Latin letters (``уcтaновкa``, a common trick
  against keyword search) is mapped back to Cyrillic.

razdel and lemmatization (pymorphy3) were both measured on the real data and left out:
razdel gave the same ROC AUC at a 14th of the speed, and lemmas did not pay for their
cost. See docs/lemmatization.md.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

# Stored with every fitted vectorizer: a vectorizer is only valid with the tokenizer it
# was fitted with. Bump it whenever clean() or tokenize() changes what they return.
TOKENIZER_VERSION = "hhpulse-text/2"

# A tag starts with a letter, "/" or "!" right after "<": "<3 лет" or "a < b" are not tags.
_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_SPACE = re.compile(r"\s+")
_TRAILING_ELLIPSIS = re.compile(r"\s*(?:\.{2,}|…)+\s*$")

# Numbers with separators (1.5, 5/2, 2/2, 09:00) first; then words of letters and digits
# joined by "." or "-" (node.js, asp.net, python-разработчик), with an optional ++ or #.
_TOKEN = re.compile(r"\d+(?:[.,/:]\d+)+|[^\W_]+(?:[.\-][^\W_]+)*(?:\+\+|#)?")
_CYRILLIC = re.compile("[а-я]")
_LATIN = re.compile("[a-z]")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_LATIN_LOOKALIKES = "aceopxykmtbh"  # lowercased Latin letters drawn like Cyrillic ones
_OTHER_LATIN = re.compile(f"[{''.join(sorted(set('abcdefghijklmnopqrstuvwxyz') - set(_LATIN_LOOKALIKES)))}]")
_HOMOGLYPHS = str.maketrans(_LATIN_LOOKALIKES, "асеорхукмтвн")


def clean(text: str | None) -> str:
    """Plain text from an hh.ru snippet: no tags, no entities, single spaces, no trailing '...'."""
    if not text:
        return ""
    out = _TAG.sub(" ", text)
    if "&" in out:
        for _ in range(2):  # hh.ru snippets are sometimes escaped twice (&amp;quot;)
            unescaped = html.unescape(out)
            if unescaped == out:
                break
            out = unescaped
        out = _TAG.sub(" ", out)  # tags that were escaped (&lt;b&gt;)
    out = _INVISIBLE.sub("", out)
    out = _SPACE.sub(" ", out).strip()
    return _TRAILING_ELLIPSIS.sub("", out)


def _fix_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if _CYRILLIC.search(run) and _LATIN.search(run) and not _OTHER_LATIN.search(run):
        return run.translate(_HOMOGLYPHS)
    return run


def _fix_mixed_script(token: str) -> str:
    """Map look-alike Latin letters to Cyrillic inside a letter run that mixes both scripts
    (``уcтaновкa``); ``python-разработчик`` (two runs) and ``pythonист`` stay as they are."""
    if _CYRILLIC.search(token) and _LATIN.search(token):
        return _LETTER_RUN.sub(_fix_run, token)
    return token


def _normalize(token: str) -> str:
    token = _fix_mixed_script(token)
    if token.startswith("1c"):  # 1C written with a Latin C is the same 1С
        token = "1с" + token[2:]
    return token


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of ``text`` (punctuation dropped); see the module docstring."""
    lowered = text.lower().replace("ё", "е")
    return [_normalize(t) for t in _TOKEN.findall(lowered)]


@lru_cache(maxsize=65536)
def _analyze_cached(text: str) -> tuple[str, ...]:
    return tuple(tokenize(clean(text)))


def analyze(text: str | None) -> list[str]:
    """Clean then tokenize: what both training and serving feed the vectorizer.

    Results are cached (snippets repeat a lot: the same vacancy in many runs, the same
    text in many requests); the returned list is a fresh copy the caller may change.
    """
    if not text:
        return []
    return list(_analyze_cached(text))
