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

A run's steps die with it, and a run that dies still gets its record. Every step starts
through :mod:`pipelines.stepguard` (a process group of its own, and ``PR_SET_PDEATHSIG``), so a
``kill -9`` of the run stops its steps within a moment; SIGTERM (and SIGHUP, Ctrl-C) stops
them at once, removes the run's temp directory and records the run as ended in
``runs/<time>-local-<hex>/outcome.json``. While a run is in flight, that folder holds
``running.json`` (host, process, the steps running): a run killed outright cannot remove it,
so the next run on the same host finds it, sees the process gone, and records the killed run
as ended there (with its log); it also removes the temp directories of killed runs (each
holds a lock while its run lives). The summary reads the run's own steps' outputs (its raw
run, its gate's version, what it published), never "the newest" in a store another run may
be writing to at the same time.

How kfp.local 2.17 reports, and so what is captured here: it logs through the root logger,
to a handler on ``sys.stdout`` that it installs for each task; it prints a task's output
(stdout and stderr merged) with ``print``; it warns with :mod:`warnings`. The step events
come from its log lines ``Executing task 'NAME'``, ``Task 'NAME' finished with status S``
and ``Skipping [conditional] task NAME``; the whole-pipeline test keeps them honest.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
        self._lock: int | None = None

    def open(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix))
        self._lock = _hold_owner_lock(self.path)
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
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self.path = None

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


OWNER_LOCK = ".owner.lock"
STALE_NO_LOCK_S = (
    24 * 3600
)  # a run folder without an owner lock (an older hhpulse's) counts as stale after this


