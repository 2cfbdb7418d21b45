"""The demo source in process (no HTTP server) against the emulator over real HTTP on 127.0.0.1:
the same items, field for field and in the same order, the same answers to faults."""

from __future__ import annotations

import pytest

from hhpulse.data.collect import collect
from hhpulse.data.runs import read_items
from hhpulse.data.sources import DemoSource, SourceError, make_source
from hhpulse.data.store import LocalStore
from hhpulse.hh.client import CaptchaRequired, HHClient, RetriesExhausted
from hhpulse.hh.emulator import Emulator, Faults, InProcessEmulator
from hhpulse.hh.market import Market


def _items(transport: str, day: int, size: int) -> tuple[list[dict], DemoSource]:
    source = make_source("demo", demo_size=size, demo_day=day, demo_transport=transport)
    assert isinstance(source, DemoSource)
    return list(source.fetch()), source


@pytest.mark.parametrize(("day", "size"), [(60, 150), (61, 150), (95, 40), (130, 400)])
def test_in_process_items_equal_the_emulators_over_http(day, size):
    over_http, http_source = _items("http", day, size)
    in_process, source = _items("in-process", day, size)
    assert len(over_http) > 0
    assert in_process == over_http  # same ids, same fields, same order
    # the same requests were sent: the split past the 2000-result cap did not change
    assert source.stats().requests == http_source.stats().requests
    assert source.stats().pages == http_source.stats().pages
    assert source.coverage() == http_source.coverage() and source.coverage()["complete"]
    assert source.currency_rates() == http_source.currency_rates()
    if size * 20 > 2000:  # enough open vacancies that the window had to be split
        assert source.stats().pages > 20


def test_collected_runs_are_byte_identical(tmp_path):
    runs = {}
    for transport in ("http", "in-process"):
        store = LocalStore(tmp_path / transport)
        source = make_source("demo", demo_size=150, demo_day=70, demo_transport=transport)
        result = collect(source, store, progress=False)
        assert result.complete
        runs[transport] = (store, result)
    (hs, hr), (ps, pr) = runs["http"], runs["in-process"]
    assert hs.get_bytes(f"raw/{hr.run_id}/vacancies.jsonl.gz") == ps.get_bytes(
        f"raw/{pr.run_id}/vacancies.jsonl.gz"
    )
    assert read_items(ps, pr.run_id)[0]["collected_at"] == hr.meta["collected_at"]
    assert pr.meta["source"] == {**hr.meta["source"], "transport": "in-process"}
    for key in ("counts", "coverage", "currency_rates", "collected_at", "complete"):
        assert pr.meta[key] == hr.meta[key], key


def test_prepare_advances_the_day_from_in_process_runs_too(tmp_path):
    store = LocalStore(tmp_path)
    days = []
    for _ in range(2):
        source = make_source("demo", demo_size=30, demo_transport="in-process")
        collect(source, store, progress=False)
        days.append(source.day)
    assert days == [60, 61]


def _answers(client: HHClient) -> list[int | str]:
    out: list[int | str] = []
    for _ in range(3):
        try:
            out.append(client.search_page("", per_page=10)["found"])
        except CaptchaRequired:
            out.append("captcha")
    return out


def test_faults_are_answered_the_same_in_process():
    market = Market(seed=3, daily_new=20)
    seen = {}
    for kind in ("http", "in-process"):
        faults = Faults(script=[429, 0], retry_after=0, captcha_after=2)
        emulator = (
            Emulator(market, day=60, faults=faults)
            if kind == "http"
            else InProcessEmulator(market, 60, faults)
        )
        with emulator as emu:
            client = HHClient(emu.url, rps=0, backoff_base=0.001, max_retries=1)
            if kind == "in-process":
                client.mount(emu.adapter)
            seen[kind] = (_answers(client), client.stats.retries, emu.state.vacancy_requests)
    assert seen["in-process"] == seen["http"]
    assert seen["http"][0][-1] == "captcha" and seen["http"][1] == 1


def test_exhausted_retries_and_bad_arguments_in_process():
    with InProcessEmulator(Market(seed=3, daily_new=20), 60, Faults(every=1)) as emu:
        client = HHClient(emu.url, rps=0, backoff_base=0.001, max_retries=2)
        client.mount(emu.adapter)
        with pytest.raises(RetriesExhausted, match="HTTP 503"):
            client.search_page("")
    with InProcessEmulator(Market(seed=3, daily_new=20), 60) as emu:
        client = HHClient(emu.url, rps=0)
        client.mount(emu.adapter)
        with pytest.raises(Exception, match="HTTP 400"):
            client.search_page("", page=20, per_page=100)
        assert client.currency_rates()["RUR"] == 1.0


def test_unknown_transport_is_refused():
    with pytest.raises(SourceError, match="in-process"):
        make_source("demo", demo_transport="pigeon")
