"""`raygke smoke --profile quick` against the real local run: the gate a pipeline runs after `pulumi up`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bounds import SMOKE_S
from conftest import RAYGKE, LocalRun

pytestmark = pytest.mark.process


def test_quick_profile_passes_on_the_local_run_and_reports_it(local_run: LocalRun, tmp_path: Path):
    out = tmp_path / "report"
    done = subprocess.run(
        [*RAYGKE, "smoke", "--outputs", str(local_run.state_dir / "outputs.json"),
         "--profile", "quick", "--out", str(out)],
        capture_output=True, text=True, timeout=SMOKE_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 0
    checks = report["checks"]["A"]
    names = {(c["name"], c["transport"]) for c in checks}
    assert {("echo stream", "http"), ("echo stream", "grpc"), ("recsys rank", "grpc")} <= names
    assert all(c["passed"] for c in checks)
    # the fingerprint records what was measured: the flags as the deployment reported them
    assert report["deployments"]["A"]["serve_flags"] == local_run.outputs["serve_flags"]
    levels = report["load"]
    assert {lv["label"] for lv in levels} >= {
        "echo/http/unary closed c=8",
        "echo/grpc/stream closed c=8",
        "recsys/grpc/unary closed c=8",
    }
    assert all(lv["ok"] == lv["sent"] > 0 and lv["throughput_rps"] > 0 for lv in levels)
    assert (out / "report.md").read_text().startswith("## raygke smoke: PASS")
    assert (out / "throughput_p99.png").stat().st_size > 10_000
