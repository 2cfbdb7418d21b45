"""Run the pipeline on this machine with kfp.local: the embedded default behind ``make run``.

kfp.local prints a lot while it runs: every task's executor input as JSON, its streamed
output, its outputs, and a warning per task that the runner ignores resources and base
images. :func:`run_local` sends all of that to a log file (colour codes stripped), reports
one event per step (name, status, seconds, and for a failed step its error, taken from the
step's traceback), and puts the log and the failed step's real name and error into the run's
``runs/<time>-<id>/`` folder next to ``outcome.json``.

kfp.local's lightweight components write their code to ``$(mktemp -d)/ephemeral_component.py``
and never remove it: one folder per task in the temp directory, every run. A run therefore
gets a temp directory of its own (:class:`PrivateTmpdir`: ``TMPDIR`` for its processes),
removed with everything in it when the run ends, failed or not.

How kfp.local 2.17 reports, and so what is captured here: it logs through the root logger,
to a handler on ``sys.stdout`` that it installs for each task; it prints a task's output
(stdout and stderr merged) with ``print``; it warns with :mod:`warnings`. The step events
come from its log lines ``Executing task 'NAME'``, ``Task 'NAME' finished with status S``
and ``Skipping [conditional] task NAME``; the whole-pipeline test keeps them honest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from hhpulse.model.report import REPORT_NAME

log = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_START = re.compile(r"Executing task '(?P<task>[^']+)'")
_END = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_SKIP = re.compile(r"Skipping (?P<cond>conditional )?task (?P<task>[\w.-]+)")
_TRACEBACK = "Traceback (most recent call last):"
# a step that names itself in its output ("hhpulse step: train XGBoost candidate (salary)"): the
# iterations of a ParallelFor share one display name, and KFP has no per-iteration display name
_NAMED = re.compile(r"^\s*hhpulse step: (?P<name>.+?)\s*$")
LOG_NAME = "pipeline.log"


class PrivateTmpdir:
    """A temp directory of its own for what runs inside: a new folder in the current temp
    directory becomes ``TMPDIR`` (inherited by every child process, where ``mktemp`` and
    Python's :mod:`tempfile` look) and :mod:`tempfile`'s directory in this process; on leaving,
    both are restored and the folder is removed with everything in it.

    ``with PrivateTmpdir("hhpulse-run-") as tmp: ...``, or :meth:`open` and :meth:`close`
    (``keep=True`` leaves the folder, e.g. for a failed test session to inspect).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path: Path | None = None
        self._saved: tuple[str | None, str | None] = (None, None)

    def open(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix))
        self._saved = (os.environ.get("TMPDIR"), tempfile.tempdir)
        os.environ["TMPDIR"] = tempfile.tempdir = str(self.path)
        return self.path

    def close(self, *, keep: bool = False) -> None:
        if self.path is None:
            return
        env, tempdir = self._saved
        if env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env
        tempfile.tempdir = tempdir
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)
        self.path = None

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes."""
    return ANSI.sub("", text)


@dataclass
class Step:
    """One step as kfp.local ran it."""

    task: str  # the pipeline's task name (collect-vacancies)
    name: str  # its display name (collect vacancies)
    status: str  # ok | failed | skipped
    seconds: float | None = None
    error: str | None = None  # a failed step's error: its traceback's last line
    why: str = ""  # why a step was skipped

    def line(self) -> str:
        secs = f"{self.seconds:6.1f}s" if self.seconds is not None else "      -"
        extra = f"  ({self.why})" if self.why else ""
        return f"  {self.name:<36} {self.status:<8}{secs}{extra}"


def error_of(lines: list[str]) -> str | None:
    """The exception line of the last traceback in a step's output (None without one)."""
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if not starts:
        return None
    head = lines[starts[-1]]
    indent = len(head) - len(head.lstrip())
    message: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        if not line.strip():
            if message:
                break
            continue
        depth = len(line) - len(line.lstrip())
        if depth > indent and not message:
            continue  # a frame of the traceback
        if depth < indent or line.lstrip().startswith("[KFP Executor"):
            break
        message.append(line.strip())
    return "\n".join(message) or None


