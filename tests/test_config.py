"""Configs: defaults file = dataclass defaults, round trips, partial files, exact errors."""

from __future__ import annotations

import json
import math

import pytest

from hhpulse.config import (
    CandidateConfig,
    ConfigError,
    DataConfig,
    FeatureConfig,
    LabelConfig,
    SplitConfig,
    defaults_path,
    load_candidates,
    load_config,
)


def test_packaged_defaults_equal_the_dataclass_defaults():
    assert load_config() == DataConfig()
    assert defaults_path("config.yaml").is_file()


@pytest.mark.parametrize("cfg", [LabelConfig(), FeatureConfig(), SplitConfig(), DataConfig()])
def test_round_trip_through_json(cfg):
    doc = json.loads(json.dumps(cfg.to_dict()))  # what a bundle stores
    assert type(cfg).from_dict(doc) == cfg


def test_open_top_band_is_null_in_json():
    bands = LabelConfig().to_dict()["salary_bands"]
    assert bands[-1] == ["ge_200k", 200_000.0, None]
    assert LabelConfig.from_dict({"salary_bands": bands}).salary_bands[-1][2] == math.inf


def test_partial_file_keeps_the_other_defaults(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("labels:\n  income_tax: 0.15\nsplit:\n  random: true\n", encoding="utf-8")
    cfg = load_config(p)
    assert cfg.labels.income_tax == 0.15 and cfg.split.random is True
    assert cfg.features == FeatureConfig() and cfg.labels.salary_bands == LabelConfig().salary_bands
    j = tmp_path / "cfg.json"
    j.write_text(json.dumps({"features": {"fields": ["responsibility"], "min_df": 1}}))
    assert load_config(j).features.fields == ("responsibility",)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("labels:\n  income_tx: 0.1\n", "unknown keys ['income_tx']"),
        ("label:\n  income_tax: 0.1\n", "unknown sections ['label']"),
        ("labels:\n  income_tax: '0.13'\n", "LabelConfig.income_tax: expected float, got str"),
        ("features:\n  min_df: 1.5\n", "FeatureConfig.min_df: expected int, got float"),
        ("split:\n  random: 'yes'\n", "SplitConfig.random: expected bool, got str"),
        ("features:\n  fields: [name]\n", "the responsibility field is required"),
        ("features:\n  fields: responsibility\n", "FeatureConfig.fields: expected tuple, got str"),
        ("features:\n  fields: [responsibility, title]\n", "unknown text fields ['title']"),
        ("split:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "sum below 1"),
        ("labels:\n  demand_high_days: 30\n", "0 < high_days < low_days"),
        ("labels:\n  min_monthly_rub: 5000000\n", "min_monthly_rub < max_monthly_rub"),
        ("labels: [1, 2]\n", "expected a mapping"),
        ("labels: {income_tax: [\n", "cannot read"),
    ],
)
def test_bad_files_raise_an_exact_error(tmp_path, doc, message):
    p = tmp_path / "bad.yaml"
    p.write_text(doc, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(p)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "bands",
    [
        (("a", 0, 100), ("b", 150, math.inf)),  # gap
        (("a", 0, 100), ("b", 90, math.inf)),  # overlap
        (("a", 0, 100), ("a", 100, math.inf)),  # duplicate name
        (),
    ],
)
def test_salary_bands_must_be_contiguous_and_named(bands):
    with pytest.raises(ConfigError):
        LabelConfig(salary_bands=bands)


def test_candidates_load_and_report_bad_entries(tmp_path):
    assert {c.task for c in load_candidates()} == {"salary", "demand"}
    p = tmp_path / "c.yaml"
    p.write_text("candidates:\n  - {name: x, task: salary}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"missing keys \['kind'\]"):
        load_candidates(p)
    with pytest.raises(ConfigError, match="task must be salary or demand"):
        CandidateConfig.from_dict({"name": "x", "task": "price", "kind": "logreg"})
