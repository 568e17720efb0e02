"""raygke/host.py: free ports (by name), a port in use, and a process's state, parent and session as
/proc/<pid>/stat tells them (checked against what the kernel tells Python)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bounds import CLI_START_S, PROCESS_EXIT_S

from raygke import host


@pytest.mark.pure
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = host.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.pure
def test_plan_ports_gives_each_name_a_port_keeping_the_asked_and_avoiding_the_rest() -> None:
    avoid = set(host.free_ports(20))
    ports = host.plan_ports(
        ("http", "grpc", "stats"), asked={"http": 18080, "grpc": None}, avoid=avoid
    )
    assert list(ports) == ["http", "grpc", "stats"] and ports["http"] == 18080
    assert len(set(ports.values())) == 3 and not avoid & set(ports.values())
    for port in (ports["grpc"], ports["stats"]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.pure
def test_port_in_use_sees_a_listener_and_only_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert host.port_in_use(port)
    assert not host.port_in_use(port)


@pytest.mark.pure
def test_proc_stat_reads_this_process_as_the_kernel_does() -> None:
    stat = host.proc_stat(os.getpid())
    assert stat is not None
    assert (stat.state, stat.ppid, stat.session) == ("R", os.getppid(), os.getsid(0))


@pytest.mark.process
def test_proc_stat_survives_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # The kernel names a process after its executable; this one ends in ") S 1 2 3" to mislead
    # a parser that splits at the first ")".
    odd = tmp_path / "x) S 1 2 3"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen(
        [str(odd), "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        stat = host.proc_stat(child.pid)
        assert stat is not None
        assert (stat.ppid, stat.session) == (os.getpid(), child.pid)
        assert host.alive(child.pid)
    finally:
        child.kill()
        child.wait()


@pytest.mark.process
def test_a_zombie_is_not_alive_and_a_reaped_process_is_gone() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while (stat := host.proc_stat(child.pid)) is not None and stat.state != "Z":
        assert time.monotonic() < deadline, "`true` did not exit in 30 s"
        time.sleep(0.05)
    # Exited, not yet reaped: the PID still answers kill(pid, 0), yet nothing runs.
    assert stat is not None and stat.state == "Z"
    os.kill(child.pid, 0)
    assert not host.alive(child.pid)
    child.wait()
    assert host.proc_stat(child.pid) is None and not host.alive(child.pid)


@pytest.mark.pure
def test_pss_counts_a_process_memory_and_nothing_once_it_is_gone() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = bytearray(64 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + CLI_START_S  # a child Python's start and allocation
        while host.pss_bytes(child.pid) < 64 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.pss_bytes(child.pid) >= 64 << 20
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=PROCESS_EXIT_S)
    assert host.pss_bytes(child.pid) == 0
