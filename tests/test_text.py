"""Text cleaning and tokenization: the one function training and serving share."""

from __future__ import annotations

import pytest

from hhpulse.text import analyze, clean, tokenize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Работа с <highlighttext>Python</highlighttext>", "Работа с Python"),
        ("a&nbsp;b &amp;quot;c&amp;quot;", 'a b "c"'),
        ("  много\n\tпробелов  ", "много пробелов"),
        ("обрезанный сниппет...", "обрезанный сниппет"),
        ("обрезанный сниппет …", "обрезанный сниппет"),
        ("<p>HTML <b>жирный</b></p>", "HTML жирный"),
        (None, ""),
    ],
)
def test_clean(raw, expected):
    assert clean(raw) == expected


def test_tokenize_lowercases_and_keeps_words():
    assert tokenize("Разработка REST API, 5 лет; SQL!") == ["разработка", "rest", "api", "5", "лет", "sql"]


def test_analyze_is_invariant_to_markup_and_whitespace():
    a = analyze("Разработка  на <highlighttext>Python</highlighttext>...")
    assert a == analyze("Разработка на Python") == ["разработка", "на", "python"]
    assert analyze("") == analyze(None) == []
