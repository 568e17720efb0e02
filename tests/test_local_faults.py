"""raygke/local_faults.py without a cluster: the head's restarts. The hooks themselves run live in
tests/test_faults_cluster.py (a node lost, a preStop inside a node, the head restarted on Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raygke import local_faults, local_ray


@pytest.mark.pure
@pytest.mark.parametrize(
    "failures", [0, 1, local_faults.HEAD_RESTARTS - 1, local_faults.HEAD_RESTARTS]
)
def test_a_restarted_head_whose_ray_start_exits_is_started_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failures: int
) -> None:
    """As the kubelet restarts a head container that exited: each failed start is cleaned up by
    PID and tried again, up to HEAD_RESTARTS; the last failure is the caller's."""
    starts: list[int] = []
    cleaned: list[int] = []

    def start_head(ray: local_ray.LocalRay, num_cpus: int, timeout_s: float) -> None:
        starts.append(num_cpus)
        if len(starts) <= failures:
            raise local_ray.LocalRayError("the Ray head: ray start exited with 1: timed out")

    monkeypatch.setattr(local_ray, "start_head", start_head)
    monkeypatch.setattr(local_faults, "kill_node", lambda leader: cleaned.append(leader) or [])
    ray = local_ray.LocalRay(
        4242, tmp_path, tmp_path, tmp_path, local_ray.node_ports(), {}, tmp_path / "log", 0.0
    )
    heard: list[str] = []
    if failures >= local_faults.HEAD_RESTARTS:
        with pytest.raises(local_ray.LocalRayError, match="timed out"):
            local_faults.restart_head(ray, on_progress=heard.append)
    else:
        assert local_faults.restart_head(ray, on_progress=heard.append) == failures + 1
    assert len(starts) == min(failures + 1, local_faults.HEAD_RESTARTS)
    assert cleaned == [4242] * min(failures, local_faults.HEAD_RESTARTS - 1)
    assert len(heard) == len(cleaned)
