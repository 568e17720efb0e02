"""`make bench-health-check`: how long a hung replica stalls the echo app, per Serve health-check
setting, and whether the setting replaces a healthy replica under load (a false replacement).

Owns: one isolated local Ray head (the dev stack's flags) serving the dev stack's echo app with one
replica of each deployment, redeployed once per candidate (`health_check_period_s`,
`health_check_timeout_s` on every deployment). Per candidate: `--steady` seconds of closed-loop
load without a fault (replica PIDs before and after: any change is a false replacement), then the
`Echo` replica's process is SIGSTOPped (a hung replica: alive, never answering) and requests are
polled until one succeeds again. Prints a table; writes out/bench/health_check.{json,md}.
Does not own: the package's defaults (infra/config.py, HEALTH_CHECK_*), the bound's formula
(infra/config.py `hung_replica_bound_s`), which the table prints beside the measurement.

    python bench/health_check.py [--steady 60] [--only 10/30,2/5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

# bench/ modules: the script's own folder is on sys.path when run as `python bench/<script>.py`
from common import OUT, machine, render, say

from infra.config import hung_replica_bound_s
from infra.stack_file import load_stack_config
from raygke import local_ray
from raygke.local import local_flags, local_serve_config

# (period, timeout) seconds: Ray's defaults first, then shorter ones.
CANDIDATES: tuple[tuple[float, float], ...] = ((10, 30), (5, 10), (2, 5), (1, 3))
HUNG = "ray::ServeReplica:echo:Echo"
REPLICA_PREFIX = "ray::ServeReplica:echo:"
LOAD_THREADS = 4  # closed loop: enough to keep both cores of a small machine busy
RECOVERY_LIMIT_S = 200.0  # past Ray's defaults' bound (120 s), so every candidate is measured
POLL_TIMEOUT_S = 1.0


def echo_serve_config(period: float, timeout: float) -> dict[str, Any]:
    """The dev stack's local echo app alone, one replica each, with this health-check setting."""
    base = local_serve_config(load_stack_config("dev"))
    [echo] = [a for a in base["applications"] if a["name"] == "echo"]
    # A new `version` arg restarts every replica, so each candidate starts from fresh ones.
    echo = {**echo, "args": {**echo["args"], "version": f"hc-{period:g}-{timeout:g}"}}
    echo["deployments"] = [
        {**d, "num_replicas": 1, "health_check_period_s": period, "health_check_timeout_s": timeout}
        for d in echo["deployments"]
    ]
    return {**base, "applications": [echo]}


def replicas(ray: local_ray.LocalRay) -> dict[int, str]:
    out = {}
    for pid in local_ray.processes(ray):
        title = local_ray.command_line(pid).strip()
        if title.startswith(REPLICA_PREFIX):
            out[pid] = title
    return out


def request_ok(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read()
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def steady_load(url: str, seconds: float) -> tuple[int, int]:
    """(ok, failed) of LOAD_THREADS closed loops for `seconds`."""
    counts = [0, 0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < end:
            ok = request_ok(url, 5.0)
            with lock:
                counts[0 if ok else 1] += 1

    threads = [threading.Thread(target=loop) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts[0], counts[1]


def hang_and_recover(ray: local_ray.LocalRay, url: str) -> dict[str, Any]:
    """SIGSTOP the Echo replica; seconds until it is gone, a new one runs, a request succeeds."""
    [pid] = [p for p, title in replicas(ray).items() if title == HUNG]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    gone_s = new_s = ok_s = None
    failed = 0
    try:
        # Until a request succeeds, then on until the old process is gone and a new one runs
        # (the controller may start the new replica before it kills the old one).
        while time.monotonic() - t0 < RECOVERY_LIMIT_S:
            now = time.monotonic() - t0
            live = replicas(ray)
            if gone_s is None and pid not in live:
                gone_s = now
            if new_s is None and any(t == HUNG and p != pid for p, t in live.items()):
                new_s = now
            if ok_s is None:
                if request_ok(url, POLL_TIMEOUT_S):
                    ok_s = time.monotonic() - t0
                else:
                    failed += 1
            elif gone_s is not None and new_s is not None:
                break
            time.sleep(0.2)
    finally:
        # The controller SIGKILLs a replica it gives up on; one it did not must not stay frozen.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return {"killed_s": gone_s, "new_replica_s": new_s, "first_ok_s": ok_s, "failed_polls": failed}


def measure(ray: local_ray.LocalRay, period: float, timeout: float, steady_s: float) -> dict:
    local_ray.deploy(ray, echo_serve_config(period, timeout))
    url = f"{ray.http_url}/echo/unary?size=16"
    # Let replicas of the previous candidate finish stopping before counting.
    time.sleep(3)
    before = replicas(ray)
    ok, failed = steady_load(url, steady_s)
    after = replicas(ray)
    row: dict[str, Any] = {
        "period_s": period,
        "timeout_s": timeout,
        "bound_s": hung_replica_bound_s(period, timeout),
        "steady_ok": ok,
        "steady_failed": failed,
        "false_replacements": len(set(before) - set(after)),
    }
    row.update(hang_and_recover(ray, url))
    return row


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steady", type=float, default=60.0, help="seconds of load without a fault"
    )
    parser.add_argument("--only", default="", help="candidates as period/timeout, comma-separated")
    args = parser.parse_args()
    chosen = CANDIDATES
    if args.only:
        chosen = tuple(
            (float(p), float(t)) for p, t in (c.split("/") for c in args.only.split(","))
        )
    config = load_stack_config("dev")
    rows = []
    with tempfile.TemporaryDirectory(prefix="raygke-hc-") as tmp:
        ray = local_ray.start(Path(tmp) / "ray", env=local_flags(config), num_cpus=8)
        try:
            for period, timeout in chosen:
                say(f"candidate period {period:g} s, timeout {timeout:g} s ...")
                row = measure(ray, period, timeout, args.steady)
                say(f"  {json.dumps(row)}")
                rows.append(row)
        finally:
            local_ray.stop(ray)
    header = [
        "period s", "timeout s", "bound 3x(p+t) s", "hung: killed s", "new replica s",
        "first ok s", f"{args.steady:g} s load: ok/failed", "false replacements",
    ]  # fmt: skip
    table = [
        [
            f"{r['period_s']:g}", f"{r['timeout_s']:g}", f"{r['bound_s']:g}", fmt(r["killed_s"]),
            fmt(r["new_replica_s"]), fmt(r["first_ok_s"]),
            f"{r['steady_ok']}/{r['steady_failed']}", str(r["false_replacements"]),
        ]
        for r in rows
    ]  # fmt: skip
    text, md = render(header, table)
    say(text)
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"date": date.today().isoformat(), "machine": machine(), "rows": rows}
    (OUT / "health_check.json").write_text(json.dumps(doc, indent=2))
    (OUT / "health_check.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
