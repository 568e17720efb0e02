"""`pytest --busy` (tests/busy.py): one CPU-bound process per core at low priority while a session
runs, stopped by PID when it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bounds import CLI_START_S
from busy import BUSY_NICE
from procs import alive

pytestmark = pytest.mark.process

# Run inside the inner session: the busy processes it started (its children), with their niceness.
INNER = """
import json, os
from pathlib import Path

def test_records_the_busy_processes():
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid: started by this session
            found[entry] = int(fields[16])  # nice
    Path(os.environ["BUSY_OUT"]).write_text(json.dumps(found))
"""


def test_busy_runs_one_low_priority_process_per_core_and_stops_them(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    out = tmp_path / "busy.json"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "BUSY_OUT": str(out), "PYTHONPATH": tests}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "busy", "--busy", "-p", "no:cacheprovider",
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_START_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = {int(pid): nice for pid, nice in json.loads(out.read_text()).items()}
    assert len(found) == os.cpu_count(), found
    assert set(found.values()) == {min(os.nice(0) + BUSY_NICE, 19)}, found
    assert not [pid for pid in found if alive(pid)], "busy processes left after the session"
