"""Do a run's summary, its report and its model card say the same thing?

Used by the whole-pipeline test and by the scripted newcomer run (tests/newcomer.py). Each
``*_facts`` function reads one document into the same shape::

    {"winner": {task: name}, "figure": {task: AUC after calibration}, "rule": {task: text},
     "tag": "SYNTHETIC" | "real", "unreliable": {task, ...}}

and :func:`disagreements` lists, in words, every fact two documents state differently (a fact
one of them does not state is not compared). :func:`card_contradictions` checks the card's
sentences against the numbers beside them.
"""

from __future__ import annotations

import html
import re
from typing import Any

TASKS = ("salary", "demand")


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def summary_facts(summary: str) -> dict[str, Any]:
    """From ``hhpulse run``'s output."""
    facts: dict[str, Any] = {"winner": {}, "figure": {}, "rule": {}, "unreliable": set()}
    for task in TASKS:
        m = re.search(
            rf"^\s*{task}\s+challenger \S+ \(([^)]+)\): test ROC AUC \(OvO\) ([\d.]+|n/a) after calibration",
            summary,
            re.M,
        )
        if m:
            facts["winner"][task] = m[1]
            facts["figure"][task] = None if m[2] == "n/a" else float(m[2])
        if re.search(rf"DO NOT RELY ON {task.upper()}:", summary):
            facts["unreliable"].add(task)
    tag = re.search(r"^\s*data:\s+(SYNTHETIC|real|MIXED)", summary, re.M)
    facts["tag"] = tag[1] if tag else None
    return facts


def report_facts(page: str) -> dict[str, Any]:
    """From report.html."""
    facts: dict[str, Any] = {"winner": {}, "figure": {}, "rule": {}, "unreliable": set()}
    head = _text(page[: page.index("<h2")]) if "<h2" in page else _text(page)
    facts["tag"] = "SYNTHETIC" if "SYNTHETIC" in head else "real" if "real data" in head else None
    for task in TASKS:
        if f"Do not rely on {task}:" in head:
            facts["unreliable"].add(task)
        m = re.search(
            rf"<h2>{task}: winner <code>([^<]+)</code> \(by ([^<]+)\)</h2>(.*?)(?=<h2>|$)", page, re.S
        )
        if not m:
            continue
        facts["winner"][task] = html.unescape(m[1])
        facts["rule"][task] = html.unescape(m[2])
        fig = re.search(r"test AUC ovo ([\d.]+|n/a) after calibration", _text(m[3]))
        if fig:
            facts["figure"][task] = None if fig[1] == "n/a" else float(fig[1])
    return facts


def card_facts(card: str) -> dict[str, Any]:
    """From model_card.md."""
    facts: dict[str, Any] = {"winner": {}, "figure": {}, "rule": {}, "unreliable": set()}
    facts["tag"] = (
        "SYNTHETIC" if "**SYNTHETIC**" in card else "real" if "**real** hh.ru data" in card else None
    )
    for task in TASKS:
        m = re.search(rf"^- {task}: \*\*([^*]+)\*\* \([^)]*\), chosen by ([^;]+);(.*)$", card, re.M)
        if m:
            facts["winner"][task] = m[1]
            facts["rule"][task] = m[2]
            fig = re.search(r"([\d.]+|n/a) after calibration", m[3])
            if fig:
                facts["figure"][task] = None if fig[1] == "n/a" else float(fig[1])
        if f"do not rely on {task}." in card:
            facts["unreliable"].add(task)
    return facts


def disagreements(named: dict[str, dict[str, Any]]) -> list[str]:
    """Every fact that two of the ``named`` documents (name -> facts) state differently."""
    out = []
    names = list(named)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = named[a], named[b]
            for key in ("winner", "figure", "rule"):
                for task in set(fa[key]) & set(fb[key]):
                    if fa[key][task] != fb[key][task]:
                        out.append(f"{task} {key}: {a} says {fa[key][task]!r}, {b} says {fb[key][task]!r}")
            if fa["tag"] and fb["tag"] and fa["tag"] != fb["tag"]:
                out.append(f"data tag: {a} says {fa['tag']}, {b} says {fb['tag']}")
            if fa["unreliable"] != fb["unreliable"]:
                out.append(
                    f"unreliable tasks: {a} says {sorted(fa['unreliable'])}, {b} says {sorted(fb['unreliable'])}"
                )
    return out


def card_contradictions(card: str) -> list[str]:
    """The card's baseline sentences against the numbers beside them."""
    out = []
    for what, base, win, words in re.findall(
        r"(selection score|validation \w+) ([\d.]+|n/a) \(winner ([\d.]+|n/a)\);[^;]*;\s*([^\n]+)", card
    ):
        if "n/a" in (base, win):
            continue
        b, w = float(base), float(win)
        if (
            ("higher" in words and not w > b)
            or ("ties" in words and w != b)
            or ("LOWER" in words and not w < b)
        ):
            out.append(f"{what} {base} (winner {win}) beside: {words}")
        if "at least as well" in words and w < b:
            out.append(f"{what} {base} (winner {win}) beside: {words}")
    return out