class TaskLog(io.TextIOBase):
    """Where kfp.local's output goes while the pipeline runs.

    Every line goes to ``path`` without colour codes; to ``echo`` too when given (with its
    colours only if ``echo`` is a terminal); and step events go to ``on_step``.
    """

    def __init__(
        self,
        path: Path,
        *,
        names: dict[str, str] | None = None,
        on_step: Callable[[Step], None] | None = None,
        echo: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._names = names or {}
        self._on_step = on_step
        self._echo = echo
        self._echo_colour = bool(echo is not None and _isatty(echo))
        self._buf = ""
        self._task: str | None = None
        self._started = 0.0
        self._lines: list[str] = []
        self.steps: list[Step] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(s)

    def flush(self) -> None:
        self._file.flush()
        if self._echo is not None:
            self._echo.flush()

    def close(self) -> None:
        if self.closed:
            return
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        super().close()  # flushes
        self._file.close()

    def _line(self, raw: str) -> None:
        plain = strip_ansi(raw)
        self._file.write(plain + "\n")
        if self._echo is not None:
            self._echo.write((raw if self._echo_colour else plain) + "\n")
        if m := _START.search(plain):
            self._task, self._started, self._lines = m["task"], time.monotonic(), []
        elif m := _END.search(plain):
            task = m["task"]
            ok = m["status"] == "SUCCESS"
            secs = time.monotonic() - self._started if task == self._task else None
            error = None if ok else (error_of(self._lines) or _last_words(self._lines))
            named = [m["name"] for ln in self._lines if (m := _NAMED.match(ln))] if task == self._task else []
            name = named[-1] if named else self._name(task)
            self._step(Step(task, name, "ok" if ok else "failed", secs, error))
            self._task, self._lines = None, []
        elif m := _SKIP.search(plain):
            why = "condition false" if m["cond"] else "an earlier step failed"
            self._step(Step(m["task"], self._name(m["task"]), "skipped", why=why))
        elif self._task is not None:
            self._lines.append(plain)

    def _name(self, task: str) -> str:
        return self._names.get(task, task)

    def _step(self, step: Step) -> None:
        self.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)


def _last_words(lines: list[str]) -> str | None:
    text = [ln.strip() for ln in lines if ln.strip()]
    return text[-1] if text else None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def display_names(pipeline: Any) -> dict[str, str]:
    """Task name -> display name (``set_display_name``, or the ParallelFor/If name) in the pipeline."""
    spec = pipeline.pipeline_spec
    names: dict[str, str] = {}
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    for dag in dags:
        for task, ts in dag.tasks.items():
            if ts.task_info.name and ts.task_info.name != task:
                names[task] = ts.task_info.name
    return names


