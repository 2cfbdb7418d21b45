"""Text processing: the one function that training and serving both call.

``analyze(text)`` = ``tokenize(clean(text))``:

* :func:`clean` strips ``<highlighttext>`` and any other HTML, unescapes entities (also
  double-escaped ones), normalises whitespace, and drops the trailing "..." of
  truncated snippets;
* :func:`tokenize` splits with razdel, lowercases, and keeps word tokens (those that
  start with a letter or digit). razdel itself splits ``C++`` into ``c`` ``+`` ``+`` and
  ``1С`` into ``1`` ``с``; the word parts are kept and the punctuation dropped.

Lemmatization (pymorphy3) was measured and left out: see docs/lemmatization.md.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

from razdel import tokenize as _razdel_tokenize

_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")
_TRAILING_ELLIPSIS = re.compile(r"\s*(?:\.{3,}|…)\s*$")
_WORD = re.compile(r"^[^\W_](?:[\w+#.\-]*[\w+#])?$")


def clean(text: str | None) -> str:
    """Plain text from an hh.ru snippet: no tags, no entities, single spaces, no trailing '...'."""
    if not text:
        return ""
    out = text
    for _ in range(2):  # hh.ru snippets are sometimes escaped twice (&amp;quot;)
        if "&" not in out:
            break
        out = html.unescape(out)
    out = _TAG.sub(" ", out)
    out = _SPACE.sub(" ", out).strip()
    return _TRAILING_ELLIPSIS.sub("", out)


def tokenize(text: str) -> list[str]:
    """razdel tokens, lowercased, words only."""
    return [t for t in (tok.text.lower() for tok in _razdel_tokenize(text)) if _WORD.match(t)]


@lru_cache(maxsize=65536)
def _analyze_cached(text: str) -> tuple[str, ...]:
    return tuple(tokenize(clean(text)))


def analyze(text: str | None) -> list[str]:
    """Clean then tokenize: what both training and serving feed the vectorizer."""
    if not text:
        return []
    return list(_analyze_cached(text))
