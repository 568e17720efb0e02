"""`pytest --busy`: the suite beside a competing CPU load, as on a user's laptop or a shared CI runner.

One CPU-bound process per core, at low priority (nice `BUSY_NICE`), started when the session starts
and stopped by PID when it ends. The suite must pass the same way: a wait that follows a condition
still holds, a fixed wall-clock guess does not. `make test-busy` runs the whole suite so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

BUSY_NICE = 10  # below the suite's own processes, as a background job runs; the kernel still
# gives it a real share (about 1/10 of a core's time against one nice-0 process, far more when idle)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--busy",
        action="store_true",
        help=f"run beside one CPU-bound process per core at nice {BUSY_NICE} (stopped by PID after)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("--busy"):
        return
    procs = [
        # The niceness is set in the child before it runs Python, so it holds once Popen returns.
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=lambda: os.nice(BUSY_NICE),
            start_new_session=True,
        )
        for _ in range(os.cpu_count() or 1)
    ]
    config.stash[_BUSY] = procs


def pytest_report_header(config: pytest.Config) -> str | None:
    procs = config.stash.get(_BUSY, None)
    if procs is None:
        return None
    pids = ", ".join(str(p.pid) for p in procs)
    return f"busy: {len(procs)} CPU-bound processes at nice {BUSY_NICE} (PIDs {pids})"


def pytest_unconfigure(config: pytest.Config) -> None:
    for proc in config.stash.get(_BUSY, []):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


_BUSY = pytest.StashKey[list[subprocess.Popen[bytes]]]()
