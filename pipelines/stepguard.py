"""A local run's step dies with its run: ``python -m pipelines.stepguard PARENT_PID -- COMMAND...``.

kfp.local starts each step as a child process (``sh -c '... python3 -m kfp.dsl.executor_main
...'``, which starts Python in turn). A ``kill -9`` of ``hhpulse run`` would leave that step
running: an orphaned publish step could still promote a model after its run was gone.
:func:`pipelines.local.run_local` therefore starts every step through this guard, which

* asks the kernel to send it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)`` on
  Linux; elsewhere it notices within :data:`POLL_S` that its parent changed);
* starts the step in a process group of its own, so the step and everything it starts can
  be stopped together;
* on SIGTERM, SIGINT or SIGHUP, or when its parent is gone, stops that group (SIGTERM, then
  SIGKILL after :data:`GRACE_S`) and exits ``128 + signal``; otherwise it exits with the
  step's own status.

Only the standard library: it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_S = 0.2  # how often the guard looks at its step and its parent
GRACE_S = 3.0  # between the group's SIGTERM and its SIGKILL
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def stop_group(pgid: int, grace: float = GRACE_S) -> None:
    """SIGTERM to the process group, then SIGKILL to whatever of it is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def guard(parent: int, command: list[str]) -> int:
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    die_with_parent()
    if os.getppid() != parent:  # the run died before the guard could ask to die with it
        return 128 + signal.SIGTERM
    child = subprocess.Popen(command, start_new_session=True)  # its own process group (and session)
    while True:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if stopping or os.getppid() != parent:
            stop_group(child.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=GRACE_S)
            return 128 + (stopping[0] if stopping else signal.SIGTERM)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m pipelines.stepguard PARENT_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return guard(int(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
