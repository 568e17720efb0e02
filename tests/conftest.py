"""Shared fixtures: the local runs (real Ray, real HAProxy, real gRPC), started once per session.

Each is started through the CLI a user types (`raygke local up`) in its own state directory, and stopped
with `raygke local down`; teardown then checks, by PID and by path, that nothing it started is left.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bounds import LOCAL_DOWN_S, LOCAL_UP_S
from procs import alive, pids_matching

pytest_plugins = ["busy"]  # `pytest --busy`: the suite beside a competing CPU load (tests/busy.py)

RAYGKE = [sys.executable, "-m", "raygke.cli"]
LOCAL_RUNS = ("local_run", "local_run_ray_defaults")
REPO = Path(__file__).resolve().parent.parent


def load_bench(script: str, name: str) -> ModuleType:
    """bench/<script>.py as module `name` (the scripts are not a package; they import their
    neighbours, such as common and ab, from bench/)."""
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the shared local runs go last: the runs live until the session ends, and two idle Ray
    clusters on 2 cores would disturb the timing-sensitive tests (the open-loop rate) after them."""
    items.sort(key=lambda item: any(f in getattr(item, "fixturenames", ()) for f in LOCAL_RUNS))


@dataclass(frozen=True)
class LocalRun:
    state_dir: Path
    outputs: dict[str, Any]
    state: dict[str, Any]

    @property
    def http_url(self) -> str:
        return self.outputs["http_url"]

    @property
    def grpc_target(self) -> str:
        return self.outputs["grpc_target"]

    @property
    def direct_http_url(self) -> str:
        return self.outputs["direct"]["http_url"]

    @property
    def direct_grpc_target(self) -> str:
        return self.outputs["direct"]["grpc_target"]


def local_run_of(state_dir: Path, *extra: str, stack: str = "dev") -> Iterator[LocalRun]:
    """`raygke local up` of a stack for the tests that use it; down by PID after, nothing left."""
    up = subprocess.run(
        [*RAYGKE, "local", "up", "--stack", stack, "--state-dir", str(state_dir), *extra],
        capture_output=True,
        text=True,
        timeout=LOCAL_UP_S,
    )
    if up.returncode != 0:
        subprocess.run(
            [*RAYGKE, "local", "down", "--state-dir", str(state_dir)], timeout=LOCAL_DOWN_S
        )
        pytest.fail(f"raygke local up failed:\n{up.stdout}\n{up.stderr}")
    state = json.loads((state_dir / "state.json").read_text())
    run = LocalRun(state_dir, json.loads((state_dir / "outputs.json").read_text()), state)
    ray_temp = state["ray"]["temp_dir"]
    try:
        yield run
    finally:
        started = set(state["pids"]) | set(pids_matching(ray_temp))
        down = subprocess.run(
            [*RAYGKE, "local", "down", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=LOCAL_DOWN_S,
        )
        assert down.returncode == 0, down.stderr
        left = [pid for pid in started if alive(pid)]
        assert not left, f"processes left after `raygke local down`: {left}"
        assert not state_dir.exists() and not Path(ray_temp).exists()


@pytest.fixture(scope="session")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """The dev stack with the package's defaults (HAProxy ingress + gRPC transport)."""
    yield from local_run_of(tmp_path_factory.mktemp("local") / "state")


@pytest.fixture(scope="session")
def local_run_ray_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """The dev stack on Ray's defaults (Python proxy, no gRPC transport)."""
    yield from local_run_of(
        tmp_path_factory.mktemp("local-defaults") / "state", "--profile", "ray-defaults"
    )
