"""report.html: its structure as written, and as headless Chromium renders it (skipped without it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from hhpulse.config import CandidateConfig, LabelConfig
from hhpulse.model.report import COLORS, DRIFT_NAMES, bars_svg, comparison_html, reliability_svg, with_gate

SECTIONS = ["salary: winner", "demand: winner", "Labels", "Calibration (test split)", "Drift against", "Gate"]
RAW_KEYS = re.compile(r"_psi\b|vocabulary_jaccard|new_top_terms|champion_version|\{'|\{\"")


@pytest.fixture(scope="module")
def page(demo_store, tmp_path_factory) -> str:
    """A report from a real tiny training run on the demo store, with drift and a gate verdict."""
    from hhpulse.data.history_store import load_history, rates_by_run
    from hhpulse.flows.workflow import judge, test_predictions, train_on_dataset
    from hhpulse.model.bundle import load_bundle
    from hhpulse.model.dataset import build_dataset, label_lines
    from hhpulse.model.evaluate import data_profile, drift_report

    root = tmp_path_factory.mktemp("report")
    cands = [CandidateConfig(f"{t}-lr", t, "logreg", {"C": 1.0}) for t in ("salary", "demand")]
    ds = build_dataset(load_history(demo_store), rates_by_run(demo_store))
    a = train_on_dataset(ds, root / "a", label_config=LabelConfig(), candidates=cands, version="v-a")
    b = train_on_dataset(ds, root / "b", label_config=LabelConfig(), candidates=cands, version="v-b")
    champ, chal = load_bundle(a.bundle_dir), load_bundle(b.bundle_dir)
    metrics = json.loads((chal.path / "metrics.json").read_text())
    current = data_profile({t: td.part("train") for t, td in ds.tasks.items()}, ["python", "sql"])
    drift = drift_report(champ.metadata.get("profile", {}), current)
    drift["champion_version"] = champ.version
    html = comparison_html(
        {t: metrics[t] for t in ("salary", "demand")},
        drift,
        demand_proxy=bool(ds.summary.get("demand_proxy")),
        calibration=metrics["calibration"],
        label_lines=label_lines(ds.summary),
    )
    verdict = judge(test_predictions(chal, ds), champ, ds).verdict
    doc = {
        "version": chal.version,
        "champion_version": champ.version,
        "lines": verdict["lines"],
        "margin": 0.0,
    }
    return with_gate(html, doc)


def test_the_page_has_every_section_sized_charts_and_no_raw_keys(page):
    headings = re.findall(r"<h[12][^>]*>(.*?)</h[12]>", page)
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), (section, headings)
    svgs = re.findall(r"<svg [^>]*>", page)
    assert len(svgs) >= 4 and all(re.search(r'width="\d+" height="\d+"', s) for s in svgs)
    text = re.sub(r"<[^>]+>", " ", page)
    assert not RAW_KEYS.search(text), RAW_KEYS.search(text)
    assert DRIFT_NAMES["vocabulary_jaccard"].split(" (")[0] in text


def test_charts_have_axes_with_tick_values_and_one_colour_per_meaning():
    bars = bars_svg([("a", 0.71, 0.66), ("b", None, 0.9)])
    assert all(f">{t}</text>" in bars for t in ("0.5", "0.6", "0.7", "0.8", "0.9", "1.0"))
    assert "macro ROC AUC (OvO)" in bars and ">n/a</text>" in bars
    assert bars.count(COLORS["validation"]) == 2 and bars.count(COLORS["test"]) == 2
    rows = [
        {"confidence": 0.6, "accuracy": 0.5, "count": 10},
        {"confidence": 0.9, "accuracy": 0.8, "count": 5},
    ]
    rel = reliability_svg({"before": rows, "after": rows})
    assert ">0.0</text>" in rel and ">1.0</text>" in rel and "accuracy" in rel
    assert COLORS["before calibration"] in rel and COLORS["after calibration"] in rel
    assert COLORS["test"] not in rel and COLORS["validation"] not in rel  # those mean something else
    assert len(set(COLORS.values())) == len(COLORS)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [e.tagName, Math.round(r.width), Math.round(r.height)]; };
document.body.setAttribute("data-probe", JSON.stringify({
  images: [...document.querySelectorAll("svg, img")].map(box),
  headings: [...document.querySelectorAll("h1, h2")].map(h => h.textContent),
  text: document.body.innerText,
}));
</script>"""


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_headless_chromium_renders_every_section_and_every_chart_with_a_size(page, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("HHPULSE_REQUIRE_BROWSER"):  # CI (.ci/run) installs it: never skip there
            pytest.fail("HHPULSE_REQUIRE_BROWSER is set but chromium is not installed (make browser)")
        pytest.skip("chromium is not installed (make browser, or apt-get install chromium)")
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium("--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    import html as html_lib

    probe = json.loads(html_lib.unescape(found[1]))
    for section in SECTIONS:
        assert any(h.startswith(section) for h in probe["headings"]), (section, probe["headings"])
    assert probe["images"] and all(w > 50 and h > 50 for _, w, h in probe["images"]), probe["images"]
    assert not RAW_KEYS.search(probe["text"])
    # the screenshot itself: a real PNG of the page's size
    shot = tmp_path / "report.png"
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    out = _chromium(f"--screenshot={shot}", "--window-size=1200,2400", (tmp_path / "report.html").as_uri())
    assert out.returncode == 0 and shot.stat().st_size > 20_000, out.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1200 and int.from_bytes(png[20:24], "big") == 2400
    keep = os.environ.get("HHPULSE_REPORT_SHOT")  # to look at it: HHPULSE_REPORT_SHOT=/tmp/r.png
    if keep:
        shutil.copy(shot, keep)


def test_a_task_predicting_one_cohort_is_said_plainly_in_the_report():
    from hhpulse.model.evaluate import dominant_prediction, predicted_counts

    cm = [[0, 0, 90], [0, 0, 5], [0, 1, 4]]  # true rows x predicted columns
    counts = predicted_counts(cm, ["low", "medium", "high"])
    assert counts == {"low": 0, "medium": 1, "high": 99}
    line = dominant_prediction("demand", counts)
    assert line and "'high' is the predicted cohort for 99 of 100 rows (99.0%)" in line
    assert dominant_prediction("demand", {"low": 50, "high": 50}) is None
    assert dominant_prediction("demand", {}) is None
    test = {"roc_auc_ovo": 0.6, "confusion_matrix": cm, "classes": ["low", "medium", "high"], "notes": []}
    res = {
        "demand": {
            "winner": "d",
            "primary": "roc_auc_ovo",
            "candidates": {"d": {"kind": "logreg", "info": {}, "metrics": {"val": {}, "test": test}}},
        }
    }
    page = comparison_html(res, None, demand_proxy=False)
    assert "<b>One cohort:</b> demand: &#x27;high&#x27; is the predicted cohort for 99 of 100 rows" in page


def test_the_model_card_says_so_too():
    from hhpulse.model.bundle import model_card
    from hhpulse.model.train import TrainedCandidate

    models = {
        t: TrainedCandidate(CandidateConfig(f"{t}-lr", t, "logreg"), ["a", "b"], None)
        for t in ("salary", "demand")
    }
    one = {
        "winner": "demand-lr",
        "candidates": {
            "demand-lr": {
                "metrics": {"test": {"confusion_matrix": [[0, 40], [0, 60]], "classes": ["a", "b"]}}
            }
        },
    }
    card = model_card(
        "v1", models, {"salary": ["a", "b"], "demand": ["a", "b"]}, {"demand": one}, {"summary": {}}
    )
    assert "**One cohort:** demand: 'b' is the predicted cohort for 100 of 100 rows (100.0%)" in card
    assert "salary: 'b'" not in card


def test_the_served_probabilities_decide_not_the_raw_model():
    from hhpulse.model.report import served_counts

    res = {
        "winner": "w",
        "candidates": {
            "w": {"metrics": {"test": {"confusion_matrix": [[5, 5], [5, 5]], "classes": ["a", "b"]}}}
        },
    }
    assert served_counts("demand", res, None) == {"a": 10, "b": 10}
    cal = {"demand": {"test": {"after": {"predicted": {"a": 0, "b": 20}}}}}
    assert served_counts("demand", res, cal) == {"a": 0, "b": 20}
    assert served_counts("demand", {}, None) == {}
