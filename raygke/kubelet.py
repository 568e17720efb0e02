"""What the kubelet does to a local Ray node when its pod is deleted: run the container's preStop
inside the node, then SIGTERM its main process and SIGKILL what is left at the grace period.

Used by `raygke local upgrade` (KubeRay deleting the old cluster) and the fault suite's drain.
Owns: entering a node's namespaces with its environment, and a node's termination.
Does not own: which preStop a pod runs (components/render/rayservice.py), starting or deploying
a node (raygke/local_ray.py).
"""

import contextlib
import os
import signal
import subprocess
import time

from raygke import local_ray
from raygke.local_ray import LocalRay, LocalRayError, WorkerNode


def can_run_pre_stop() -> bool:
    """Whether a preStop can run inside one node here: it needs the node's own PID namespace, or
    its `ray stop` would stop every Ray process on this machine."""
    return bool(local_ray.pod_isolation())


def run_in_node(
    ray: LocalRay, worker: WorkerNode | None, script: str, *, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Runs a bash script inside a node's namespaces (the head's when `worker` is None) with its
    environment: what the kubelet does with a container's preStop hook. Refused without PID
    namespaces (see `can_run_pre_stop`)."""
    isolation = local_ray.pod_isolation()
    if not isolation:
        raise LocalRayError(
            "running a command inside a node needs PID namespaces (`unshare --pid`, as root or "
            "through a user namespace), and this machine gives none"
        )
    enter = ["nsenter", f"--target={_node_init(_leader(ray, worker))}", "--pid", "--mount"]
    if "--user" in isolation:
        enter.append("--user")
    return subprocess.run(
        [*enter, "bash", "-c", script],
        env=local_ray.node_env(ray, worker),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _leader(ray: LocalRay, worker: WorkerNode | None) -> int:
    return ray.pid if worker is None else worker.pid


def _node_init(leader: int) -> int:
    """The node's main process (`ray start --block`, PID 1 of its namespace when it has one)."""
    if not local_ray.pod_isolation():
        return leader
    [init] = [pid for pid, st in local_ray.live_processes().items() if st.ppid == leader]
    return init


def terminate_node(ray: LocalRay, worker: WorkerNode | None, *, grace_s: float) -> list[int]:
    """What the kubelet does once a pod's preStop returned: SIGTERM to the container's main
    process, SIGKILL to whatever of the node is left after `grace_s`. Returns the PIDs left then."""
    leader = _leader(ray, worker)
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(_node_init(leader), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while local_ray.node_processes(leader) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = local_ray.node_processes(leader)
    local_ray.signal_all(left, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(leader, 0)  # reap it if it is our child
    return left
