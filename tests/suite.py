"""`make test`: the whole suite as two pytest sessions at once, so that the planning tests' CPU fills
the live tests' waits (drain deadlines, deletion delays, engine starts) instead of adding to the wall
time.

The live part (markers `process` and `faults`: real Ray, HAProxy, gRPC, vLLM, Redis, Prometheus) runs
in the foreground at normal priority and prints the slowest tests; the rest (config, renderers, the
program under mocks, the CLI) runs beside it at nice 10, as `make test-busy` loads the machine, and
its output follows. Arguments go to both sessions (`python tests/suite.py -x -k upgrade`). Exit
status: the first failing session's; "no tests collected" (5) in one session is no failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

LIVE = "(process or faults) and not cloud"
PLANNING = "not process and not faults and not cloud"
NO_TESTS = 5  # pytest's exit status when a session selects nothing


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q"]
    with tempfile.TemporaryDirectory(prefix="raygke-suite-") as tmp:
        log = Path(tmp) / "planning.log"
        with log.open("wb") as out:
            own = ["-p", "no:cacheprovider", "--basetemp", str(Path(tmp) / "planning")]
            planning = subprocess.Popen(
                [*pytest, "-m", PLANNING, *own, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda: os.nice(10),
            )
            try:
                live = subprocess.run([*pytest, "--durations=15", "-m", LIVE, *argv]).returncode
            except BaseException:
                planning.terminate()
                raise
            finally:
                planning_rc = planning.wait()
        print("\n== planning tests (beside the live ones, at nice 10)", flush=True)
        print(log.read_text(errors="replace"), flush=True)
    failed = [rc for rc in (live, planning_rc) if rc not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return NO_TESTS if live == planning_rc == NO_TESTS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
