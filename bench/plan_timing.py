"""How long `raygke plan` takes for every stack (target: under 10 s for all three).

Two figures, each a fresh process as a user or the preview workflow would run it (interpreter start-up and
imports included): one `raygke plan` per stack, and one `raygke plan` for all three stacks together, which
pays for importing pulumi-gcp and pulumi-kubernetes (most of the cost) once. Median of `--runs` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STACKS = ("dev", "staging", "prod")
RAYGKE = Path(sys.executable).with_name("raygke")


def timed(*stacks: str) -> float:
    args = [str(RAYGKE), "plan"] + [a for s in stacks for a in ("--stack", s)]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"raygke plan {' '.join(stacks)} failed: {done.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; median of {runs}"
    )
    separate = {s: statistics.median(timed(s) for _ in range(runs)) for s in STACKS}
    for stack, seconds in separate.items():
        print(f"  raygke plan --stack {stack:8s} {seconds:5.2f} s")
    print(f"  one process per stack, total     {sum(separate.values()):5.2f} s")
    together = statistics.median(timed(*STACKS) for _ in range(runs))
    verdict = "met" if together < 10 else "NOT met"
    print(f"  all three in one process         {together:5.2f} s  (target < 10 s: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
