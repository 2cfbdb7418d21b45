"""The candidate comparison report (HTML, shown by the Kubeflow UI), with plots and drift."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _bars(rows: list[tuple[str, float | None, float | None]]) -> str:
    """A small inline SVG: validation and test AUC per candidate."""
    width, bar_h, gap, left = 520, 12, 10, 190
    h = len(rows) * (2 * bar_h + gap) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-size="11" font-family="sans-serif">'
    ]
    y = 10
    for name, val, test in rows:
        parts.append(f'<text x="0" y="{y + bar_h + 3}">{html.escape(name)}</text>')
        for i, (v, color) in enumerate(((val, "#4c78a8"), (test, "#f58518"))):
            w = 0 if v is None else max(0.0, (v - 0.5) / 0.5) * (width - left - 40)
            parts.append(
                f'<rect x="{left}" y="{y + i * bar_h}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}"/>'
            )
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y + i * bar_h + bar_h - 3}">{_f(v)}</text>')
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "".join(parts)


def reliability_svg(tables: Mapping[str, Sequence[Mapping[str, Any]]], size: int = 260) -> str:
    """A reliability diagram: accuracy against confidence of the top cohort, per bin, one
    polyline per table (``{"before": rows, "after": rows}``), dots sized by the bin's rows,
    and the diagonal of perfect calibration."""
    pad = 30
    plot = size - 2 * pad

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return pad + conf * plot, pad + (1 - acc) * plot

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 90}" height="{size}" font-size="10" font-family="sans-serif">',
        f'<rect x="{pad}" y="{pad}" width="{plot}" height="{plot}" fill="none" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad + plot}" x2="{pad + plot}" y2="{pad}" stroke="#bbb" stroke-dasharray="4 3"/>',
        f'<text x="{pad}" y="{size - 8}">confidence of the top cohort (0 to 1)</text>',
        f'<text x="4" y="{pad - 8}">accuracy</text>',
    ]
    colors = {"before": "#f58518", "after": "#4c78a8"}
    total = max(1, max((sum(r["count"] for r in t) for t in tables.values()), default=1))
    for i, (name, rows) in enumerate(tables.items()):
        color = colors.get(name, "#54a24b")
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
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{rad:.1f}" fill="{color}" fill-opacity="0.6"/>'
            )
        parts.append(
            f'<text x="{size + 4}" y="{pad + 14 * i + 10}" fill="{color}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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
            out.append("<p>No test rows.</p>")
            continue
        out.append(
            reliability_svg(
                {"before": before.get("reliability") or [], "after": after.get("reliability") or []}
            )
        )
        out.append(
            "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th></th>"
            "<th>top-label ECE</th><th>Brier</th><th>log loss</th><th>mean confidence</th><th>accuracy</th>"
            "<th>AUC ovo</th><th>largest mix error</th></tr>"
        )
        for name, m in (("before", before), ("after", after)):
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
            "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>cohort</th>"
            "<th>true</th><th>predicted before</th><th>predicted after</th></tr>"
        )
        for cohort, true in (mix_b.get("true") or {}).items():
            out.append(
                f"<tr><td>{html.escape(cohort)}</td><td>{_f(true)}</td>"
                f"<td>{_f((mix_b.get('predicted') or {}).get(cohort))}</td>"
                f"<td>{_f((mix_a.get('predicted') or {}).get(cohort))}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def comparison_html(
    results: Mapping[str, Mapping[str, Any]],
    drift: Mapping[str, Any] | None,
    *,
    demand_proxy: bool,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    sections: Sequence[str] = (),
) -> str:
    """results: task -> {"winner", "primary", "candidates": {name: {"kind", "info", "metrics"}}};
    ``sections``: more HTML fragments, at the end (e.g. :func:`hhpulse.monitor.monitor_html`)."""
    out = ["<html><body style='font-family:sans-serif'>", "<h1>hhpulse: candidate comparison</h1>"]
    if demand_proxy:
        out.append(
            "<p style='color:#b00'><b>WARNING:</b> demand labels use the age proxy (no closes in the data).</p>"
        )
    for task, res in results.items():
        out.append(
            f"<h2>{html.escape(task)}: winner <code>{html.escape(res['winner'])}</code> (by validation {html.escape(res['primary'])})</h2>"
        )
        out.append(
            "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>candidate</th><th>kind</th>"
            "<th>val AUC ovo</th><th>test AUC ovo</th><th>test AUC ovr</th><th>test AUC, responsibility only</th>"
            "<th>test macro-F1</th><th>test log loss</th><th>train s</th></tr>"
        )
        rows = []
        for name, c in sorted(res["candidates"].items()):
            m = c["metrics"]
            val, test, resp = m.get("val", {}), m.get("test", {}), m.get("test_resp", {})
            mark = (" ★" if name == res["winner"] else "") + (
                " (baseline)" if name == res.get("baseline") else ""
            )
            out.append(
                f"<tr><td>{html.escape(name)}{mark}</td><td>{html.escape(c['kind'])}</td><td>{_f(val.get('roc_auc_ovo'))}</td>"
                f"<td>{_f(test.get('roc_auc_ovo'))}</td><td>{_f(test.get('roc_auc_ovr'))}</td><td>{_f(resp.get('roc_auc_ovo'))}</td>"
                f"<td>{_f(test.get('f1_macro'))}</td><td>{_f(test.get('log_loss'))}</td><td>{_f(c['info'].get('train_seconds'))}</td></tr>"
            )
            rows.append((name, val.get("roc_auc_ovo"), test.get("roc_auc_ovo")))
        out.append(
            "</table><p>Bars: <span style='color:#4c78a8'>validation</span> and <span style='color:#f58518'>test</span> macro ROC AUC (OvO), axis from 0.5 to 1.</p>"
        )
        out.append(_bars(rows))
    if calibration:
        out.append(calibration_html(calibration))
    out.append("<h2>Drift against the champion's training data</h2>")
    if not drift:
        out.append("<p>No champion yet: nothing to compare with.</p>")
    else:
        out.append(
            f"<p>Overall: <b>{html.escape(str(drift.get('level')))}</b> (PSI &lt; 0.1 minor, &lt; 0.25 moderate, else major)</p><ul>"
        )
        for k, v in drift.items():
            if k not in ("level",):
                out.append(
                    f"<li>{html.escape(k)}: {_f(v) if not isinstance(v, list) else html.escape(', '.join(v))}</li>"
                )
        out.append("</ul>")
    out.extend(sections)
    out.append("</body></html>")
    return "\n".join(out)
