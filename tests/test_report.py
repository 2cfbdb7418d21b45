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
    from hhpulse.data.history_store import load_history, rates_by_run, window_summary
    from hhpulse.flows.pipeline_steps import report_header
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
    ds.summary["history_window"] = window_summary(demo_store, 180)  # as the dataset step records it
    html = comparison_html(
        {t: metrics[t] for t in ("salary", "demand")},
        drift,
        demand_proxy=bool(ds.summary.get("demand_proxy")),
        calibration=metrics["calibration"],
        label_lines=label_lines(ds.summary),
        header=report_header(demo_store, ds),
        summary=ds.summary,
    )
    verdict = judge(test_predictions(chal, ds), champ, ds).verdict
    doc = {
        "version": chal.version,
        "champion_version": champ.version,
        "challenger_wins": verdict["challenger_wins"],
        "reason": verdict["reason"],
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
    # what a reader sees first: the header (version, SYNTHETIC, source) and the verdict, then the sections
    text = probe["text"]
    first = text.index(probe["headings"][1])  # the first section after the page's title
    for seen in ("model version", "v-b", "SYNTHETIC", "data source", "Verdict: "):
        assert seen in text[:first], (seen, text[:first])
    assert "rows after calibration" in text  # the reliability bins, with their counts
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
    from hhpulse.model.evaluate import served_counts

    res = {
        "winner": "w",
        "candidates": {
            "w": {"metrics": {"test": {"confusion_matrix": [[5, 5], [5, 5]], "classes": ["a", "b"]}}}
        },
    }
    assert served_counts(res, None) == {"a": 10, "b": 10}
    cal = {"test": {"after": {"predicted": {"a": 0, "b": 20}}}}
    assert served_counts(res, cal) == {"a": 0, "b": 20}
    assert served_counts({}, None) == {}


# -- what the report and the model card say agrees with their numbers ---------------------------


def _task(winner_val, base_val, winner_score, base_score, winner_test=0.70, base_test=0.69, **extra):
    """A task's metrics.json entry: the winner and the TF-IDF + LR baseline, as select_winner writes it."""

    def cand(kind, val, score, test):
        return {
            "kind": kind,
            "info": {"train_seconds": 1.0},
            "selection_score": score,
            "metrics": {
                "val": {"roc_auc_ovo": val},
                "val_resp": {"roc_auc_ovo": 2 * score - val},
                "test": {"roc_auc_ovo": test, "confusion_matrix": [], "classes": []},
            },
        }

    return {
        "winner": "salary-logreg",
        "primary": "roc_auc_ovo",
        "baseline": "salary-baseline",
        "selection": {
            "rule": "both",
            "score": "mean of the validation roc_auc_ovo with all fields and with responsibility alone",
        },
        "candidates": {
            "salary-logreg": cand("logreg", winner_val, winner_score, winner_test),
            "salary-baseline": cand("logreg", base_val, base_score, base_test),
        },
        **extra,
    }


def test_the_report_and_the_card_name_the_rule_that_decided_and_agree_with_their_numbers():
    """On the real dump the baseline had the higher validation AUC (0.737 vs 0.733) and the
    winner the higher selection score: the page said "by validation roc_auc_ovo" and the card
    "validation 0.737 (winner 0.733) ... the winner ranks at least as well on validation"."""
    from hhpulse.model.bundle import baseline_line, model_card
    from hhpulse.model.train import TrainedCandidate

    salary = _task(winner_val=0.733, base_val=0.737, winner_score=0.672, base_score=0.661)
    page = comparison_html({"salary": salary}, None, demand_proxy=False)
    rule = "the selection score, the mean of the validation roc_auc_ovo with all fields and with responsibility alone"
    assert f"winner <code>salary-logreg</code> (by {rule})" in page
    assert "(by validation roc_auc_ovo)" not in page
    line = baseline_line(salary)
    assert (
        "selection score 0.661 (winner 0.672)" in line and "the winner has the higher selection score" in line
    )
    assert "at least as well on validation" not in line
    models = {
        t: TrainedCandidate(CandidateConfig(f"{t}-lr", t, "logreg"), ["a", "b"], None)
        for t in ("salary", "demand")
    }
    card = model_card(
        "v1", models, {"salary": ["a", "b"], "demand": ["a", "b"]}, {"salary": salary}, {"summary": {}}
    )
    assert f"chosen by {rule}" in card
    # every "X (winner Y)" the card writes agrees with the words after it
    for base, win, words in re.findall(
        r"selection score ([\d.]+) \(winner ([\d.]+)\)[^;]*;[^;]*; ([^\n]+)", card
    ):
        assert ("higher" in words) == (float(win) > float(base)), (base, win, words)
    # a tie goes to the other candidate, and the words say so; a baseline winner says why
    tie = baseline_line(_task(0.70, 0.71, 0.66, 0.66))
    assert "ties the baseline's selection score" in tie
    base_wins = baseline_line({**_task(0.70, 0.71, 0.65, 0.66), "winner": "salary-baseline"})
    assert "no candidate had a selection score at least as high" in base_wins


def test_figures_name_whether_they_are_calibrated():
    """The terminal printed 0.694 (after calibration) and the report 0.692 (the raw model) without
    saying which: every figure now says which it is."""
    from hhpulse.model.evaluate import served_auc

    salary = _task(0.73, 0.72, 0.68, 0.66, winner_test=0.692)
    cal = {
        "salary": {
            "method": "temperature",
            "temperature": 1.1,
            "test": {"before": {"roc_auc_ovo": 0.692}, "after": {"roc_auc_ovo": 0.694}},
        }
    }
    assert served_auc(salary, cal["salary"]) == (0.694, "after calibration")
    assert served_auc(salary, None) == (0.692, "uncalibrated")
    page = comparison_html({"salary": salary}, None, demand_proxy=False, calibration=cal)
    assert "test AUC ovo (uncalibrated)" in page
    assert "test AUC ovo 0.694 after calibration (0.692 uncalibrated" in page


def test_demand_at_chance_is_said_plainly_with_the_one_cohort_share():
    from hhpulse.model.evaluate import bundle_caveats, task_caveats

    demand = _task(0.51, 0.5, 0.505, 0.5, winner_test=0.507)
    demand["winner"], demand["candidates"] = "demand-x", {"demand-x": demand["candidates"]["salary-logreg"]}
    cal = {"test": {"after": {"roc_auc_ovo": 0.506, "predicted": {"high": 1383, "medium": 0, "low": 0}}}}
    c = task_caveats("demand", demand, cal, {"demand_proxy": True})
    assert c["reliable"] is False
    assert (
        c["caveats"][0]
        == "demand is no better than chance: test ROC AUC (OvO) 0.506 after calibration, where 0.5 is a coin toss"
    )
    assert "'high' is the predicted demand cohort for 1383 of 1383 test rows (100.0%)" in c["caveats"]
    assert any("age proxy" in x for x in c["caveats"])
    fine = _task(0.8, 0.7, 0.78, 0.7, winner_test=0.79)
    assert task_caveats("salary", fine, None, {})["reliable"] is True
    caveats = bundle_caveats(
        {"salary": fine, "demand": demand, "calibration": {"demand": cal}, "dataset": {}}
    )
    assert caveats["salary"]["reliable"] and not caveats["demand"]["reliable"]
    page = comparison_html({"demand": demand}, None, demand_proxy=False, calibration={"demand": cal})
    verdict = re.search(r"<p class='verdict'>.*?</p>", page, re.S)[0]
    assert "Do not rely on demand: demand is no better than chance" in html_text(verdict)


def html_text(fragment: str) -> str:
    import html as html_lib

    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_the_page_opens_with_a_header_and_the_verdict(page):
    """Before: no model version, source, date, window or SYNTHETIC tag anywhere, and the gate's
    verdict at the very bottom."""
    first_h2 = page.index("<h2")
    top = html_text(page[:first_h2])
    assert "model version v-b" in top  # with_gate filled it in
    assert "SYNTHETIC" in top and "data source the demo hh.ru emulator" in top
    for field in ("data dates", "training window", "history version", "report written"):
        assert field in top, field
    assert "Verdict:" in top and "Not judged yet" not in top
    assert re.search(r"Verdict: (Published|Not published)", top), top
    assert page.index("class='verdict'") < page.index("<h2")
    assert "<h2>Gate</h2>" in page  # the details stay at the end


def test_before_the_gate_the_page_says_it_is_not_judged_yet():
    salary = _task(0.73, 0.72, 0.68, 0.66)
    page = comparison_html({"salary": salary}, None, demand_proxy=False, header={"synthetic": False})
    top = html_text(page[: page.index("<h2")])
    assert "Verdict: Not judged yet" in top and "real data" in top and "SYNTHETIC" not in top
    assert "model version not built yet" in top
    done = with_gate(
        page,
        {
            "version": "v9",
            "champion_version": "v8",
            "challenger_wins": False,
            "reason": "champion stays: demand cannot be compared",
            "lines": ["champion stays: demand cannot be compared"],
        },
    )
    top = html_text(done[: done.index("<h2")])
    assert "model version v9" in top
    assert (
        "Verdict: Not published: champion v8 stays and challenger v9 is set aside: champion stays: demand cannot be compared."
        in top
    )


def test_reliability_diagrams_carry_their_bin_counts():
    """The demand curve dived to 0 at one bin with no count to explain it."""
    from hhpulse.model.report import calibration_html

    before = [{"bin": [0.3, 0.4], "count": 500, "confidence": 0.35, "accuracy": 0.4}]
    after = [
        {"bin": [0.3, 0.4], "count": 498, "confidence": 0.36, "accuracy": 0.41},
        {"bin": [0.9, 1.0], "count": 2, "confidence": 0.93, "accuracy": 0.0},
    ]
    out = calibration_html(
        {
            "demand": {
                "method": "temperature",
                "temperature": 1.0,
                "test": {"before": {"reliability": before}, "after": {"reliability": after}},
            }
        }
    )
    assert ">2</text>" in out and ">498</text>" in out  # the after dots are labelled with their rows
    row = re.search(r"<tr><td>0\.9 - 1\.0</td>(.*?)</tr>", out)[1]
    assert html_text(row).split() == ["0", "-", "-", "2", "0.930", "0.000"]
    assert "2 rows, confidence 0.93, accuracy 0.00" in out


def test_a_share_of_one_cohort_needs_enough_rows_to_mean_something():
    """`NOTE salary: 'ge_200k' is the predicted cohort for 2 of 2 rows (100.0%)`."""
    from hhpulse.model.evaluate import DOMINANT_MIN_ROWS, dominant_prediction

    assert dominant_prediction("salary", {"ge_200k": 2}) is None
    assert dominant_prediction("salary", {"ge_200k": DOMINANT_MIN_ROWS - 1}) is None
    assert dominant_prediction("salary", {"ge_200k": DOMINANT_MIN_ROWS}) is not None
