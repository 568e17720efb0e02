"""The fault suite's harness, shared by tests/test_faults.py and tests/test_faults_cluster.py (no
tests here): the Serve config the fault runs deploy, the steady load and the keep-alive clients
that never retry, Ray's HAProxy request log and the classifier that reads it, waiting, and the
figures each module publishes to out/faults/figures.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from bounds import CLUSTER_CHANGE_S, PROCESS_EXIT_S, REQUEST_S

from infra.config import StackConfig
from raygke import local
from raygke.smoke.contract import AppEndpoint, Endpoints
from raygke.smoke.transport import Client, Result

FIGURES_PATH = Path(__file__).resolve().parents[1] / "out" / "faults" / "figures.json"
ECHO = AppEndpoint("echo", "echo", "/echo", "raygke.echo.v1.EchoService", "echo")


class Served(Protocol):
    """A fault run, as the load sees it: where our tier serves."""

    @property
    def endpoints(self) -> Endpoints: ...


# ---------------------------------------------------------------------------------------------
# The Serve config


def fault_serve_config(
    config: StackConfig,
    *,
    apps: Collection[str] | None = None,
    version: str | None = None,
    tight: bool = False,
) -> dict[str, Any]:
    """The stack's local Serve config with two replicas of echo's EchoIngress and Echo (so one can
    hang or die while the other serves; a local run holds one replica per fixed deployment).
    `apps` keeps only those apps; `version` is echo's `version` arg (what a redeploy changes);
    `tight` adds `tight`, a copy of echo with one replica of each deployment and an ingress that
    takes one request and queues one (the overload case)."""
    base = json.loads(json.dumps(local.local_serve_config(config)))  # ours to change
    kept = [a for a in base["applications"] if apps is None or a["name"] in apps]
    for app in kept:
        if app["name"] != "echo":
            continue
        if version is not None:
            app["args"] = {**app["args"], "version": version}
        for dep in app["deployments"]:
            if dep["name"] in ("EchoIngress", "Echo"):
                dep["num_replicas"] = 2
    if tight:
        [echo] = [a for a in kept if a["name"] == "echo"]
        copy = json.loads(json.dumps(echo))
        copy.update(
            name="tight", route_prefix="/tight", args={"version": "tight", "payload_size": 8}
        )
        for dep in copy["deployments"]:
            dep["num_replicas"] = 1
            if dep["name"] == "EchoIngress":
                # One request served, one waiting; the rest are turned away at once.
                dep.update(max_ongoing_requests=1, max_queued_requests=1)
        kept.append(copy)
    return {**base, "applications": kept}


# ---------------------------------------------------------------------------------------------
# Waiting and figures


def wait_for(what: str, predicate: Callable[[], bool], limit_s: float) -> float:
    """Polls until `predicate()` holds; returns the seconds it took. The limit bounds a hang."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if predicate():
                return time.monotonic() - t0
        if time.monotonic() - t0 > limit_s:
            raise AssertionError(f"gave up after {limit_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def publish_figures(request: pytest.FixtureRequest, section: str, figures: dict[str, Any]) -> None:
    """Writes `figures` as `section` of out/faults/figures.json (keeping the other module's
    section) and prints them past pytest's capture."""
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(FIGURES_PATH.read_text())
    except (OSError, ValueError):
        data = {}
    data["machine"] = {"nproc": os.cpu_count(), "cpu": _cpu_model()}
    data[section] = figures
    FIGURES_PATH.write_text(json.dumps(data, indent=2) + "\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    lines = [f"fault suite figures ({FIGURES_PATH}, `{section}`):"]
    lines += [f"  {case}: {json.dumps(fig)}" for case, fig in figures.items()]
    disabled = getattr(capture, "global_and_fixture_disabled", None)
    with disabled() if disabled else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


# ---------------------------------------------------------------------------------------------
# Ray's HAProxy log


# One `option httplog` line, after the syslog header: frontend, backend/server, timers
# (TR/Tw/Tc/Tr/Ta), status, bytes, two cookies, the termination state, the connection counts
# (the last one retries, `+` when redispatched), the queues, captured headers, the request line.
_HTTPLOG = re.compile(
    r"\] (?P<fe>\S+) (?P<be>[^/ ]+)/(?P<srv>\S+) (?P<timers>\S+) (?P<status>-?\d+) \+?\d+ "
    r"\S+ \S+ (?P<ts>\S{2,4}) (?P<conns>[\d/+]+) \S+ (?:\{[^}]*\} )*\"(?P<req>[^\"]*)"
)


@dataclass
class LogLine:
    """What Ray's HAProxy logged for one request, the moment it ended."""

    frontend: str
    server: str
    status: int
    term: str  # termination state: cause (`S`: the server ended it) then the stage it was in
    retries: str
    request: str

    @property
    def transport(self) -> str:
        return "grpc" if self.frontend.startswith("grpc") else "http"

    @property
    def rid(self) -> int | None:
        found = re.search(r"[?&]rid=(\d+)", self.request)
        return int(found[1]) if found else None

    def cut_by_server_on(self, servers: set[str]) -> bool:
        """Sent to one of `servers`, which then went away waiting for the reply's headers (`H`)
        or during its data (`D`): the request had reached that replica."""
        return self.server in servers and self.term[:1] == "S" and self.term[1:2] in "HD"


class RayHaproxyLog:
    """A UDP syslog sink for Ray's HAProxy (`RAY_SERVE_HAPROXY_LOG_TARGET`): keeps each line."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.target = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._raw: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                data = self._sock.recv(65536)
                self._raw.append((time.monotonic(), data.decode(errors="replace")))

    def received(self) -> int:
        return len(self._raw)

    def lines(self, since: float = 0.0, until: float = math.inf) -> list[LogLine]:
        """What was logged from `since` to `until` (monotonic seconds, as the load's samples)."""
        found = []
        for at, text in list(self._raw):
            if since <= at < until and (m := _HTTPLOG.search(text)):
                conns = m["conns"].rsplit("/", 1)[-1]
                found.append(LogLine(m["fe"], m["srv"], int(m["status"]), m["ts"], conns, m["req"]))
        return found

    def settle(self, quiet_s: float = 1.0, limit_s: float = PROCESS_EXIT_S) -> None:
        """Waits until no line has come for `quiet_s` (what ends at the load's end is logged)."""
        seen = [-1]

        def quiet() -> bool:
            n = self.received()
            if n != seen[0]:
                seen[0] = n
                return False
            return True

        t0 = time.monotonic()
        while not quiet():
            if time.monotonic() - t0 > limit_s:
                raise AssertionError(f"Ray's HAProxy kept logging past {limit_s} s")
            time.sleep(quiet_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Sample:
    rid: int  # the request's id: HTTP sends it as `rid=` in the URL, which Ray's HAProxy logs
    at: float  # monotonic seconds when the request was sent
    took: float
    transport: str
    ok: bool
    error: str | None
    version: str | None


class SteadyLoad:
    """Unary requests to an app through our tier, over HTTP (aiohttp, keep-alive) and gRPC, from
    `users` closed-loop users per transport with a short pause between requests, in a thread with
    its own event loop. `submit` runs one-off coroutines (long streams) on the same client."""

    def __init__(self, run: Served, app: AppEndpoint = ECHO, users: int = 2, pause_s: float = 0.01):
        self.run, self.app, self.users, self.pause_s = run, app, users, pause_s
        self.samples: list[Sample] = []
        self._rids = itertools.count()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Client | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        assert self._ready.wait(REQUEST_S), "load did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2 * REQUEST_S)  # each user ends its last request
        assert not self._thread.is_alive(), "load did not stop"
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with Client(self.run.endpoints, timeout_s=REQUEST_S, grpc_channels=2) as client:
            self._client = client
            users = [self._user(client, "http") for _ in range(self.users)]
            users += [self._user(client, "grpc") for _ in range(self.users)]
            tasks = [asyncio.create_task(u) for u in users]
            self._ready.set()
            await asyncio.gather(*tasks)

    async def _user(self, client: Client, transport: str) -> None:
        while not self._stop.is_set():
            rid = next(self._rids)
            at = time.monotonic()
            start = time.perf_counter()
            if transport == "http":
                path = f"/unary?size=64&rid={rid}"  # the app ignores `rid`; Ray's HAProxy logs it
                result = await client.http_json(self.app, path, None, start, True)
                version = result.body.get("version") if result.ok else None
            else:
                result = await client.grpc_unary(self.app, 64, start, True)
                version = result.body.version if result.ok else None
            self.samples.append(
                Sample(rid, at, result.latency_s, transport, result.ok, result.error, version)
            )
            await asyncio.sleep(self.pause_s)

    def submit(self, make: Callable[[Client], Coroutine[Any, Any, Result]]) -> Future[Result]:
        assert self._loop is not None and self._client is not None
        return asyncio.run_coroutine_threadsafe(make(self._client), self._loop)

    def count(self, transport: str, since: float = 0.0) -> int:
        return sum(1 for s in list(self.samples) if s.transport == transport and s.at >= since)

    def wait_for_requests(
        self, n: int, since: float = 0.0, limit_s: float = CLUSTER_CHANGE_S
    ) -> None:
        wait_for(
            f"{n} requests per transport",
            lambda: min(self.count("http", since), self.count("grpc", since)) >= n,
            limit_s,
        )

    def figures(self, since: float = 0.0) -> dict[str, Any]:
        mine = [s for s in self.samples if s.at >= since]
        errors = Counter(f"{s.transport}:{s.error}" for s in mine if not s.ok)
        return {
            "requests_http": sum(1 for s in mine if s.transport == "http"),
            "requests_grpc": sum(1 for s in mine if s.transport == "grpc"),
            "failed": sum(errors.values()),
            "errors": dict(errors),
        }


class RawKeepAlive:
    """Keep-alive HTTP/1.1 clients that never retry (`http.client`, one connection per thread):
    the clients an haproxy reload can fail. aiohttp, grpc and the smoke client resend a request
    whose idle connection closed under it, so they hide the race this one exposes."""

    def __init__(self, port: int, users: int = 4, pause_s: float = 0.02) -> None:
        self.port, self.users, self.pause_s = port, users, pause_s
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._user, daemon=True) for _ in range(users)]

    def _user(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_S)
                conn.request("GET", f"{ECHO.route_prefix}/unary?size=64")
                response = conn.getresponse()
                response.read()
                with self._lock:
                    if response.status == 200:
                        self.ok += 1
                    else:
                        self.errors[f"http_{response.status}"] += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(self.pause_s)
        if conn is not None:
            conn.close()

    def __enter__(self) -> RawKeepAlive:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def figures(self) -> dict[str, Any]:
        return {"requests": self.ok + sum(self.errors.values()), "failed": sum(self.errors.values()),
                "errors": dict(self.errors)}  # fmt: skip


def long_stream(transport: str, app: AppEndpoint, chunks: int, tpot_ms: int):
    """A paced stream (one chunk every `tpot_ms`), as a coroutine factory for `SteadyLoad.submit`."""

    async def run(client: Client) -> Result:
        start = time.perf_counter()
        if transport == "http":
            return await client.http_stream(app, chunks, 16, start, True, tpot_ms=tpot_ms)
        return await client.grpc_stream(app, chunks, 16, start, True, tpot_ms=tpot_ms)

    return run


def stream_figures(result: Result, chunks: int) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "error": result.error,
        "chunks": result.chunks,
        "of": chunks,
        "seconds": round(result.latency_s, 2),
    }


# ---------------------------------------------------------------------------------------------
# Who a failed request reached


def classify_failures(
    failed: list[Sample], lines: list[LogLine], victim: set[str]
) -> dict[str, Counter[str]]:
    """Each failed request, as `reached_victim` or `retry_safe` (see the replica-kill case)."""
    cut = [line for line in lines if line.cut_by_server_on(victim)]
    cut_rids = {line.rid for line in cut if line.transport == "http"}
    grpc_cut = sum(1 for line in cut if line.transport == "grpc")
    classes: dict[str, Counter[str]] = {"reached_victim": Counter(), "retry_safe": Counter()}
    for sample in sorted(failed, key=lambda s: s.at):
        if sample.transport == "http":
            reached = sample.rid in cut_rids
        else:
            reached, grpc_cut = grpc_cut > 0, grpc_cut - 1
        classes["reached_victim" if reached else "retry_safe"][
            f"{sample.transport}:{sample.error}"
        ] += 1
    return classes


FAILURE_CLASSES = {
    "reached_victim": "in flight on the killed replica: Ray's HAProxy had sent it there and logged "
    "the server going away before or during the reply (termination state SH/SD); not safe to "
    "replay, the replica may have acted on it",
    "retry_safe": "no replica had it (refused or reset before it was sent, or a proxy without a "
    "server for it): a proxy should have retried it",
}
