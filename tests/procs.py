"""Which process listens on which TCP port, read from /proc (no psutil on these machines)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"


def _sockets(state: str, tables: tuple[str, ...] = ("tcp", "tcp6")) -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port), for TCP sockets in `state`."""
    found: dict[str, tuple[int, int]] = {}
    for table in tables:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == state:
                    local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                    found[fields[9]] = (local, remote)
    return found


def _listening_inodes(tables: tuple[str, ...] = ("tcp", "tcp6")) -> dict[str, int]:
    """Socket inode -> port, for every listening TCP socket."""
    return {inode: ports[0] for inode, ports in _sockets(LISTEN, tables).items()}


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


def listening_ports(pid: int, tables: tuple[str, ...] = ("tcp", "tcp6")) -> set[int]:
    inodes = _listening_inodes(tables)
    return {inodes[i] for i in _socket_inodes(pid) if i in inodes}


def connected_ports(pid: int) -> set[int]:
    """Remote ports of `pid`'s established TCP connections."""
    sockets = _sockets(ESTABLISHED)
    return {sockets[i][1] for i in _socket_inodes(pid) if i in sockets}


def environ(pid: int) -> dict[str, str]:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
    return {}


def port_owner(port: int) -> int | None:
    """The PID of a process listening on `port`, or None."""
    inodes = {i for i, p in _listening_inodes().items() if p == port}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _socket_inodes(int(entry)) & inodes:
            return int(entry)
    return None


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


def pids_matching(fragment: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and fragment in cmdline(int(e))]


def pids_named(name: str) -> list[int]:
    """Processes titled `name`, as Ray titles an actor's process: `ray::Actor` when idle,
    `ray::Actor.method()` while a call runs (a request may still be finishing)."""
    found = []
    for e in os.listdir("/proc"):
        if (
            e.isdigit()
            and (title := cmdline(int(e)))
            and (title == name or title.startswith(f"{name}."))
        ):
            found.append(int(e))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def parent_pid(pid: int) -> int | None:
    """The parent's PID, or None if the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
