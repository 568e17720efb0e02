"""Fault injection on a local run: lose a node, restart the head. The fault suite uses it
(tests/test_faults_cluster.py); `raygke local` never does.

Owns: a node's loss (every process of it SIGKILLed at once, as a preempted VM's), the head's
restart on its old ports (as the kubelet restarts a head container that exited; with GCS fault
tolerance it reloads the cluster from Redis), and the apps' statuses
as Serve's controller reports them (a child driver: `python -m raygke.local_faults status ADDRESS`).
Does not own: starting, deploying or stopping a run (raygke/local_ray.py), a pod's deletion
(raygke/kubelet.py), which fault a drill injects or what it measures (the tests).
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys

from raygke import host, local_ray
from raygke.local_ray import LocalRay, LocalRayError, Progress

# A restarted head's `ray start` exits when its raylet has not registered with the GCS within Ray's
# fixed 30 s (ray/_private/node.py); a GCS reloading a cluster from Redis while every worker
# reconnects missed that in 2 of 4 `make test-busy` runs, and once took 3 starts. The kubelet
# restarts such a container with a back-off until it runs; restart_head tries this many times.
HEAD_RESTARTS = 5
# A child driver (`serve status`) that connects to the cluster and asks the controller once.
STATUS_TIMEOUT_S = 60.0


def kill_node(leader: int) -> list[int]:
    """SIGKILLs every process of one node (its `ray start` process is `leader`), as when a pod's
    machine is lost; returns the PIDs killed. Reaps the leader if it is our child."""
    pids = local_ray.node_processes(leader)
    local_ray.signal_all(pids, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(leader, 0)
    return pids


def restart_head(
    ray: LocalRay,
    *,
    timeout_s: float = local_ray.NODE_START_TIMEOUT_S,
    on_progress: Progress | None = None,
) -> int:
    """Starts the head again on its old ports, after it died (see `kill_node`): with GCS fault
    tolerance it reloads the cluster's state from Redis and the workers rejoin it. A `ray start`
    that exits is started again, up to HEAD_RESTARTS times, as the kubelet restarts a head
    container that exited. Returns the attempts it took."""
    for attempt in range(1, HEAD_RESTARTS):
        try:
            local_ray.start_head(ray, ray.head_cpus, timeout_s)
            return attempt
        except LocalRayError as exc:
            if on_progress is not None:
                on_progress(f"head start {attempt} of {HEAD_RESTARTS} failed ({exc}); again")
            kill_node(ray.pid)  # whatever that attempt left, as a container restart does
    local_ray.start_head(ray, ray.head_cpus, timeout_s)
    return HEAD_RESTARTS


def app_statuses(ray: LocalRay, *, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, str]:
    """{app name: status} as Serve's controller reports it (from a short-lived child driver)."""
    env = local_ray.ray_env(os.environ, ray.env, ray.ports, ray.temp_dir)
    result = subprocess.run(
        [sys.executable, "-m", "raygke.local_faults", "status", ray.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        raise LocalRayError(f"serve status failed: {host.telling_lines(result.stderr, 1)}")
    return json.loads(lines[-1])


def _status_main(address: str) -> int:
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_NAMESPACE

    ray.init(address=address, namespace=SERVE_NAMESPACE, logging_level=logging.WARNING)
    apps = serve.status().applications
    print(json.dumps({name: app.status.value for name, app in apps.items()}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "status":
        return _status_main(argv[1])
    print("usage: python -m raygke.local_faults status ADDRESS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
