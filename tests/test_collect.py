"""The hh.ru collector against the bundled emulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
import requests

from hhpulse.data.collect import collect
from hhpulse.data.runs import list_runs, read_items
from hhpulse.data.sources import ApiSource, FileSource, SourceError, make_source
from hhpulse.data.store import LocalStore, open_store
from hhpulse.hh.client import CaptchaRequired, HHClient, HHError, user_agent
from hhpulse.hh.emulator import Emulator, Faults
from hhpulse.hh.market import Market

SMALL = Market(seed=3, daily_new=60)  # about 1,300 open vacancies on day 60


def _api(emu: Emulator, **kw) -> ApiSource:
    kw.setdefault("queries", ("",))
    kw.setdefault("area", None)
    return ApiSource(api_url=emu.url, rps=0, backoff_base=0.001, now=SMALL.clock(emu.state.day), **kw)


def test_gets_every_vacancy_past_the_2000_depth_cap(tmp_path):
    big = Market(seed=5, daily_new=150)
    with Emulator(big, day=60) as emu:
        expected = {i["id"] for i in big.items(60)}
        assert len(expected) > 2000
        # the emulator enforces the real caps
        ua = {"HH-User-Agent": user_agent("t@example.com")}
        r = requests.get(f"{emu.url}/vacancies", params={"per_page": 100, "page": 20}, headers=ua, timeout=5)
        assert r.status_code == 400 and r.json()["errors"][0] == {"type": "bad_argument", "value": "page"}
        r = requests.get(f"{emu.url}/vacancies", params={"per_page": 101}, headers=ua, timeout=5)
        assert r.status_code == 400 and r.json()["bad_argument"] == "per_page"
        body = requests.get(f"{emu.url}/vacancies", params={"per_page": 100}, headers=ua, timeout=5).json()
        assert body["found"] == len(expected) and body["pages"] == 20
        source = ApiSource(api_url=emu.url, queries=("",), area=None, rps=0, now=big.clock(60))
        result = collect(source, LocalStore(tmp_path))
    items = read_items(LocalStore(tmp_path), result.run_id)
    assert {i["id"] for i in items} == expected
    assert result.complete and result.meta["coverage"]["truncated"] == []
    assert result.meta["counts"]["items"] == len(expected)


def test_survives_injected_429_and_503(tmp_path):
    faults = Faults(script=[429, 503, 503, 0, 429], every=7, retry_after=0)
    with Emulator(SMALL, day=60, faults=faults) as emu:
        result = collect(_api(emu), LocalStore(tmp_path))
        served = emu.state.vacancy_requests
    assert result.ok and result.complete
    assert result.items == len(SMALL.items(60))
    assert result.meta["counts"]["retries"] >= 4
    assert served == result.meta["counts"]["requests"] - 1  # all but /dictionaries


def test_retry_after_is_honoured():
    waits: list[float] = []
    with Emulator(SMALL, day=60, faults=Faults(script=[429], retry_after=3)) as emu:
        client = HHClient(emu.url, rps=0, backoff_base=0.001, sleep=waits.append)
        client.search_page("")
    assert waits and waits[0] >= 3


def test_deduplicates_shifted_pages(tmp_path):
    with Emulator(SMALL, day=60, faults=Faults(shift=7)) as emu:
        result = collect(_api(emu), LocalStore(tmp_path))
    items = read_items(LocalStore(tmp_path), result.run_id)
    assert result.meta["counts"]["duplicates_dropped"] > 0
    assert len(items) == len({i["id"] for i in items})


def test_refuses_to_run_without_user_agent():
    with Emulator(SMALL, day=60) as emu:
        r = requests.get(f"{emu.url}/vacancies", headers={"User-Agent": ""}, timeout=5)
        assert r.status_code == 400 and r.json()["errors"][0]["type"] == "bad_user_agent"
        r = requests.get(f"{emu.url}/vacancies", timeout=5)  # python-requests/x is not an app agent
        assert r.status_code == 400
        client = HHClient(emu.url, rps=0, contact="ops@example.com")
        assert client._session.headers["HH-User-Agent"].startswith("hhpulse/")
        assert "ops@example.com" in client._session.headers["HH-User-Agent"]
        client._session.headers.pop("HH-User-Agent")
        with pytest.raises(HHError, match="user agent"):
            client.search_page("")


def test_token_is_sent_as_bearer(monkeypatch):
    monkeypatch.setenv("HH_ACCESS_TOKEN", "s3cr3t")
    with Emulator(SMALL, day=60, faults=Faults(captcha_after=1)) as emu:
        client = HHClient(emu.url, rps=0)
        for _ in range(3):  # authorized requests are exempt from the captcha
            client.search_page("")
    assert client._session.headers["Authorization"] == "Bearer s3cr3t"


def test_captcha_stops_cleanly_and_keeps_what_was_collected(tmp_path):
    with Emulator(SMALL, day=60, faults=Faults(captcha_after=2)) as emu:
        client = HHClient(emu.url, rps=0)
        client.search_page("")
        client.search_page("")
        with pytest.raises(CaptchaRequired, match="HH_ACCESS_TOKEN"):
            client.search_page("")
    store = LocalStore(tmp_path)
    with Emulator(SMALL, day=60, faults=Faults(captcha_after=4)) as emu:
        result = collect(_api(emu, per_page=100), store)
    assert not result.ok and not result.complete
    assert "captcha" in result.stop_reason
    assert result.items == 400  # four pages were served before the captcha
    meta = store.get_json(f"raw/{result.run_id}/meta.json")
    assert meta["stop_reason"] == result.stop_reason and meta["complete"] is False


def test_cli_exits_non_zero_on_captcha_and_stores_the_run(tmp_path):
    with Emulator(SMALL, day=60, faults=Faults(captcha_after=2)) as emu:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "hhpulse.cli",
                "collect",
                "--source",
                "api",
                "--api-url",
                emu.url,
                "--query",
                "",
                "--area",
                "",
                "--rps",
                "0",
                "--collected-at",
                SMALL.clock(60).isoformat(),
                "--store",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "stopped early" in proc.stderr and "captcha" in proc.stderr
    runs = list_runs(LocalStore(tmp_path))
    assert len(runs) == 1 and len(read_items(LocalStore(tmp_path), runs[0])) == 200


def test_query_and_highlight(tmp_path):
    with Emulator(SMALL, day=60) as emu:
        result = collect(_api(emu, queries=("Kubernetes",)), LocalStore(tmp_path))
    items = read_items(LocalStore(tmp_path), result.run_id)
    assert items and all(
        "<highlighttext>Kubernetes</highlighttext>" in json.dumps(i, ensure_ascii=False) for i in items
    )
    assert result.meta["coverage"]["queries"] == ["Kubernetes"]


def test_second_run_is_append_only(tmp_path):
    store = LocalStore(tmp_path)
    first = collect(make_source("demo", demo_size=40), store)
    before = {k: store.get_bytes(k) for k in store.list("raw/")}
    second = collect(make_source("demo", demo_size=40), store)
    assert second.run_id != first.run_id
    assert {k: store.get_bytes(k) for k in before} == before
    assert store.get_json(f"raw/{second.run_id}/meta.json")["source"]["day"] == 61  # moved a day
    assert first.meta["synthetic"] is True


@pytest.mark.parametrize("form", ["jsonl", "jsonl.gz", "page", "list"])
def test_file_import_forms(tmp_path, form):
    items = SMALL.items(60)[:30]
    items[0] = {**items[0], "collected_at": "2026-03-01T10:00:00+00:00"}
    path = tmp_path / f"dump.{form}"
    if form.startswith("jsonl"):
        text = "\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n"
        data = gzip.compress(text.encode()) if form.endswith("gz") else text.encode()
        path.write_bytes(data)
    elif form == "page":
        path.write_text(json.dumps({"items": items, "found": 30, "pages": 1}, ensure_ascii=False))
    else:
        path.write_text(json.dumps(items, ensure_ascii=False))
    result = collect(
        make_source(f"file:{path}", collected_at="2026-03-02T00:00:00Z"), LocalStore(tmp_path / "s")
    )
    stored = read_items(LocalStore(tmp_path / "s"), result.run_id)
    assert len(stored) == 30
    assert stored[0]["collected_at"] == "2026-03-01T10:00:00+00:00"  # the item's own wins
    assert stored[1]["collected_at"].startswith("2026-03-02T00:00:00")
    assert result.meta["coverage"]["complete"] is False  # a dump never proves a close


def test_file_import_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        make_source(f"file:{tmp_path}/nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1"}\n{broken\n')
    source = FileSource(path=bad)
    assert [i["id"] for i in source.fetch()] == ["1"]  # a broken line is kept aside, not fatal
    assert [(r["line"], r["reason"]) for r in source.rejected()] == [(2, "bad_json")]
    whole = tmp_path / "whole.json"
    whole.write_text('[{"id": "1"}, oops]')
    with pytest.raises(SourceError, match=r"whole.json:1: not valid JSON"):
        list(FileSource(path=whole).fetch())
    with pytest.raises(SourceError, match="unknown source"):
        make_source("ftp")


def test_shared_real_dump_imports(tmp_path, shared_hh):
    head = tmp_path / "head.jsonl"
    with gzip.open(shared_hh / "vacancies_dev.api.jsonl.gz", "rt", encoding="utf-8") as fh:
        head.write_text("".join(next(fh) for _ in range(500)), encoding="utf-8")
    rates = shared_hh / "api_samples" / "dictionaries_2024-12.json"
    result = collect(make_source(f"file:{head}", rates=rates), LocalStore(tmp_path / "s"))
    assert result.items == 500
    assert result.meta["currency_rates"]["USD"] == pytest.approx(0.010782)
    # the emulator's items have the real search item's shape
    real = json.loads(
        (shared_hh / "api_samples" / "vacancies_search_page_2025-11_per_page5.json").read_text()
    )
    fake = SMALL.items(60)[0]
    core = {
        "id",
        "name",
        "area",
        "salary",
        "published_at",
        "created_at",
        "snippet",
        "employer",
        "archived",
        "schedule",
        "experience",
        "employment",
        "professional_roles",
        "type",
        "alternate_url",
    }
    assert core <= set(real["items"][0]) and core <= set(fake)
    assert set(real["items"][0]["snippet"]) == set(fake["snippet"])
    assert set(real["items"][0]["salary"]) <= set(fake["salary"] or real["items"][0]["salary"]) | {
        "from",
        "to",
    }


def test_collect_into_s3(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/hh")
    result = collect(make_source("demo", demo_size=20), store)
    assert store.exists(f"raw/{result.run_id}/meta.json")
    assert len(read_items(store, result.run_id)) == result.items > 0


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if k != "HHPULSE_CONTACT"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "hhpulse.cli", *args], capture_output=True, text=True, timeout=120, env=full
    )


def test_hh_ru_without_a_contact_is_refused_before_anything_starts(tmp_path):
    """A run against hh.ru started without the contact its HH-User-Agent header needs."""
    for command in ("collect", "run"):
        p = _cli(command, "--source", "api", "--store", str(tmp_path / command))
        assert p.returncode == 2, p.stdout + p.stderr
        assert "HH-User-Agent" in p.stderr and "--contact" in p.stderr and "HHPULSE_CONTACT" in p.stderr
        assert "Traceback" not in p.stderr and not (tmp_path / command).exists()


def test_a_run_that_collected_nothing_leaves_the_store_as_it_was(tmp_path):
    """No network: retries, then a clear message, yet the store said `"data": "real"` and kept an
    empty raw run. Now a failure before the first item writes nothing."""
    from conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = tmp_path / "store"
    p = _cli("collect", "--source", "api", "--api-url", dead, "--max-retries", "0", "--store", str(store))
    assert p.returncode == 1, p.stdout + p.stderr
    assert (
        "nothing was collected" in p.stderr
        and "store is unchanged" in p.stderr
        and "Traceback" not in p.stderr
    )
    st = LocalStore(store)
    assert not st.exists("store.json") and list_runs(st) == [] and not st.list("raw/")
    # the same source that succeeds marks the store (real data) with its run
    with Emulator(SMALL, day=60) as emu:
        result = collect(_api(emu), st)
    assert st.get_json("store.json")["data"] == "real" and list_runs(st) == [result.run_id]
