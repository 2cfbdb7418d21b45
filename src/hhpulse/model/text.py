"""Text processing: the one function that training and serving both call.

``analyze(text)`` = ``tokenize(clean(text))``, and :class:`hhpulse.model.features.TextVectorizer`
uses it as its analyzer, so a snippet is tokenized the same way at training and at
serving time.

* :func:`clean` strips ``<highlighttext>`` and any other HTML tags, unescapes entities
  (also double-escaped ones such as ``&amp;quot;``), drops soft hyphens and zero-width
  characters, normalises whitespace (NBSP included), and drops the trailing "..." / "…"
  of truncated search snippets. A ``<`` that does not open a tag (``опыт <3 лет``) stays.
* :func:`tokenize` lowercases, segments with razdel, and keeps word tokens. razdel
  splits a word wherever the script or the letter/digit class changes, so a small
  rejoin pass glues back pieces that touch in the text (no space between them) and
  belong together in vacancy texts: ``c++``, ``c#``, ``1с``, ``b2b``, ``3d``,
  ``node.js``, ``asp.net``, ``09:00``, ``pythonист``. Punctuation is dropped, ``ё``
  becomes ``е``, and a word that mixes Cyrillic with look-alike Latin letters
  (``уcтaновкa``, a common trick against keyword search) is mapped back to Cyrillic
  before razdel sees it.

Lemmatization (pymorphy3) was measured on the real data and left out: it did not pay
for its cost. ``python -m benchmarks text`` measures the tokenizer's speed against bare
razdel and what lemmas and character n-grams earn; docs/lemmatization.md records a run.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

from razdel import tokenize as _razdel_tokenize

# Stored with every fitted vectorizer: a vectorizer is only valid with the tokenizer it
# was fitted with. Bump it whenever clean() or tokenize() changes what they return.
TOKENIZER_VERSION = "hhpulse-text/3"

# A tag starts with a letter, "/" or "!" right after "<": "<3 лет" or "a < b" are not tags.
_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_SPACE = re.compile(r"\s+")
_TRAILING_ELLIPSIS = re.compile(r"\s*(?:\.{2,}|…)+\s*$")

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


def _normalize(token: str) -> str:
    token = token.strip("_")
    if token.endswith("+") and not token.endswith("++"):
        token = token.rstrip("+")  # "c+" is a stray plus, "c++" the language
    token = token.rstrip(".-:/,")  # a separator glued on that nothing followed ("т.д.")
    if token.startswith("1c"):  # 1C written with a Latin C is the same 1С
        token = "1с" + token[2:]
    return token


_SEPARATORS = frozenset(".-")  # glue words: node.js, asp.net (razdel keeps "e-mail" whole)
_NUMBER_SEPARATORS = frozenset(":/,.")  # glue numbers: 09:00, 5/2, 1,5


def _glues(last: str, piece: str) -> bool:
    """Whether razdel piece ``piece`` continues token ``last`` (the two touch in the text)."""
    if not last[0].isalnum():  # punctuation stays alone: ".net" gives "net"
        return False
    tail, head = last[-1], piece[0]
    if head.isalnum():
        # b|2|b, 1|с, 3|d, python|ист, and a word after a glued separator (node.|js)
        if tail in _SEPARATORS:
            return True
        if tail in _NUMBER_SEPARATORS:  # 09:|00 and 5/|2, but not "5,sql"
            return head.isdigit()
        return tail.isalnum()
    if piece in ("+", "#"):
        return tail.isalnum() or tail == "+"
    if piece in _SEPARATORS:
        return tail.isalnum()
    if piece in _NUMBER_SEPARATORS:
        return tail.isdigit()
    return False


def _lowered(text: str) -> str:
    lowered = text.lower().replace("ё", "е")
    if _CYRILLIC.search(lowered) and _LATIN.search(lowered):
        lowered = _LETTER_RUN.sub(_fix_run, lowered)
    return lowered


def _pieces(lowered: str) -> tuple[list[str], list[int]]:
    """razdel's pieces with the touching ones glued back, and where each starts."""
    tokens: list[str] = []
    starts: list[int] = []
    stop = -1
    for sub in _razdel_tokenize(lowered):
        piece = sub.text
        if sub.start == stop and tokens and _glues(tokens[-1], piece):
            tokens[-1] += piece
        else:
            tokens.append(piece)
            starts.append(sub.start)
        stop = sub.stop
    return tokens, starts


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of ``text`` (punctuation dropped); see the module docstring."""
    out = []
    for token in _pieces(_lowered(text))[0]:
        token = _normalize(token)
        if token and token[0].isalnum():
            out.append(token)
    return out


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """:func:`tokenize`'s tokens, each with the ``[start, stop)`` of the text it came from.

    ``text[start:stop]`` is the token as written (case, ``ё``, look-alike letters kept),
    so explanations can show terms the way the user wrote them. When lowercasing changes
    the text's length (a few exotic letters), the spans are ``(-1, -1)``.
    """
    lowered = _lowered(text)
    spans_ok = len(lowered) == len(text)
    out = []
    for raw, start in zip(*_pieces(lowered), strict=True):
        token = _normalize(raw)
        if token and token[0].isalnum():
            # _normalize strips "_" on the left and separators on the right only
            first = start + len(raw) - len(raw.lstrip("_"))
            out.append((token, first, first + len(token)) if spans_ok else (token, -1, -1))
    return out


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
