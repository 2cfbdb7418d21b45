"""The evaluation report (``report.html``): candidates, calibration, labels, drift and the gate.

The page opens with a header (model version, data source, SYNTHETIC or real data, the data's
dates, the training window, the history's version, when it was written) and the verdict in one
paragraph: what was published and why, and which task not to rely on. The same page is the
Kubeflow UI's HTML artifact of the evaluate step (written before the gate: its verdict says so),
and, completed by :func:`with_gate` (the model version, the verdict, the gate's section),
``report.html`` in the model bundle and in the run's folder. Its charts are inline SVG with axes
and tick values, and one colour means one thing on the whole page (:data:`COLORS`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hhpulse.model.evaluate import dominant_prediction, served_auc, served_counts, task_caveats

REPORT_NAME = "report.html"  # in the bundle and in the run's folder

# one colour, one meaning, everywhere on the page
COLORS = {
    "validation": "#4c78a8",
    "test": "#f58518",
    "before calibration": "#9d755d",
    "after calibration": "#54a24b",
    "perfect calibration": "#888888",
}
AXIS = "#444444"
GRID = "#dddddd"

# drift keys of :func:`hhpulse.model.evaluate.drift_report`, as a reader names them
DRIFT_NAMES = {
    "salary_cohort_psi": "Salary cohort mix shift (PSI)",
    "demand_cohort_psi": "Demand cohort mix shift (PSI)",
    "salary_value_psi": "Salary value distribution shift (PSI)",
    "vocabulary_jaccard": "Overlap of the most common responsibility terms (Jaccard, 1 = the same)",
    "new_top_terms": "New among the most common terms",
    "champion_version": "Champion compared with",
}

_TABLE = "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
_STYLE = (
    "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
    ".warn{color:#b00}.tag{display:inline-block;padding:2px 8px;border-radius:3px;font-weight:bold;"
    "color:#fff;background:#b00}.tag.real{background:#2a7}.verdict{font-size:15px;border-left:4px solid #444;"
    "padding:4px 10px}.swatch{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;"
    "vertical-align:middle}td,th{font-size:13px}</style>"
)


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)}" '
        'font-size="11" font-family="sans-serif">'
    )


def legend_html() -> str:
    """The page's colours and what each means."""
    items = "".join(
        f'<span class="swatch" style="background:{c}"></span>{html.escape(name)}'
        for name, c in COLORS.items()
    )
    return f"<p>Colours on this page:{items}</p>"


def bars_svg(rows: Sequence[tuple[str, float | None, float | None]], lo: float = 0.5, hi: float = 1.0) -> str:
    """Validation and test AUC per candidate as horizontal bars on an axis from ``lo`` to ``hi``
    with tick values and grid lines (a value below ``lo`` draws no bar; n/a is written)."""
    width, bar_h, gap, left, right, top = 560, 12, 10, 190, 50, 10
    plot = width - left - right
    body = len(rows) * (2 * bar_h + gap)
    height = top + body + 36
    parts = [_svg_open(width, height, "validation and test ROC AUC per candidate")]

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot

    ticks = [lo + i * (hi - lo) / 5 for i in range(6)]
    for t in ticks:
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + body}" stroke="{GRID}"/>'
            f'<line x1="{x(t):.1f}" y1="{top + body}" x2="{x(t):.1f}" y2="{top + body + 4}" stroke="{AXIS}"/>'
            f'<text x="{x(t):.1f}" y="{top + body + 15}" text-anchor="middle">{t:.1f}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top + body}" x2="{left + plot}" y2="{top + body}" stroke="{AXIS}"/>'
    )
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + body}" stroke="{AXIS}"/>')
    parts.append(
        f'<text x="{left + plot / 2:.1f}" y="{height - 4}" text-anchor="middle">macro ROC AUC (OvO)</text>'
    )
    y = top + gap / 2
    for name, val, test in rows:
        parts.append(f'<text x="0" y="{y + bar_h + 3}">{html.escape(name)}</text>')
        for i, (v, what) in enumerate(((val, "validation"), (test, "test"))):
            w = 0.0 if v is None else x(v) - left
            yy = y + i * bar_h
            parts.append(
                f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{COLORS[what]}">'
                f"<title>{what} {_f(v)}</title></rect>"
            )
            parts.append(f'<text x="{left + w + 4:.1f}" y="{yy + bar_h - 3}">{_f(v)}</text>')
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "".join(parts)


