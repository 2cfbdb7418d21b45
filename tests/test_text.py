"""Text cleaning and tokenization: the one function training and serving share."""

from __future__ import annotations

import gzip
import json
from itertools import islice

import pytest

from hhpulse.model.text import analyze, clean, tokenize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Работа с <highlighttext>Python</highlighttext>", "Работа с Python"),
        ("a&nbsp;b &amp;quot;c&amp;quot;", 'a b "c"'),
        ("a\u00a0b", "a b"),
        ("  много\n\tпробелов  ", "много пробелов"),
        ("обрезанный сниппет...", "обрезанный сниппет"),
        ("обрезанный сниппет …", "обрезанный сниппет"),
        ("обрезанный сниппет. ..", "обрезанный сниппет."),
        ("<p>HTML <b>жирный</b></p>", "HTML жирный"),
        ("&lt;b&gt;экранированный тег&lt;/b&gt;", "экранированный тег"),
        ("опыт <3 лет, зарплата > 100", "опыт <3 лет, зарплата > 100"),
        ("a &lt; b", "a < b"),
        ("мяг\u00adкий\u200b знак", "мягкий знак"),
        ("многоточие... в середине", "многоточие... в середине"),
        (None, ""),
        ("", ""),
    ],
)
def test_clean(raw, expected):
    assert clean(raw) == expected


def test_tokenize_lowercases_and_keeps_words():
    assert tokenize("Разработка REST API, 5 лет; SQL!") == ["разработка", "rest", "api", "5", "лет", "sql"]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("C++ и C#", ["c++", "и", "c#"]),
        ("1С:Предприятие, 1С-Битрикс", ["1с", "предприятие", "1с-битрикс"]),
        ("1C с латинской C", ["1с", "с", "латинской", "c"]),
        ("B2B, 3D, .NET, Node.js", ["b2b", "3d", "net", "node.js"]),
        ("Python-разработчик, e-mail", ["python-разработчик", "e-mail"]),
        ("график 5/2, 1.5 года, с 09:00", ["график", "5/2", "1.5", "года", "с", "09:00"]),
        ("100% — (скобки) «кавычки» _подчёркивание_", ["100", "скобки", "кавычки", "подчеркивание"]),
        ("Ёлка ЕЛКА", ["елка", "елка"]),
        ("ASP.NET Core, т.д., 09:00-18:00", ["asp.net", "core", "т.д", "09:00-18:00"]),
        ("c+ и 1,5 года, 5,sql", ["c", "и", "1,5", "года", "5", "sql"]),
        ("", []),
    ],
)
def test_tokenize_keeps_the_terms_vacancies_use(text, tokens):
    assert tokenize(text) == tokens


def test_mixed_script_lookalikes_are_mapped_to_cyrillic():
    # Latin a, c, e, o, p hidden in Russian words (a trick against keyword search)
    assert tokenize("уcтaновкa нaпpавлeние") == ["установка", "направление"]
    # a Latin word glued to a Russian one, or a real Latin letter, is left alone
    assert tokenize("pythonист python-разработчик qа") == ["pythonист", "python-разработчик", "qа"]


def test_analyze_is_invariant_to_markup_and_whitespace():
    a = analyze("Разработка  на <highlighttext>Python</highlighttext>...")
    assert a == analyze("Разработка на Python") == ["разработка", "на", "python"]
    assert analyze("") == analyze(None) == []


def test_analyze_returns_a_fresh_list_each_time():
    first = analyze("кэшируемый текст")
    first.append("мусор")
    assert analyze("кэшируемый текст") == ["кэшируемый", "текст"]


@pytest.mark.shared_data
def test_real_snippets_analyze_to_clean_tokens(shared_hh):
    """On real API items: truncation marks go, a real "<" stays, every token is a lowercase word."""
    path = shared_hh / "vacancies_dev.api.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        items = [json.loads(line) for line in islice(fh, 5000)]
    texts = [(it.get("snippet") or {}).get(k) for it in items for k in ("responsibility", "requirement")]
    texts = [t for t in texts if t]
    truncated = [t for t in texts if t.endswith("...")]
    assert len(truncated) > len(texts) / 2  # most snippets are cut by hh.ru
    assert not any(clean(t).endswith("...") for t in truncated)
    less_than = [t for t in texts if "Python <3.7" in t or "Python < 3.7" in t]
    assert less_than and all("3.7" in analyze(t) for t in less_than)
    for text in texts:
        for tok in analyze(text):
            assert tok == tok.lower() and tok[0].isalnum(), (text, tok)
