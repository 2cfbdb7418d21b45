"""The candidate comparison report (HTML, shown by the Kubeflow UI), with plots and drift."""

from __future__ import annotations

import html
from collections.abc import Mapping
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


def comparison_html(
    results: Mapping[str, Mapping[str, Any]], drift: Mapping[str, Any] | None, *, demand_proxy: bool
) -> str:
    """results: task -> {"winner", "primary", "candidates": {name: {"kind", "info", "metrics"}}}."""
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
            mark = " ★" if name == res["winner"] else ""
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
    out.append("</body></html>")
    return "\n".join(out)
