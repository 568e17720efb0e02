"""How long `raygke plan` takes for every stack (target: under 10 s for all three together).

Each stack runs in a fresh `raygke plan` process, as a user or the preview workflow would run it, so the
figure includes interpreter start-up and imports. Prints one line per stack and the total.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

STACKS = ("dev", "staging", "prod")
RAYGKE = Path(sys.executable).with_name("raygke")


def main() -> int:
    total = 0.0
    for stack in STACKS:
        started = time.perf_counter()
        done = subprocess.run(
            [str(RAYGKE), "plan", "--stack", stack], capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        total += elapsed
        resources = done.stdout.splitlines()[0] if done.stdout else done.stderr.strip()
        print(f"{stack:8s} {elapsed:6.2f} s  exit {done.returncode}  {resources}")
        if done.returncode != 0:
            return done.returncode
    print(f"{'total':8s} {total:6.2f} s  (target < 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