def reliability_svg(tables: Mapping[str, Sequence[Mapping[str, Any]]], size: int = 300) -> str:
    """A reliability diagram: accuracy against confidence of the top cohort, per bin, one
    polyline per table (``{"before": rows, "after": rows}``, drawn in the page's colours for
    before and after calibration), dots sized by the bin's rows and the "after" dots labelled with
    them, the diagonal of perfect calibration, and both axes from 0 to 1 with tick values."""
    left, top, bottom, right = 44, 12, 40, 130
    plot = size - top - bottom
    width = left + plot + right

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return left + conf * plot, top + (1 - acc) * plot

    parts = [
        _svg_open(width, size, "reliability diagram before and after calibration"),
        f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="{AXIS}"/>',
    ]
    for i in range(6):
        t = i / 5
        gx, gy = xy(t, t)
        parts.append(
            f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + plot}" stroke="{GRID}"/>'
            f'<line x1="{left}" y1="{gy:.1f}" x2="{left + plot}" y2="{gy:.1f}" stroke="{GRID}"/>'
            f'<text x="{gx:.1f}" y="{top + plot + 14}" text-anchor="middle">{t:.1f}</text>'
            f'<text x="{left - 5}" y="{gy + 4:.1f}" text-anchor="end">{t:.1f}</text>'
        )
    parts += [
        f'<line x1="{left}" y1="{top + plot}" x2="{left + plot}" y2="{top}" '
        f'stroke="{COLORS["perfect calibration"]}" stroke-dasharray="4 3"/>',
        f'<text x="{left + plot / 2:.1f}" y="{size - 6}" text-anchor="middle">confidence of the top cohort</text>',
        f'<text x="12" y="{top + plot / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot / 2:.1f})">accuracy</text>',
    ]
    total = max(1, max((sum(r["count"] for r in t) for t in tables.values()), default=1))
    for i, (name, rows) in enumerate(tables.items()):
        key = f"{name} calibration" if f"{name} calibration" in COLORS else name
        color = COLORS.get(key, AXIS)
        pts = [xy(r["confidence"], r["accuracy"]) for r in rows]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                + '"/>'
            )
        for r, (x, y) in zip(rows, pts, strict=True):
            rad = 2 + 6 * (r["count"] / total) ** 0.5
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{rad:.1f}" fill="{color}" fill-opacity="0.6">'
                f"<title>{html.escape(key)}: {r['count']} rows, confidence {r['confidence']:.2f}, "
                f"accuracy {r['accuracy']:.2f}</title></circle>"
            )
            if name == "after":  # the rows behind each point: a point on a handful of rows may swing far
                parts.append(
                    f'<text x="{x + rad + 2:.1f}" y="{y - 3:.1f}" font-size="9" fill="{color}">{r["count"]}</text>'
                )
        parts.append(
            f'<text x="{left + plot + 8}" y="{top + 14 * i + 10}" fill="{color}">{html.escape(key)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bins_html(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> str:
    """The reliability diagram's points as a table: each confidence bin's rows, mean confidence
    and accuracy, before and after calibration (a point on few rows can sit far from the rest)."""

    def by_bin(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[float, float], Mapping[str, Any]]:
        return {tuple(r["bin"]): r for r in rows if "bin" in r}

    b, a = by_bin(before), by_bin(after)
    out = [
        "<p>Bins of the top cohort's confidence: rows, mean confidence and accuracy.</p>",
        f"{_TABLE}<tr><th>confidence bin</th><th>rows before calibration</th><th>confidence</th>"
        "<th>accuracy</th><th>rows after calibration</th><th>confidence</th><th>accuracy</th></tr>",
    ]
    for lo, hi in sorted(set(b) | set(a)):
        cells = ""
        for r in (b.get((lo, hi)), a.get((lo, hi))):
            cells += (
                f"<td>{r['count']}</td><td>{_f(r['confidence'])}</td><td>{_f(r['accuracy'])}</td>"
                if r
                else "<td>0</td><td>-</td><td>-</td>"
            )
        out.append(f"<tr><td>{lo:.1f} - {hi:.1f}</td>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def calibration_html(calibration: Mapping[str, Mapping[str, Any]], where: str = "test split") -> str:
    """Per task: the reliability diagram before and after calibration, ECE, Brier, log loss,
    and the predicted against the true cohort mix on the test split."""
    out = [f"<h2>Calibration ({html.escape(where)})</h2>"]
    for task, c in calibration.items():
        test = c.get("test") or {}
        before, after = test.get("before") or {}, test.get("after") or {}
        out.append(
            f"<h3>{html.escape(task)}: {html.escape(str(c.get('method')))} "
            f"(temperature {_f(c.get('temperature'))}), fitted on the validation slice</h3>"
        )
        if not before:
            out.append("<p>No test rows: nothing to draw.</p>")
            continue
        out.append(
            reliability_svg(
                {"before": before.get("reliability") or [], "after": after.get("reliability") or []}
            )
        )
        out.append(bins_html(before.get("reliability") or [], after.get("reliability") or []))
        out.append(
            f"{_TABLE}<tr><th></th>"
            "<th>top-label ECE</th><th>Brier</th><th>log loss</th><th>mean confidence</th><th>accuracy</th>"
            "<th>AUC ovo</th><th>largest mix error</th></tr>"
        )
        for name, m in (("before calibration", before), ("after calibration", after)):
            out.append(
                f"<tr><td>{name}</td><td>{_f(m.get('ece'))}</td><td>{_f(m.get('brier'))}</td>"
                f"<td>{_f(m.get('log_loss'))}</td><td>{_f(m.get('mean_confidence'))}</td>"
                f"<td>{_f(m.get('accuracy'))}</td><td>{_f(m.get('roc_auc_ovo'))}</td>"
                f"<td>{_f((m.get('mix') or {}).get('max_abs_error'))}</td></tr>"
            )
        out.append("</table>")
        mix_b, mix_a = before.get("mix") or {}, after.get("mix") or {}
        out.append(
            "<p>Cohort mix: mean predicted probability against the share of labels.</p>"
            f"{_TABLE}<tr><th>cohort</th>"
            "<th>true</th><th>predicted before calibration</th><th>predicted after calibration</th></tr>"
        )
        for cohort, true in (mix_b.get("true") or {}).items():
            out.append(
                f"<tr><td>{html.escape(cohort)}</td><td>{_f(true)}</td>"
                f"<td>{_f((mix_b.get('predicted') or {}).get(cohort))}</td>"
                f"<td>{_f((mix_a.get('predicted') or {}).get(cohort))}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def drift_html(drift: Mapping[str, Any] | None) -> str:
    out = ["<h2>Drift against the champion's training data</h2>"]
    if not drift:
        out.append("<p>No champion yet: nothing to compare with.</p>")
        return "\n".join(out)
    out.append(
        f"<p>Overall: <b>{html.escape(str(drift.get('level')))}</b> "
        "(PSI below 0.1 minor, below 0.25 moderate, else major)</p><ul>"
    )
    for k, v in drift.items():
        if k == "level":
            continue
        name = DRIFT_NAMES.get(k, k.replace("_", " ").capitalize())
        value = html.escape(", ".join(v)) if isinstance(v, list) else _f(v)
        out.append(f"<li>{html.escape(name)}: {value or 'none'}</li>")
    out.append("</ul>")
    return "\n".join(out)


def labels_html(label_lines: Mapping[str, Sequence[str]]) -> str:
    """Where each task's labels came from (:func:`hhpulse.model.dataset.label_lines`)."""
    out = ["<h2>Labels</h2>"]
    for task, lines in label_lines.items():
        items = "".join(
            f"<li{' class=warn' if line.startswith('AGE PROXY') else ''}>{html.escape(line)}</li>"
            for line in lines
        )
        out.append(f"<h3>{html.escape(task)}</h3><ul>{items}</ul>")
    return "\n".join(out)


def _missing_figures(res: Mapping[str, Any]) -> list[str]:
    """Why the winner's test figures are n/a, from the metrics' notes."""
    test = res["candidates"][res["winner"]]["metrics"].get("test", {})
    return list(test.get("notes") or [])


VERSION_MARK = ("<!--hhpulse:version-->", "<!--/hhpulse:version-->")
VERDICT_MARK = ("<!--hhpulse:verdict-->", "<!--/hhpulse:verdict-->")
NOT_BUILT = "not built yet (the gate step builds the challenger's bundle)"


def selection_text(res: Mapping[str, Any]) -> str:
    """The rule that picked a task's winner, as a reader names it: the selection score's rule
    (``metrics.json``'s ``selection.score``), else (metrics from before the selection score)
    the validation primary metric with all fields, which is what decided then."""
    rule = (res.get("selection") or {}).get("score")
    if rule:
        return f"the selection score, the {rule}"
    return f"the validation {res.get('primary', 'roc_auc_ovo')} with all fields"


def _marked(mark: tuple[str, str], body: str) -> str:
    return f"{mark[0]}{body}{mark[1]}"


def _replace_marked(page: str, mark: tuple[str, str], body: str) -> str:
    pattern = re.compile(re.escape(mark[0]) + ".*?" + re.escape(mark[1]), re.S)
    return pattern.sub(lambda _: _marked(mark, body), page, count=1)


def data_tag(synthetic: bool | None) -> str:
    """The page's SYNTHETIC / real tag (the words the terminal summary uses too)."""
    if synthetic is None:
        return ""
    if synthetic:
        return "<span class='tag'>SYNTHETIC</span> the demo market (hhpulse's emulator), not hh.ru data"
    return "<span class='tag real'>real data</span> from hh.ru"


def header_html(header: Mapping[str, Any] | None) -> str:
    """The page's header: what this report is about, in one table. ``header`` keys (each
    optional): ``synthetic``, ``source``, ``collected`` (the data's dates), ``window``,
    ``history_version``, ``written_at``; the model version is filled in by :func:`with_gate`."""
    h = dict(header or {})
    rows = [
        ("model version", _marked(VERSION_MARK, html.escape(str(h.get("version") or NOT_BUILT)))),
        ("data", data_tag(h.get("synthetic")) or "n/a"),
        ("data source", html.escape(str(h.get("source") or "n/a"))),
        ("data dates (published .. collected)", html.escape(str(h.get("collected") or "n/a"))),
        ("training window", html.escape(str(h.get("window") or "n/a"))),
    ]
    if h.get("history_version") is not None:
        rows.append(("history version", html.escape(str(h["history_version"]))))
    rows.append(("report written", html.escape(str(h.get("written_at") or "n/a"))))
    body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"{_TABLE}{body}</table>"


def caveat_lines(
    results: Mapping[str, Mapping[str, Any]],
    calibration: Mapping[str, Mapping[str, Any]] | None,
    summary: Mapping[str, Any] | None,
) -> list[str]:
    """One sentence per unreliable task (:func:`hhpulse.model.evaluate.task_caveats`)."""
    out = []
    for task, res in results.items():
        c = task_caveats(task, res, (calibration or {}).get(task), summary)
        if not c["reliable"]:
            out.append(f"Do not rely on {task}: " + "; ".join(c["caveats"]) + ".")
    return out


def verdict_text(verdict: Mapping[str, Any] | None) -> str:
    """The gate's verdict in one sentence: what is published and why (or why not)."""
    if not verdict:
        return (
            "Not judged yet: this page is the evaluate step's, written before the gate; the gate's "
            "verdict is in the report.html of the run's folder and of the published bundle."
        )
    version = verdict.get("version") or "?"
    champ = verdict.get("champion_version") or ""
    reason = str(verdict.get("reason") or "").rstrip(".")
    if not champ:
        return f"Published {version}: the first model, with no champion to compare it with."
    if verdict.get("challenger_wins"):
        return f"Published {version} in place of champion {champ}: {reason}."
    return f"Not published: champion {champ} stays and challenger {version} is set aside: {reason}."


def verdict_html(verdict: Mapping[str, Any] | None, caveats: Sequence[str]) -> str:
    """The verdict paragraph at the top of the page: the gate's decision (marked, for
    :func:`with_gate` to fill in) and the caveats."""
    text = _marked(VERDICT_MARK, html.escape(verdict_text(verdict)))
    more = "".join(f" <span class='warn'>{html.escape(c)}</span>" for c in caveats)
    return f"<p class='verdict'><b>Verdict:</b> {text}{more}</p>"


def comparison_html(
    results: Mapping[str, Mapping[str, Any]],
    drift: Mapping[str, Any] | None,
    *,
    demand_proxy: bool,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    label_lines: Mapping[str, Sequence[str]] | None = None,
    sections: Sequence[str] = (),
    header: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> str:
    """results: task -> {"winner", "primary", "selection", "candidates": {name: {"kind", "info", "metrics"}}}.

    ``header``: see :func:`header_html`; ``summary``: the dataset's summary (the demand proxy
    makes demand unreliable); ``label_lines``: per task, where the labels came from (the model
    card shows the same lines); with ``demand_proxy`` the page warns with the demand line that
    says why; ``sections``: more HTML fragments, at the end (e.g.
    :func:`hhpulse.watch.monitor.monitor_html`)."""
    summary = dict(summary or {})
    if demand_proxy:
        summary.setdefault("demand_proxy", True)
    tag = " (SYNTHETIC data)" if (header or {}).get("synthetic") else ""
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>hhpulse report{html.escape(tag)}</title>",
        f"{_STYLE}</head><body>",
        f"<h1>hhpulse: evaluation report{html.escape(tag)}</h1>",
        header_html(header),
        verdict_html(None, caveat_lines(results, calibration, summary)),
        legend_html(),
    ]
    if demand_proxy:
        why = next((x for x in (label_lines or {}).get("demand", []) if x.startswith("AGE PROXY")), None)
        out.append(
            f"<p class='warn'><b>WARNING:</b> {html.escape(why or 'demand labels use the age proxy')}</p>"
        )
    for task, res in results.items():
        out.append(
            f"<h2>{html.escape(task)}: winner <code>{html.escape(res['winner'])}</code> "
            f"(by {html.escape(selection_text(res))})</h2>"
        )
        out.append(
            "<p>The winner has the highest selection score on validation; the test columns were not "
            "used to choose it. Test figures here are the raw (uncalibrated) models'.</p>"
        )
        out.append(
            f"{_TABLE}<tr><th>candidate</th><th>kind</th>"
            "<th>validation AUC ovo</th><th>validation AUC, responsibility only</th><th>selection score</th>"
            "<th>test AUC ovo (uncalibrated)</th><th>test AUC ovr</th><th>test AUC, responsibility only</th>"
            "<th>test macro-F1</th><th>test log loss</th><th>train s</th></tr>"
        )
        rows = []
        for name, c in sorted(res["candidates"].items()):
            m = c["metrics"]
            val, test, resp = m.get("val", {}), m.get("test", {}), m.get("test_resp", {})
            val_resp = m.get("val_resp", {})
            mark = (" ★" if name == res["winner"] else "") + (
                " (baseline)" if name == res.get("baseline") else ""
            )
            out.append(
                f"<tr><td>{html.escape(name)}{mark}</td><td>{html.escape(c['kind'])}</td><td>{_f(val.get('roc_auc_ovo'))}</td>"
                f"<td>{_f(val_resp.get('roc_auc_ovo'))}</td><td>{_f(c.get('selection_score'))}</td>"
                f"<td>{_f(test.get('roc_auc_ovo'))}</td><td>{_f(test.get('roc_auc_ovr'))}</td><td>{_f(resp.get('roc_auc_ovo'))}</td>"
                f"<td>{_f(test.get('f1_macro'))}</td><td>{_f(test.get('log_loss'))}</td><td>{_f(c['info'].get('train_seconds'))}</td></tr>"
            )
            rows.append((name, val.get("roc_auc_ovo"), test.get("roc_auc_ovo")))
        out.append("</table>")
        cal = (calibration or {}).get(task)
        auc, which = served_auc(res, cal)
        if which == "after calibration":
            out.append(
                f"<p>The winner serves calibrated probabilities: test AUC ovo {_f(auc)} after calibration "
                f"({_f(((res['candidates'][res['winner']]['metrics']).get('test') or {}).get('roc_auc_ovo'))} "
                "uncalibrated; see the calibration section).</p>"
            )
        for note in _missing_figures(res):
            out.append(f"<p>Why a test figure is n/a or partial: {html.escape(note)}</p>")
        one = dominant_prediction(task, served_counts(res, cal))
        if one:
            out.append(f"<p class='warn'><b>One cohort:</b> {html.escape(one)}</p>")
        out.append(
            "<p>Bars: validation and test macro ROC AUC (OvO) per candidate, axis from 0.5 (chance) to 1.</p>"
        )
        out.append(bars_svg(rows))
    if label_lines:
        out.append(labels_html(label_lines))
    if calibration:
        out.append(calibration_html(calibration))
    out.append(drift_html(drift))
    out.extend(sections)
    out.append("</body></html>")
    return "\n".join(out)


def gate_html(verdict: Mapping[str, Any]) -> str:
    """The gate's verdict (``gates/<version>.json`` of :func:`hhpulse.flows.pipeline_steps.build_and_gate`)
    as a section: one line each, and each task's difference with its interval. Every figure
    here is on test rows the champion was never fitted on."""
    lines = verdict.get("lines") or [verdict.get("reason", "")]
    champ = verdict.get("champion_version") or "none"
    boot = verdict.get("bootstrap") or {}
    out = [
        "<h2>Gate</h2>",
        f"<p>Challenger {html.escape(str(verdict.get('version')))} against champion {html.escape(champ)}.</p>",
        "<ul>" + "".join(f"<li>{html.escape(str(line))}</li>" for line in lines) + "</ul>",
    ]
    if boot and verdict.get("intervals"):
        out.append(
            f"<p>Paired bootstrap: {boot.get('resamples')} resamples stratified by {html.escape(str(boot.get('stratified_by')))}, "
            f"{100 * float(boot.get('confidence', 0)):.0f}% percentile interval, on {html.escape(str(boot.get('rows')))}. "
            "The challenger replaces the champion only when the lower bound of the mean improvement "
            f"is above the margin {_f(verdict.get('margin'))}.</p>"
        )
    return "\n".join(out)


def with_gate(report: str, verdict: Mapping[str, Any]) -> str:
    """The report completed by the gate: the model version in the header, the verdict paragraph
    at the top (its caveats kept), and the gate's section before the end of the page."""
    out = _replace_marked(report, VERSION_MARK, html.escape(str(verdict.get("version") or NOT_BUILT)))
    out = _replace_marked(out, VERDICT_MARK, html.escape(verdict_text(verdict)))
    section = gate_html(verdict)
    if "</body>" in out:
        return out.replace("</body>", section + "\n</body>", 1)
    return out + "\n" + section
