"""Shared fixtures. Area-specific fixtures live in the test modules that use them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pipelines.e2e import free_port  # noqa: F401 - the tests import it from here
from pipelines.e2e import s3_server as moto_server
from pipelines.local import PrivateTmpdir

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HHPULSE_SHARED", REPO.parent / "shared"))
SHARED_HH = SHARED / "data" / "hh"
SHARED_SPECS = SHARED / "specs"

# The session's own temp directory: TMPDIR for the tests and every process they start
# (kfp.local's task folders, server logs, pytest's tmp_path), removed when the session
# passes; kept, and named in the summary, when a test failed, for a look at what it left.
_SESSION_TMP = PrivateTmpdir("hhpulse-tests-")


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None:
        return  # an xdist worker: its controller owns the folder
    _SESSION_TMP.open()  # pytest's tmp_path root follows (tempfile's directory), unless --basetemp


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SESSION_TMP.path is None:
        return
    failed = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    kept = _SESSION_TMP.path
    _SESSION_TMP.close(keep=failed)
    if failed:
        session.config.hhpulse_kept_tmp = kept  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    kept = getattr(terminalreporter.config, "hhpulse_kept_tmp", None)
    if kept is not None:
        terminalreporter.write_line(
            f"the failed session's temp files are kept in {kept} (remove it when done)"
        )


@pytest.fixture
def shared_hh() -> Path:
    """../shared/data/hh, or skip the test cleanly when it is absent."""
    if not (SHARED_HH / "vacancies_dev.api.jsonl.gz").is_file():
        pytest.skip(f"shared hh.ru data not found at {SHARED_HH}")
    return SHARED_HH


@pytest.fixture
def shared_specs() -> Path:
    """../shared/specs, or skip the test cleanly when it is absent."""
    if not SHARED_SPECS.is_dir():
        pytest.skip(f"shared specs not found at {SHARED_SPECS}")
    return SHARED_SPECS


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory):
    """Two daily runs of the demo market (40 vacancies a day) with history built: a small labelled
    store that tests train tiny bundles from. Shared by the session, so treat it as read-only."""
    from hhpulse.data.collect import collect
    from hhpulse.data.history_store import rebuild_history
    from hhpulse.data.sources import make_source
    from hhpulse.data.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("demo-store"))
    for _ in range(2):
        collect(make_source("demo", demo_size=40), store, progress=False)
    rebuild_history(store)
    return store


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 server (moto's ThreadedMotoServer) on 127.0.0.1, the one `make e2e` starts;
    yields its endpoint URL."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials in the standard AWS variables, pointed at the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HHPULSE_S3_ENDPOINT", s3_server)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh bucket on the moto server; returns its name."""
    import uuid

    import boto3

    name = f"hhpulse-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """An empty store on each backend: a folder, and a prefix in a fresh bucket on the moto server.
    (Test modules that need another kind of ``store`` define their own.)"""
    from hhpulse.data.store import LocalStore, open_store

    if request.param == "local":
        return LocalStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/some/prefix")


def run_together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released at the same moment (a barrier), as two runs started at
    once would; return each call's result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    out: list[object] = [None] * len(calls)

    def run(i: int, fn: Callable[[], object]) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as exc:  # the caller asserts on it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