def _hold_owner_lock(folder: Path) -> int | None:
    """An exclusive ``flock`` on ``folder/.owner.lock``, held (by the returned descriptor) for as
    long as this process lives: the kernel releases it however the process ends, so a free lock
    means the folder's run is gone. None where flock is not available."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(folder / OWNER_LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a folder just made: nobody else holds it
    return fd


def clean_stale_tmpdirs(
    prefix: str = "hhpulse-run-", where: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Remove the temp directories of runs that are gone (killed before they could remove
    their own): each ``<where>/<prefix>*`` whose owner lock is free, or that has no lock and
    is older than a day. Folders of live runs are left alone. Returns what was removed."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return []
    removed = []
    for folder in sorted(Path(where or tempfile.gettempdir()).glob(f"{prefix}*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        lock = folder / OWNER_LOCK
        if not lock.exists():
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > STALE_NO_LOCK_S:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its run is alive
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.warning(
            "removed %d temp folder(s) of killed runs: %s", len(removed), ", ".join(map(str, removed))
        )
    return removed


# -- the run's steps: each through pipelines.stepguard, so that they die with the run ----------


class RunStopped(RuntimeError):
    """A signal stopped the run (SIGTERM, SIGHUP, or SIGINT / Ctrl-C): its steps were stopped,
    its temp directory removed and its record written; ``result`` as in :class:`PipelineFailed`."""

    def __init__(self, message: str, signum: int, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.signum = signum
        self.result = result


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler in the main thread. A BaseException, as
    KeyboardInterrupt is, so that kfp.local's handling of a failed task does not catch it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Steps:
    """kfp.local's step processes for one run, each started through :mod:`pipelines.stepguard`.

    :meth:`run` replaces kfp.local 2.17's ``subprocess_task_handler.run_local_subprocess``
    (same output handling: the step's stdout and stderr, merged, printed line by line). It
    also reads each step's executor input: the step's output folder (the run's own folder
    under the pipeline root) and, for the exit handler, the run's KFP job id.
    """

    def __init__(self, on_start: Callable[[list[str]], None] | None = None) -> None:
        self.live: dict[subprocess.Popen[str], str] = {}
        self.task_dirs: dict[str, Path] = {}
        self.job_id: str | None = None
        self.stopping = False
        self.stopped_steps: list[str] = []  # the steps :meth:`stop` stopped
        self._lock = threading.RLock()
        self._on_start = on_start

    @property
    def run_dir(self) -> Path | None:
        """This run's folder under the pipeline root (``<root>/<pipeline>-<timestamp>``)."""
        return next(iter(self.task_dirs.values())).parent if self.task_dirs else None

    @property
    def running(self) -> list[str]:
        with self._lock:
            return sorted(self.live.values())

    def _note(self, command: list[str]) -> str:
        try:
            spec = json.loads(command[command.index("--executor_input") + 1])
            out = Path(spec["outputs"]["outputFile"]).parent
        except (ValueError, IndexError, KeyError, TypeError):
            return "?"
        task = out.name
        self.task_dirs[task] = out
        if task == "record-outcome":
            run_id = (spec.get("inputs", {}).get("parameterValues") or {}).get("run_id")
            self.job_id = str(run_id) if run_id else None
        return task

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        env = {**os.environ, **env_vars} if env_vars else None
        task = self._note(full_command)
        guard = [sys.executable, "-m", "pipelines.stepguard", str(os.getpid()), "--", *full_command]
        if self._on_start is not None:
            # recorded before the step's process exists: a run killed once the step is seen
            # running is never recorded as still in the step before it
            with self._lock:
                running = sorted([*self.live.values(), task])
            self._on_start(running)
        with self._lock:
            if self.stopping:
                return 128 + signal.SIGTERM
            process = subprocess.Popen(
                guard, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
            )
            self.live[process] = task
        try:
            if process.stdout:
                for line in iter(process.stdout.readline, ""):
                    print(line, end="")
                print("\n")
            return process.wait()
        finally:
            with self._lock:
                self.live.pop(process, None)
            process.__exit__(None, None, None)  # closes its pipe

    def stop(self, timeout: float = 10.0) -> None:
        """Start no more steps; stop those running (each guard stops its step's process group)."""
        with self._lock:
            self.stopping = True
            procs = list(self.live)
            self.stopped_steps = sorted(set(self.live.values()))
        for process in procs:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in procs:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

    def output(self, task: str) -> dict[str, Any]:
        """A finished step's executor output (``parameterValues``, ``artifacts``), or {}."""
        folder = self.task_dirs.get(task)
        try:
            return dict(json.loads((folder / "executor_output.json").read_text())) if folder else {}
        except (OSError, ValueError):
            return {}


@contextlib.contextmanager
def _guarded(steps: Steps):  # type: ignore[no-untyped-def]
    """kfp.local starts its steps through ``steps.run`` while the block runs."""
    from kfp.local import subprocess_task_handler

    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = steps.run  # type: ignore[assignment]
    try:
        yield
    finally:
        subprocess_task_handler.run_local_subprocess = original  # type: ignore[assignment]


@contextlib.contextmanager
def _stopped_by_signals(steps: Steps):  # type: ignore[no-untyped-def]
    """SIGTERM and SIGHUP stop the steps and raise :class:`_Terminated` in the main thread
    (Ctrl-C raises KeyboardInterrupt as usual). Elsewhere than the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # one stop at a time; SIGKILL still works
        steps.stop()
        raise _Terminated(signum)

    saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# -- the record of a run in flight: runs/<time>-local-<hex>/running.json ----------------------

RUNNING_NAME = "running.json"


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (its start time in clock ticks since boot, from
    /proc/<pid>/stat), so a reused pid is not taken for the run; None when it is not running.
    Without /proc: "alive" or None, from ``kill(pid, 0)``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "alive"
        return "alive"


class RunRecord:
    """``runs/<UTC time>-local-<hex>/running.json`` while a local run is in flight; the run's
    ``outcome.json`` in the same folder when the run cannot leave one through its exit
    handler (stopped by a signal, or killed: then the next run writes it)."""

    def __init__(self, store: Any, log_path: Path) -> None:
        now = datetime.now(timezone.utc)
        self.store = store
        self.folder = f"runs/{now:%Y%m%dT%H%M%SZ}-local-{secrets.token_hex(4)}/"
        self.key = self.folder + RUNNING_NAME
        self.doc = {
            "state": "RUNNING",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": _process_started(os.getpid()),
            "started_at": now.isoformat(timespec="seconds"),
            "log": str(log_path),
            "steps": [],
        }
        self._lock = threading.Lock()

    def start(self) -> RunRecord:
        self.store.put_json(self.key, self.doc)
        return self

    def steps(self, running: list[str]) -> None:
        """The steps running now (what a later run says the killed run was doing); best effort."""
        with self._lock:
            self.doc["steps"] = running
            with contextlib.suppress(Exception):
                self.store.put_json(self.key, self.doc)

    def end(
        self, state: str | None = None, reason: str | None = None, failed_step: str | None = None
    ) -> str | None:
        """Remove the in-flight record; with ``state``, first write the run's outcome in its folder
        (with the log). Returns the outcome's key, or None."""
        key = None
        if state is not None:
            key = write_ended(
                self.store, self.folder, self.doc, state=state, reason=reason, failed_step=failed_step
            )
        _remove(self.store, self.key)
        return key


def write_ended(
    store: Any, folder: str, doc: dict[str, Any], *, state: str, reason: str | None, failed_step: str | None
) -> str:
    """``<folder>/outcome.json`` for a run that did not end through its exit handler, and its
    log (``doc["log"]``, when that file is on this machine) as ``<folder>/pipeline.log``.
    Created once (``If-None-Match``): two later runs recording the same killed run write one."""
    from hhpulse.data.store import PreconditionFailed, json_bytes
    from hhpulse.flows.outcome import outcome_doc

    key = folder + "outcome.json"
    out = outcome_doc(
        state,
        run_id=None,
        job="hhpulse run (local)",
        failed_step=failed_step,
        reason=reason,
        when=datetime.now(timezone.utc),
        host=str(doc.get("host", "")),
    )
    out["started_at"] = doc.get("started_at")
    live = Path(str(doc.get("log") or ""))
    if doc.get("log") and live.is_file():
        store.put_bytes(folder + LOG_NAME, live.read_bytes())
        live.unlink(missing_ok=True)
        out["log"] = store.uri(folder + LOG_NAME)
    with contextlib.suppress(PreconditionFailed):
        store.put_if(key, json_bytes(out), if_none_match=True)
    return key


def _remove(store: Any, key: str) -> None:
    store.delete(key)
    root = getattr(store, "root", None)  # a folder store keeps the emptied folder: remove it
    if root is not None:
        with contextlib.suppress(OSError):
            (Path(root) / key).parent.rmdir()


def record_killed_runs(store: Any) -> list[str]:
    """Record as ended every local run of this host whose process is gone but whose
    ``running.json`` is still there (killed with SIGKILL, out of memory, a lost terminal):
    ``outcome.json`` in its folder, state ``KILLED``, with the steps it was running and its log.
    Runs of other hosts are left alone (their process cannot be seen from here). Returns the
    outcome keys written."""
    from hhpulse.data.store import KeyNotFound

    host = socket.gethostname()
    written = []
    for key in store.list("runs/"):
        if not key.endswith("/" + RUNNING_NAME):
            continue
        try:
            doc = store.get_json(key)
        except (KeyNotFound, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("host") != host:
            continue
        pid, started = doc.get("pid"), doc.get("pid_started")
        now = _process_started(pid) if isinstance(pid, int) else None
        if now is not None and (now == started or "alive" in (now, started)):
            continue  # that run is still going
        steps = [str(s) for s in doc.get("steps") or []]
        folder = key[: -len(RUNNING_NAME)]
        reason = (
            f"hhpulse run (process {pid} on {host}, started {doc.get('started_at')}) ended without "
            "recording its outcome: it was killed (SIGKILL, out of memory, or its terminal or "
            "machine went away)"
            + (f" while step(s) {', '.join(steps)} ran" if steps else "")
            + "; its steps were stopped with it. Recorded by a later run"
        )
        written.append(
            write_ended(
                store, folder, doc, state="KILLED", reason=reason, failed_step=", ".join(steps) or None
            )
        )
        _remove(store, key)
        log.warning("recorded the killed run %s as ended: %s", folder.rstrip("/"), store.uri(written[-1]))
    return written


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
    ``outcome`` (this run's outcome record's key) and ``log`` (the log's address), ``store``,
    ``pipeline_root``, and what this run's own steps said: ``raw_run`` (the collected run's
    id), ``gate`` (its gate's verdict: version, challenger_wins, champion_version, ...),
    ``published`` (the URI it published, or None), ``report``.

    kfp.local keeps every artifact of every task under its pipeline root. Without
    ``pipeline_root``, each run gets a workspace of its own (``kfp-local/run-<time>/`` next to
    the store) that is removed when the run's exit handler recorded its outcome, failed or not,
    once its log and report are in the run's folder of the store. A run that ended before its
    exit handler ran, or was stopped by a signal, keeps it for its artifacts. A
    ``pipeline_root`` given is left as it is.

    A signal (SIGTERM, SIGHUP, Ctrl-C) stops the steps, removes the run's temp directory,
    writes the run's outcome (state ``TERMINATED``) and raises :class:`RunStopped`. Before it
    starts, the run records the killed runs of this host as ended (:func:`record_killed_runs`)
    and removes their temp directories (:func:`clean_stale_tmpdirs`).
    """
    from kfp import local

    from hhpulse.data.store import open_store
    from hhpulse.flows.outcome import complete_outcome, run_hex
    from pipelines.hhpulse_pipeline import ClusterOptions, build_pipeline

    store = str(Path(store).resolve()) if "://" not in store else store
    base = pipeline_root or os.path.join(
        os.path.dirname(store) if "://" not in store else ".hhpulse", "kfp-local"
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    # kfp.local's artifacts go to a workspace of this run's own, removed when it ends (the log
    # and the report are copied into the store first); a --pipeline-root the user named stays
    root = pipeline_root or os.path.join(base, f"run-{stamp}")
    os.makedirs(root, exist_ok=True)
    st = open_store(store, endpoint_url=params.get("s3_endpoint") or None)
    clean_stale_tmpdirs()
    record_killed_runs(st)
    # one candidate at a time: parallel XGBoost processes on one machine oversubscribe its cores;
    # no retries: a failed step here is a fault to see at once, not a node or a network that may recover
    pipeline = build_pipeline(ClusterOptions(use_gpu=False, parallelism=1, retries=0))
    defaults = {
        "s3_endpoint": "",
        "source": "demo",
        "queries": [],
        "area": "",
        "deploy_mode": "render",
        "device": "auto",
    }
    args = {**defaults, **{k: v for k, v in params.items() if v is not None}, "store": store}
    live = Path(base) / f"run-{stamp}.log"  # while it runs; moved into the run's folder at the end
    before = _outcomes(st)
    task_log = TaskLog(live, names=display_names(pipeline), on_step=on_step, echo=echo)
    record = RunRecord(st, live).start()
    steps = Steps(on_start=record.steps)
    start = time.perf_counter()
    error: Exception | None = None
    stopped: int | None = None
    try:
        with PrivateTmpdir("hhpulse-run-") as tmp, _stopped_by_signals(steps), _guarded(steps):
            local.init(
                runner=runner if runner is not None else local.SubprocessRunner(use_venv=False),
                pipeline_root=root,
                raise_on_error=True,
                workspace_root=str(tmp / "kfp-workspace"),  # in the run's temp directory, removed with it
            )
            with _captured(task_log):
                pipeline(**args)
    except _Terminated as exc:
        stopped = exc.signum
    except KeyboardInterrupt:
        steps.stop()
        stopped = signal.SIGINT
    except Exception as exc:  # kfp.local raises RuntimeError naming the failed task (with colour codes)
        error = exc
    finally:
        task_log.close()
    seconds = time.perf_counter() - start
    failed = next((s for s in task_log.steps if s.status == "failed"), None)
    own = _own_outputs(steps)
    result: dict[str, Any] = {
        "seconds": seconds,
        "steps": task_log.steps,
        "failed": failed,
        "outcome": None,
        "log": str(live),
        "report": None,
        "store": store,
        "pipeline_root": root,
        **own,
    }
    if stopped is not None:
        name = signal.Signals(stopped).name
        running = steps.stopped_steps
        reason = f"stopped by {name}" + (f" while step(s) {', '.join(running)} ran" if running else "")
        result["outcome"] = record.end("TERMINATED", reason, ", ".join(running) or None)
        result["log"] = st.uri(record.folder + LOG_NAME)
        raise RunStopped(f"the run was {reason}; its steps were stopped", stopped, result)
    new = sorted(_outcomes(st) - before)
    # the exit handler's folder ends in the run id's eight hex digits (hhpulse.flows.outcome.run_hex)
    tail = f"-{run_hex(steps.job_id)}" if steps.job_id else None
    mine = [k for k in new if tail and k.rsplit("/", 2)[-2].endswith(tail)]
    outcome = mine[-1] if mine else None
    if outcome is None:  # no exit handler ran (kfp.local failed before it): the run's own record
        why = failed.error if failed else strip_ansi(str(error)) if error else "no outcome was recorded"
        outcome = record.end("FAILED", why, failed.task if failed else None)
        result["log"] = st.uri(record.folder + LOG_NAME)
    else:
        record.end()
        log_key = outcome.rsplit("/", 1)[0] + "/" + LOG_NAME
        st.put_bytes(log_key, live.read_bytes())
        live.unlink()
        result["log"] = st.uri(log_key)
        fields: dict[str, Any] = {"log": result["log"]}
        if failed is not None:  # kfp.local's exit status names only the exit handler's group
            fields.update(failed_step=failed.task, reason=failed.error or "the step failed (see the log)")
        report = own_report(steps)
        if report is not None:
            report_key = outcome.rsplit("/", 1)[0] + "/" + REPORT_NAME
            st.put_bytes(report_key, report.read_bytes())
            fields["report"] = result["report"] = st.uri(report_key)
        complete_outcome(st, outcome, **fields)
        if pipeline_root is None:  # the log and the report are in the store now
            shutil.rmtree(root, ignore_errors=True)
    result["outcome"] = outcome
    if error is not None:
        if failed is not None:
            message = f"step {failed.task} failed: {failed.error or 'see the log'}"
        else:
            message = strip_ansi(str(error))
        raise PipelineFailed(message, result) from error
    return result


def _own_outputs(steps: Steps) -> dict[str, Any]:
    """What this run's own steps returned: the raw run's id, the gate's verdict (from the
    challenger bundle's metadata), the URI it published."""
    raw_run = steps.output("collect-vacancies").get("parameterValues", {}).get("Output")
    gate_art = steps.output("select-winner").get("artifacts", {}).get("bundle", {}).get("artifacts") or [{}]
    gate = dict(gate_art[0].get("metadata") or {}) or None
    published = steps.output("publish-model").get("parameterValues", {}).get("Output")
    return {"raw_run": raw_run, "gate": gate, "published": published}


def own_report(steps: Steps) -> Path | None:
    """This run's report: the challenger bundle's report.html (the evaluation and the gate),
    else the evaluate step's HTML artifact (a run that failed at the gate); None when
    neither was written."""
    for task, rel in (("select-winner", f"bundle/{REPORT_NAME}"), ("evaluate-candidates", "report")):
        folder = steps.task_dirs.get(task)
        if folder is not None and (folder / rel).is_file():
            return folder / rel
    return None


def _outcomes(store: Any) -> set[str]:
    return {k for k in store.list("runs/") if k.endswith("/outcome.json")}
