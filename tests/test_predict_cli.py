"""Batch prediction and evaluation on imperfect data: one input contract with the server,
error records instead of crashes, Unix-style I/O, --rates, and the training-overlap warning."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hhpulse.config import CandidateConfig
from hhpulse.data.collect import collect
from hhpulse.data.runs import list_runs, read_items
from hhpulse.data.sources import make_source
from hhpulse.data.store import LocalStore
from hhpulse.flows.workflow import history_from_data, train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.serving.inputs import Limits, RequestError, Tensor, parse_v1, parse_v2

CLI = [sys.executable, "-m", "hhpulse.cli"]
LINEAR = [
    CandidateConfig("salary-lr", "salary", "logreg", {"C": 4.0}),
    CandidateConfig("demand-lr", "demand", "logreg", {"C": 1.0}),
]


def hhpulse(*args: str, stdin: bytes | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture(scope="module")
def items_file(tmp_path_factory) -> Path:
    """A dump of API search items (one demo run), as a user would have from hh.ru."""
    store = LocalStore(tmp_path_factory.mktemp("demo"))
    collect(make_source("demo", demo_size=60), store, progress=False)
    items = read_items(store, list_runs(store)[0])
    path = tmp_path_factory.mktemp("data") / "items.jsonl"
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundle_dir(items_file, tmp_path_factory) -> Path:
    history, rates, _ = history_from_data(str(items_file))
    out = tmp_path_factory.mktemp("b") / "bundle"
    train_from_history(history, rates, out, candidates=LINEAR, device="cpu")
    return out


# -- one input contract -----------------------------------------------------------------------------
BAD_INSTANCES = [
    ({"responsibility": 5}, "non_string_field", "responsibility: must be a string, got int"),
    ({"responsibility": "ok", "name": ["x"]}, "non_string_field", "name: must be a string, got list"),
    ({"responsibility": "   "}, "empty_responsibility", "the responsibility text is empty"),
    ({"responsibility": None}, "missing_responsibility", "'responsibility' is required"),
    (7, "bad_instance", "must be a string or an object, got int"),
]


@pytest.mark.parametrize(("value", "reason", "text"), BAD_INSTANCES)
def test_batch_and_http_refuse_the_same_inputs_with_the_same_reason(value, reason, text):
    from hhpulse.model.inputs import InputError, check_instance

    with pytest.raises(InputError) as batch:
        check_instance(value, api_items=True)
    with pytest.raises(RequestError) as http:
        parse_v1({"instances": [value]}, Limits())
    assert batch.value.reason == http.value.reason == reason
    assert text in str(batch.value) and text in str(http.value)


@pytest.mark.parametrize(("value", "reason", "text"), BAD_INSTANCES)
def test_request_refuses_the_same_inputs_before_sending_them(tmp_path, value, reason, text):
    """`hhpulse request --input` checks its lines by the same contract (nothing listens on the URL)."""
    inp = tmp_path / "in.jsonl"
    inp.write_text('"Доставка"\n' + json.dumps(value) + "\n", encoding="utf-8")
    p = hhpulse("request", "--url", "http://127.0.0.1:9", "--input", str(inp), timeout=60)
    assert p.returncode == 2
    assert p.stderr.decode().startswith(f"hhpulse request: {inp}:2: ") and text in p.stderr.decode()


def test_fallback_to_name_and_requirement_is_the_same_in_batch_and_http():
    from hhpulse.model.inputs import InputError, check_instance

    item = {"id": 1, "name": "Курьер", "snippet": {"responsibility": None, "requirement": "Права B"}}
    inst = check_instance(item, api_items=True)
    assert (inst.responsibility, inst.name, inst.requirement) == ("", "Курьер", "Права B")
    assert parse_v1({"instances": [{"name": "Курьер", "requirement": "Права B"}]}, Limits()) == [inst]
    v2 = [Tensor("responsibility", "BYTES", [1], [""]), Tensor("name", "BYTES", [1], ["Курьер"])]
    assert parse_v2(v2, Limits())[0].name == "Курьер"
    # a model that reads only the responsibility has nothing to fall back on
    with pytest.raises(InputError, match="responsibility text is empty"):
        check_instance({"responsibility": "", "name": "Курьер"}, fields=("responsibility",))


# -- predict: every row that can be predicted is ----------------------------------------------------
def test_predict_keeps_going_past_bad_rows_and_says_why(bundle_dir, tmp_path):
    rows = [
        '{"id": 1, "name": "Курьер", "snippet": {"responsibility": "Доставка заказов", "requirement": "Права"}}',
        '{"id": 2, "name": "Курьер", "snippet": {"responsibility": null, "requirement": "Права B"}}',
        '{"id": 3, "name": null, "snippet": {"responsibility": null, "requirement": null}}',
        '{"id": 4, "responsibility": 5}',
        "{broken json",
        "",
        "[1, 2]",
        '"Продажи по телефону"',
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    p = hhpulse("predict", "--model", str(bundle_dir), "--input", str(inp))
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]  # stdout holds JSON lines only
    assert len(out) == 7  # one per non-blank line, in order
    assert [r.get("id") for r in out] == ["1", "2", "3", "4", None, None, None]
    assert out[0]["fields_used"] == ["responsibility", "name", "requirement"]
    assert out[1]["fields_used"] == ["name", "requirement"] and "salary" in out[1]
    assert out[6]["fields_used"] == ["responsibility"]
    errors = {r["line"]: r for r in out if "error" in r}
    assert sorted(errors) == [3, 4, 5, 7]
    assert errors[3]["reason"] == "missing_responsibility"
    assert errors[4] == {
        "id": "4",
        "line": 4,
        "reason": "non_string_field",
        "error": "responsibility: must be a string, got int",
    }
    assert errors[5]["reason"] == "bad_json" and errors[7]["reason"] == "bad_instance"
    bundle = load_bundle(bundle_dir)
    expected = bundle.predict(
        [{"responsibility": "Доставка заказов", "name": "Курьер", "requirement": "Права"}]
    )
    assert {k: v for k, v in out[0].items() if k not in ("id", "fields_used")} == expected[0]
    err = p.stderr.decode()
    assert "7 rows: 3 predicted (1 from name/requirement, without a responsibility), 4 failed" in err
    assert "bad_instance: 1, bad_json: 1, missing_responsibility: 1, non_string_field: 1" in err


def test_predict_strict_stops_at_the_first_bad_row(bundle_dir, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"responsibility": "ok"}\n{"responsibility": 5}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    p = hhpulse("predict", "--model", str(bundle_dir), "--input", str(inp), "--output", str(out), "--strict")
    assert p.returncode == 2
    assert "in.jsonl:2: responsibility: must be a string, got int" in p.stderr.decode()
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))  # nothing half-written


def test_predict_exits_1_when_no_row_can_be_predicted(bundle_dir):
    p = hhpulse("predict", "--model", str(bundle_dir), stdin=b'{"responsibility": ""}\n{oops\n')
    assert p.returncode == 1
    assert len(p.stdout.decode().splitlines()) == 2
    assert "no row could be predicted" in p.stderr.decode()


def test_predict_reads_stdin_writes_stdout_and_still_writes_files(bundle_dir, tmp_path):
    lines = (
        b'{"id": "a", "responsibility": "\xd0\x9f\xd1\x80\xd0\xbe\xd0\xb4\xd0\xb0\xd0\xb6\xd0\xb8"}\n"x"\n'
    )
    p = hhpulse(
        "predict", "--model", str(bundle_dir), "--input", "-", "--output", "-", stdin=gzip.compress(lines)
    )
    assert p.returncode == 0, p.stderr
    assert [json.loads(x).get("id") for x in p.stdout.decode().splitlines()] == ["a", None]
    assert b"2 predicted" in p.stderr and b"predicted" not in p.stdout
    out = tmp_path / "o.jsonl"
    p = hhpulse("predict", "--model", str(bundle_dir), "--output", str(out), stdin=lines)
    assert p.returncode == 0 and p.stdout == b""
    assert len(out.read_text().splitlines()) == 2
    assert not (Path.cwd() / "-").exists()


def test_predict_on_the_real_dump_predicts_every_row(bundle_dir, shared_hh, tmp_path):
    out = tmp_path / "real.jsonl"
    src = shared_hh / "vacancies_dev.api.jsonl.gz"
    p = hhpulse("predict", "--model", str(bundle_dir), "--input", str(src), "--output", str(out), timeout=300)
    assert p.returncode == 0, p.stderr
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 23742 and not [r for r in records if "error" in r]
    fallback = [r for r in records if "responsibility" not in r["fields_used"]]
    assert len(fallback) == 673
    assert "23742 predicted (673 from name/requirement" in p.stderr.decode()


# -- evaluate, train --------------------------------------------------------------------------------
def test_evaluate_warns_on_training_data_and_counts_bad_rows(bundle_dir, items_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(items_file.read_text() + "{broken\n[3]\n", encoding="utf-8")
    p = hhpulse("evaluate", "--model", str(bundle_dir), "--data", str(bad))
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert "2 left out by the data contract (unreadable: 2)" in err
    assert "were in model" in err and "training or validation data" in err and "optimistic" in err
    p = hhpulse("evaluate", "--model", str(bundle_dir), "--data", str(bad), "--strict")
    assert p.returncode == 2 and "--strict: 2 rows break the data contract" in p.stderr.decode()


def test_the_bundle_keeps_its_training_ids_under_the_manifest(bundle_dir, items_file):
    bundle = load_bundle(bundle_dir)
    manifest = json.loads((bundle_dir / "MANIFEST.json").read_text())
    assert "training_ids.npz" in manifest["files"]
    ids = [str(json.loads(x)["id"]) for x in items_file.read_text().splitlines()]
    seen, total = bundle.training_overlap(ids)
    # the published refit saw every labelled row (train, validation and test); the items without
    # a label (no salary, a young vacancy) it never saw
    fits = bundle.metadata["metrics"]["fits"]
    assert 0 < seen <= total == len(set(ids))
    assert seen >= max(f["published"]["rows"] for f in fits.values())
    assert bundle.training_overlap(["no-such-id"]) == (0, 1)


def test_rates_flag_reaches_the_file_import(items_file, tmp_path):
    from hhpulse.flows.workflow import load_data

    rates = tmp_path / "dictionaries.json"
    rates.write_text(json.dumps({"currency": [{"code": "RUR", "rate": 1}, {"code": "USD", "rate": 0.5}]}))
    data = load_data(str(items_file), rates=str(rates))
    assert list(data.rates_by_run.values()) == [{"RUR": 1.0, "USD": 0.5}]
    for command in ("train", "evaluate"):
        p = hhpulse(command, "--help")
        assert b"--rates" in p.stdout
    p = hhpulse(
        "train", "--data", str(items_file), "--out", str(tmp_path / "m"), "--rates", str(tmp_path / "nope")
    )
    assert p.returncode == 2 and b"cannot read currency rates" in p.stderr


def test_bundle_and_store_files_respect_the_umask(bundle_dir, tmp_path):
    from hhpulse.data.store import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        LocalStore(tmp_path / "s").put_bytes("raw/r/meta.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "s" / "raw" / "r" / "meta.json").stat().st_mode) == 0o644
    # the fixture's bundle was written under the test run's umask
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(bundle_dir.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((bundle_dir / "vectorizer" / "idf.npz").stat().st_mode) == 0o666 & ~mask


def test_unknown_flag_prints_the_subcommands_usage():
    p = hhpulse("predict", "--model", "m", "--bogus")
    err = p.stderr.decode()
    assert p.returncode == 2
    assert (
        "usage: hhpulse predict" in err and "hhpulse predict: error: unrecognized arguments: --bogus" in err
    )


def test_predict_store_uses_the_stores_champion_and_names_a_one_cohort_answer(bundle_dir, tmp_path):
    from hhpulse.data.store import LocalStore
    from hhpulse.model.registry import publish

    empty = hhpulse("predict", "--store", str(tmp_path / "empty"), "--input", "-", stdin=b'"x"\n')
    assert empty.returncode == 2 and b"no champion" in empty.stderr.lower()
    store = LocalStore(tmp_path / "store")
    version = publish(store, bundle_dir).version
    same = ["Доставка заказов клиентам"] * 30  # the same text: every row gets the same cohorts
    lines = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in same).encode()
    p = hhpulse("predict", "--store", str(store.root), "--input", "-", stdin=lines)
    assert p.returncode == 0, p.stderr
    assert {json.loads(x)["model_version"] for x in p.stdout.decode().splitlines()} == {version}
    err = p.stderr.decode()
    assert f"model {version}" in err
    for task in ("salary", "demand"):
        assert f"NOTE {task}: " in err and "is the predicted cohort for 30 of 30 rows (100.0%)" in err
    both = hhpulse("predict", "--store", str(store.root), "--model", str(bundle_dir), stdin=lines)
    assert both.returncode == 2 and b"not allowed with argument" in both.stderr
