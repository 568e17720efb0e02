"""This machine's ports and processes, as the local run sees them (Linux: read from /proc).

Owns: picking free ports on 127.0.0.1 (`plan_ports`: one for each name asked, returned by name),
telling whether a port is taken, and reading a process's state, parent and session from
/proc/<pid>/stat, so every start and stop by PID decides "is it still there" the same way; and the
telling lines of a process's log (HAProxy's alerts first).
Does not own: which ports or processes a run uses (raygke/local_ray.py, raygke/tier.py,
raygke/local.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 (held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def plan_ports(
    names: Iterable[str],
    *,
    asked: Mapping[str, int | None] | None = None,
    avoid: Iterable[int] = (),
) -> dict[str, int]:
    """A port for each of `names`, by name: the one `asked` gives it, else one free on 127.0.0.1
    and neither in `avoid` (another node's ports: every node of a local run is on this machine)
    nor asked for another name. A port is only free when picked: call this just before the
    ports are bound."""
    names = list(names)
    given = {n: p for n, p in (asked or {}).items() if n in names and p}
    taken = set(avoid) | set(given.values())
    wanted = [n for n in names if n not in given]
    picked = free_ports(len(wanted))
    while taken & set(picked):
        picked = free_ports(len(wanted))
    chosen = {**given, **dict(zip(wanted, picked, strict=True))}
    return {n: chosen[n] for n in names}


def port_in_use(port: int) -> bool:
    """True if something listens on the port (a connect succeeds) or it cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that starting and stopping by PID need."""

    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    ppid: int
    session: int
    cpu_s: float  # user + system CPU time so far, its own threads (not its children)


def proc_stat(pid: int) -> ProcStat | None:
    """The process's state, parent and session, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ProcStat(
        state=fields[0], ppid=int(fields[1]), session=int(fields[3]), cpu_s=ticks / CLOCK_TICKS
    )


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie holds nothing but its PID,
    yet still answers `kill(pid, 0)`)."""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


def stop(pid: int, timeout_s: float) -> None:
    """Stops one process by PID: SIGTERM, then SIGKILL if it is still there after `timeout_s`;
    reaped when it is our child (a zombie still answers kill(pid, 0))."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def pss_bytes(pid: int) -> int:
    """A process's proportional set size: its private memory plus its share of pages it shares
    (so a sum over processes counts each page once); 0 once it is gone or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def telling_lines(text: str, n: int = 3) -> str:
    """A log's most telling lines, joined into one: HAProxy's alerts if any, else the last n."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    alerts = [ln for ln in lines if "[ALERT]" in ln]
    return " | ".join(alerts[:n] or lines[-n:])


def log_tail(path: Path, n: int = 3) -> str:
    """`telling_lines` of a log file; "" when it cannot be read."""
    try:
        return telling_lines(path.read_text(errors="replace"), n)
    except OSError:
        return ""