class PipelineFailed(RuntimeError):
    """The local run failed; ``result`` holds what :func:`run_local` knows (steps, failed step, log)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


@contextlib.contextmanager
def _captured(task_log: TaskLog):  # type: ignore[no-untyped-def]
    """Route kfp.local's prints, root-logger records and warnings into ``task_log``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handler = logging.StreamHandler(task_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

    def to_log(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        task_log.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(task_log):
            warnings.simplefilter("default")
            warnings.showwarning = to_log
            yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_local(
    store: str,
    *,
    pipeline_root: str | None = None,
    runner: Any = None,
    on_step: Callable[[Step], None] | None = None,
    echo: TextIO | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Run every step locally and return what happened; raise :class:`PipelineFailed` if a step failed.

    ``runner`` is a kfp.local runner (default: ``SubprocessRunner(use_venv=False)``, so our
    package imports). The store is a local folder (or s3:// with an endpoint); deploy renders
    the InferenceService into the store instead of applying it. kfp.local's output goes to
    ``runs/<time>-<id>/pipeline.log`` in the store (and to ``echo`` as it comes, if given);
    ``on_step`` gets one :class:`Step` per step as it ends.

    The result: ``seconds``, ``steps``, ``failed`` (the first failed Step or None),
    ``outcome`` (the outcome record's key) and ``log`` (the log's address), ``store``,
    ``pipeline_root``.
    """
    from kfp import local

    from hhpulse.data.store import open_store
    from hhpulse.flows.outcome import complete_outcome
    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    store = str(Path(store).resolve()) if "://" not in store else store
    root = pipeline_root or os.path.join(
        os.path.dirname(store) if "://" not in store else ".hhpulse", "kfp-local"
    )
    os.makedirs(root, exist_ok=True)
    st = open_store(store, endpoint_url=params.get("s3_endpoint") or None)
    local.init(
        runner=runner if runner is not None else local.SubprocessRunner(use_venv=False),
        pipeline_root=root,
        raise_on_error=True,
    )
    # one candidate at a time: parallel XGBoost processes on one machine oversubscribe its cores
    pipeline = build_pipeline(ClusterOptions(use_gpu=False, parallelism=1))
    defaults = {
        "s3_endpoint": "",
        "source": "demo",
        "queries": [],
        "area": "",
        "deploy_mode": "render",
        "device": "auto",
    }
    args = {**defaults, **{k: v for k, v in params.items() if v is not None}, "store": store}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    live = Path(root) / f"run-{stamp}.log"  # while it runs; moved into the run's folder at the end
    before = _outcomes(st)
    task_log = TaskLog(live, names=display_names(pipeline), on_step=on_step, echo=echo)
    start = time.perf_counter()
    started_at = time.time()
    error: Exception | None = None
    try:
        with PrivateTmpdir("hhpulse-run-"), _captured(task_log):
            pipeline(**args)
    except Exception as exc:  # kfp.local raises RuntimeError naming the failed task (with colour codes)
        error = exc
    finally:
        task_log.close()
    seconds = time.perf_counter() - start
    failed = next((s for s in task_log.steps if s.status == "failed"), None)
    new = sorted(_outcomes(st) - before)
    outcome = new[-1] if new else None
    log_uri = str(live)
    report_uri: str | None = None
    if outcome is not None:
        log_key = outcome.rsplit("/", 1)[0] + "/" + LOG_NAME
        st.put_bytes(log_key, live.read_bytes())
        live.unlink()
        log_uri = st.uri(log_key)
        fields: dict[str, Any] = {"log": log_uri}
        if failed is not None:  # kfp.local's exit status names only the exit handler's group
            fields.update(failed_step=failed.task, reason=failed.error or "the step failed (see the log)")
        report = newest_report(root, since=started_at)
        if report is not None:
            report_key = outcome.rsplit("/", 1)[0] + "/" + REPORT_NAME
            st.put_bytes(report_key, report.read_bytes())
            fields["report"] = report_uri = st.uri(report_key)
        complete_outcome(st, outcome, **fields)
    result = {
        "seconds": seconds,
        "steps": task_log.steps,
        "failed": failed,
        "outcome": outcome,
        "log": log_uri,
        "report": report_uri,
        "store": store,
        "pipeline_root": root,
    }
    if error is not None:
        if failed is not None:
            message = f"step {failed.task} failed: {failed.error or 'see the log'}"
        else:
            message = strip_ansi(str(error))
        raise PipelineFailed(message, result) from error
    return result


def newest_report(root: str | os.PathLike[str], *, since: float) -> Path | None:
    """The report of the run that started at ``since`` under kfp.local's ``root``: the
    challenger bundle's report.html (the evaluation and the gate), else the evaluate step's
    HTML artifact (a run that failed at the gate); None when neither was written."""
    for pattern in (f"*/select-winner/bundle/{REPORT_NAME}", "*/evaluate-candidates/report"):
        found = [p for p in Path(root).glob(pattern) if p.stat().st_mtime >= since]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return None


def _outcomes(store: Any) -> set[str]:
    return {k for k in store.list("runs/") if k.endswith("/outcome.json")}
