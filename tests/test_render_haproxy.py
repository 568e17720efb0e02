"""The haproxy.cfg renderer: validation, the IngressSpec builder, golden files, invariants over
any spec, the real `haproxy -c` (raygke/tier.py runs it), and one real run of haproxy in front of
two local fake Ray nodes (HTTP and gRPC).

Regenerate the golden files after an intended change with
`RAYGKE_UPDATE_GOLDEN=1 pytest tests/test_render_haproxy.py -k golden`, then review the diff.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from bounds import CLI_START_S, PROCESS_EXIT_S, REQUEST_S
from hypothesis import given, settings
from hypothesis import strategies as st

from components.render import haproxy as hp
from components.render.haproxy import (
    MAX_DEADLINE_S,
    MIN_STREAM_TIMEOUT_S,
    AppDeadline,
    Bind,
    DnsBackends,
    HealthCheck,
    IngressSpec,
    StaticBackends,
    StaticServer,
    Timeouts,
    TlsBind,
    ingress_spec,
    render_haproxy_cfg,
)
from components.render.ingress_tier import cluster_ingress_spec
from raygke import host, tier
from raygke.tier import check_config

GOLDEN = Path(__file__).parent / "golden"

LOCAL_SPEC = IngressSpec(
    http=Bind("127.0.0.1", 8080),
    grpc=Bind("127.0.0.1", 9080),
    stats=Bind("127.0.0.1", 8404),
    metrics=Bind("127.0.0.1", 8405),
    backends=StaticBackends((StaticServer("ray-local", "127.0.0.1", 8000, 9000),)),
    routes=("/echo", "/recsys"),
    pidfile="/tmp/raygke-local/haproxy.pid",
    deadlines=(AppDeadline("echo", 30, "/echo"), AppDeadline("recsys", 5, "/recsys")),
)
CLUSTER_SPEC = cluster_ingress_spec(
    "echo-serve-svc.serve.svc.cluster.local",
    routes=("/echo", "/recsys"),
    tls=True,
    deadlines=(AppDeadline("echo", 30, "/echo"), AppDeadline("recsys", 5, "/recsys")),
)


def self_signed_pem(directory: Path) -> str:
    """A throwaway certificate for 127.0.0.1, key beside it as `<pem>.key`, as in the cluster."""
    pem = directory / "tls.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", f"{pem}.key", "-out", str(pem)],
        check=True, capture_output=True, timeout=CLI_START_S,
    )  # fmt: skip
    return str(pem)


@pytest.fixture(scope="module")
def tls_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    return self_signed_pem(tmp_path_factory.mktemp("tls"))


def with_local_pem(text: str, pem: str) -> str:
    """The cluster config with its mounted-secret path pointed at the test certificate."""
    return text.replace("/etc/haproxy-tls/tls.pem", pem)


# ---------------------------------------------------------------- golden files


@pytest.mark.pure
@pytest.mark.parametrize(
    ("spec", "golden"), [(LOCAL_SPEC, "haproxy_local.cfg"), (CLUSTER_SPEC, "haproxy_cluster.cfg")]
)
def test_golden(spec: IngressSpec, golden: str) -> None:
    path = GOLDEN / golden
    text = render_haproxy_cfg(spec)
    if os.environ.get("RAYGKE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{golden} changed; see this module's docstring to regenerate"


@pytest.mark.pure
def test_render_is_deterministic() -> None:
    assert render_haproxy_cfg(CLUSTER_SPEC) == render_haproxy_cfg(CLUSTER_SPEC)
    same = cluster_ingress_spec(
        "echo-serve-svc.serve.svc.cluster.local",
        routes=("/recsys", "/echo"),
        tls=True,
        deadlines=tuple(reversed(CLUSTER_SPEC.deadlines)),
    )
    assert render_haproxy_cfg(same) == render_haproxy_cfg(
        CLUSTER_SPEC
    )  # route and deadline order do not matter


@pytest.mark.process
@pytest.mark.parametrize("golden", ["haproxy_local.cfg", "haproxy_cluster.cfg"])
def test_golden_passes_haproxy_check(golden: str, tls_pem: str) -> None:
    check_config(with_local_pem((GOLDEN / golden).read_text(), tls_pem))


# ---------------------------------------------------------------- what the text says


@pytest.mark.pure
def test_routing_prefixes_health_and_grpc() -> None:
    text = render_haproxy_cfg(LOCAL_SPEC)
    assert "acl is_route path /echo /recsys /-/healthz\n" in text
    assert "acl is_route path_beg /echo/ /recsys/\n" in text
    assert "acl is_grpc req.hdr(content-type) -m beg application/grpc" in text
    assert "unless is_route || is_grpc" in text
    assert "bind 127.0.0.1:9080 proto h2" in text


@pytest.mark.pure
def test_deadlines_set_each_apps_server_timeout() -> None:
    text = render_haproxy_cfg(LOCAL_SPEC)
    http, grpc_ = text.split("backend be_ray_http\n")[1].split("backend be_ray_grpc\n")
    # HTTP by route prefix, with Ray's prefix semantics; gRPC by the `application` header.
    assert (
        "    acl dl_http_echo path /echo\n    acl dl_http_echo path_beg /echo/\n"
        "    http-request set-timeout server 30s if dl_http_echo\n"
    ) in http
    assert "    http-request set-timeout server 5s if dl_http_recsys\n" in http
    assert (
        "    acl dl_grpc_recsys req.hdr(application) -m str recsys\n"
        "    http-request set-timeout server 5s if dl_grpc_recsys\n"
    ) in grpc_
    assert "dl_grpc" not in http and "dl_http" not in grpc_
    # Anything unmatched keeps the long default.
    assert "    timeout server 3600s\n" in text
    # A timed-out gRPC call reads DEADLINE_EXCEEDED (grpc-status 4), not UNAVAILABLE.
    assert (
        '    http-error status 504 hdr grpc-status 4 hdr grpc-message "deadline exceeded at '
        'the ingress tier"\n'
    ) in grpc_


@pytest.mark.pure
def test_longest_prefix_deadline_is_set_last_so_it_wins() -> None:
    # haproxy applies every matching set-timeout in order: the last one is what holds.
    spec = _spec(
        routes=("/",),
        deadlines=(
            AppDeadline("deep", 7, "/a/b"),
            AppDeadline("root", 9, "/"),
            AppDeadline("a", 8, "/a"),
        ),
    )
    text = render_haproxy_cfg(spec)
    order = re.findall(r"set-timeout server \d+s if (dl_http_\w+)", text)
    assert order == ["dl_http_root", "dl_http_a", "dl_http_deep"]
    assert "    acl dl_http_root path_beg /\n" in text


@pytest.mark.pure
def test_no_deadlines_no_rules() -> None:
    text = render_haproxy_cfg(_spec())
    assert "set-timeout" not in text and "acl dl_" not in text


@pytest.mark.pure
def test_root_route_sends_everything_to_http() -> None:
    spec = IngressSpec(
        http=Bind("127.0.0.1", 1), backends=LOCAL_SPEC.backends, routes=("/", "/echo")
    )
    text = render_haproxy_cfg(spec)
    assert "default_backend be_ray_http" in text
    assert "return status 404" not in text
    assert "be_ray_grpc" in text  # gRPC content still goes to gRPC on the HTTP port


@pytest.mark.pure
def test_static_servers_and_grpc_checks() -> None:
    text = render_haproxy_cfg(LOCAL_SPEC)
    assert "server ray-local 127.0.0.1:8000 check\n" in text
    assert "server ray-local 127.0.0.1:9000 proto h2 check port 8000 check-proto h1\n" in text
    assert "http-check send meth GET uri /-/healthz" in text
    # Defaults tuned by the fault suite (tests/test_faults.py, docs/reliability.md): a dead Ray
    # pod is out after its first connection error, a sick one after 2 s + 250 ms of checks.
    assert (
        "default-server inter 2000ms fastinter 250ms downinter 1000ms fall 2 rise 2 "
        "observe layer4 error-limit 1 on-error mark-down\n"
    ) in text


@pytest.mark.pure
def test_http_only_servers_get_no_grpc_backend() -> None:
    spec = IngressSpec(
        http=Bind("127.0.0.1", 1),
        backends=StaticBackends((StaticServer("a", "127.0.0.1", 8000),)),
    )
    text = render_haproxy_cfg(spec)
    assert "be_ray_grpc" not in text and "is_grpc" not in text


@pytest.mark.pure
def test_dns_discovery() -> None:
    text = render_haproxy_cfg(CLUSTER_SPEC)
    assert "resolvers cluster_dns\n    parse-resolv-conf\n" in text
    assert (
        "server-template ray 16 echo-serve-svc.serve.svc.cluster.local:8000 check "
        "resolvers cluster_dns resolve-prefer ipv4 init-addr none\n"
    ) in text
    assert (
        ":9000 proto h2 check resolvers cluster_dns" in text and "port 8000 check-proto h1" in text
    )
    pinned = IngressSpec(
        http=Bind("0.0.0.0", 80),
        backends=DnsBackends("ray.ns.svc.cluster.local", nameservers=("10.0.0.10:53",)),
    )
    assert "nameserver dns1 10.0.0.10:53" in render_haproxy_cfg(pinned)


def _hold_seconds(text: str, status: str) -> int:
    match = re.search(rf"^    hold {status} (\d+)s$", text, re.MULTILINE)
    assert match is not None, f"no `hold {status}` line"
    return int(match[1])


@pytest.mark.pure
@pytest.mark.parametrize("hold_valid_s", [1, 5, 10, 60])
def test_forget_s_is_what_the_resolvers_section_holds(hold_valid_s: int) -> None:
    """How long the tier keeps a vanished pod (the RayService's deletion delay builds on it) is read
    from the very lines haproxy gets: `hold valid` plus `hold obsolete`."""
    dns = DnsBackends("ray.ns.svc.cluster.local", hold_valid_s=hold_valid_s)
    text = render_haproxy_cfg(IngressSpec(http=Bind("0.0.0.0", 80), backends=dns))
    assert _hold_seconds(text, "obsolete") == hp.DNS_HOLD_OBSOLETE_S
    assert _hold_seconds(text, "valid") == hold_valid_s
    assert dns.forget_s == hold_valid_s + hp.DNS_HOLD_OBSOLETE_S
    cluster = CLUSTER_SPEC.backends  # the cluster's: hold valid 5 s + hold obsolete 30 s
    assert isinstance(cluster, DnsBackends) and cluster.forget_s == 35


@pytest.mark.pure
def test_tls_stats_metrics_and_unprivileged_global() -> None:
    text = render_haproxy_cfg(CLUSTER_SPEC)
    assert "bind 0.0.0.0:8443 ssl crt /etc/haproxy-tls/tls.pem alpn h2,http/1.1" in text
    assert "http-request use-service prometheus-exporter if { path /metrics }" in text
    assert "monitor-uri /healthz" in text and "stats uri /stats" in text
    glob = text.split("\ndefaults")[0]
    for word in ("chroot", "user ", "group ", "daemon"):
        assert word not in glob


@pytest.mark.pure
def test_logs_off_by_default_and_optional_pidfile() -> None:
    quiet = render_haproxy_cfg(CLUSTER_SPEC)
    assert "log " not in quiet and "httplog" not in quiet and "pidfile" not in quiet
    loud = render_haproxy_cfg(IngressSpec(http=Bind("127.0.0.1", 1), backends=LOCAL_SPEC.backends,
                                          access_log=True, pidfile="/run/h.pid"))  # fmt: skip
    assert "log stdout format raw local0" in loud and "option httplog" in loud
    assert "pidfile /run/h.pid" in loud


@pytest.mark.pure
def test_tuning_knobs() -> None:
    spec = IngressSpec(http=Bind("127.0.0.1", 1), backends=LOCAL_SPEC.backends, maxconn=777,
                       nbthread=None, retries=1, health=HealthCheck(inter_ms=250, fall=5, rise=4),
                       timeouts=Timeouts(connect_s=2, client_s=30, server_s=900))  # fmt: skip
    text = render_haproxy_cfg(spec)
    assert "maxconn 777" in text and "nbthread" not in text and "retries 1" in text
    assert "timeout connect 2s" in text and "timeout client 30s" in text
    assert "timeout server 900s" in text
    assert (
        "default-server inter 250ms fastinter 250ms downinter 1000ms fall 5 rise 4 "
        "observe layer4 error-limit 1 on-error mark-down\n"
    ) in text
    quiet = render_haproxy_cfg(
        IngressSpec(http=Bind("127.0.0.1", 1), backends=LOCAL_SPEC.backends,
                    health=HealthCheck(fastinter_ms=500, downinter_ms=2000, error_limit=0))
    )  # fmt: skip
    assert "fastinter 500ms downinter 2000ms fall 2 rise 2\n" in quiet and "observe" not in quiet


@pytest.mark.pure
def test_reload_knobs() -> None:
    """Seamless reloads: the listeners' socket only when asked, hard-stop-after always, and idle
    keep-alive connections answered rather than closed by the old process."""
    plain = render_haproxy_cfg(CLUSTER_SPEC)
    assert "stats socket" not in plain and "hard-stop-after 3600s" in plain
    assert "    option idle-close-on-response\n" in plain
    spec = _spec(admin_socket="/run/tier.sock", hard_stop_after_s=7200)
    text = render_haproxy_cfg(spec)
    assert "    stats socket /run/tier.sock mode 600 level admin expose-fd listeners\n" in text
    assert "    hard-stop-after 7200s\n" in text
    assert "idle-close-on-response" not in render_haproxy_cfg(_spec(idle_close_on_response=False))


# ---------------------------------------------------------------- validation


@pytest.mark.pure
def test_ingress_spec_puts_every_listener_on_one_host() -> None:
    full = ingress_spec(
        "127.0.0.1",
        LOCAL_SPEC.backends,
        http=1001,
        grpc=1002,
        stats=1003,
        metrics=1004,
        https=1005,
        tls_pem="/etc/tls.pem",
        routes=["/echo"],
    )
    assert full.tls is not None and full.tls.pem == "/etc/tls.pem"
    binds = (full.http, full.grpc, full.stats, full.metrics, full.tls.bind)
    assert binds == tuple(Bind("127.0.0.1", port) for port in range(1001, 1006))
    assert full.routes == ("/echo",)
    bare = ingress_spec("0.0.0.0", LOCAL_SPEC.backends, http=1001, stats=1003)
    assert (bare.grpc, bare.metrics, bare.tls, bare.routes) == (None, None, None, ("/",))


def _spec(**overrides: Any) -> IngressSpec:
    fields: dict[str, Any] = {"http": Bind("127.0.0.1", 8080), "backends": LOCAL_SPEC.backends}
    return IngressSpec(**{**fields, **overrides})


INVALID: list[tuple[Callable[[], object], str]] = [
    (
        lambda: ingress_spec("0.0.0.0", LOCAL_SPEC.backends, http=8080, stats=8404, https=8443),
        "an HTTPS listener needs both a port and a pem; got 8443 and None",
    ),
    (
        lambda: ingress_spec("0.0.0.0", LOCAL_SPEC.backends, http=8080, stats=8404, tls_pem="/t"),
        "an HTTPS listener needs both a port and a pem; got None and /t",
    ),
    (lambda: Bind("localhost", 80), "IPv4"),
    (lambda: Bind("127.0.0.1", 0), "between 1 and 65535"),
    (lambda: Bind("127.0.0.1", 70000), "between 1 and 65535"),
    (lambda: TlsBind(Bind("0.0.0.0", 443), "relative.pem"), "absolute path"),
    (lambda: StaticServer("bad name", "127.0.0.1", 8000), "server name"),
    (lambda: StaticServer("a", "127.0.0.1 x", 8000), "hostname or IPv4"),
    (lambda: StaticServer("a", "127.0.0.1", 8000, 0), "grpc_port of server a"),
    (lambda: StaticBackends(()), "at least one server"),
    (lambda: StaticBackends((StaticServer("a", "h", 1), StaticServer("a", "h", 2))), "unique"),
    (lambda: DnsBackends("bad fqdn"), "not a DNS name"),
    (lambda: DnsBackends("svc.ns", slots=0), "slots"),
    (lambda: DnsBackends("svc.ns", nameservers=("kube-dns",)), "nameserver"),
    (lambda: DnsBackends("svc.ns", hold_valid_s=0), "hold_valid_s"),
    (lambda: HealthCheck(path="-/healthz"), "health path"),
    (lambda: HealthCheck(inter_ms=10), "inter_ms"),
    (lambda: HealthCheck(fall=0), "fall and rise"),
    (lambda: HealthCheck(fastinter_ms=50), "fastinter_ms must be at least 100; got 50"),
    (lambda: HealthCheck(downinter_ms=0), "downinter_ms must be at least 100; got 0"),
    (
        lambda: HealthCheck(error_limit=-1),
        "error_limit must be between 0 \\(off\\) and 100; got -1",
    ),
    (
        lambda: HealthCheck(error_limit=101),
        "error_limit must be between 0 \\(off\\) and 100; got 101",
    ),
    (lambda: Timeouts(connect_s=0), "connect_s"),
    (lambda: Timeouts(server_s=60), "streams are not cut"),
    (lambda: Timeouts(tunnel_s=MIN_STREAM_TIMEOUT_S - 1), "streams are not cut"),
    (lambda: _spec(routes=("echo",)), "route prefix"),
    (lambda: _spec(routes=("/a b",)), "route prefix"),
    (lambda: _spec(routes=()), "at least one prefix"),
    (lambda: _spec(grpc=Bind("127.0.0.1", 8080)), "own port"),
    (
        lambda: _spec(
            grpc=Bind("127.0.0.1", 9000),
            backends=StaticBackends((StaticServer("a", "127.0.0.1", 8000),)),
        ),
        "grpc_port",
    ),
    (lambda: _spec(retries=11), "retries"),
    (lambda: _spec(maxconn=0), "maxconn"),
    (lambda: _spec(nbthread=0), "nbthread"),
    (lambda: _spec(pidfile="haproxy.pid"), "pidfile"),
    (lambda: _spec(hard_stop_after_s=60), "hard_stop_after_s must be at least 300 .*; got 60"),
    (lambda: _spec(admin_socket="tier.sock"), "admin_socket must be an absolute path.*'tier.sock'"),
    (lambda: _spec(admin_socket="/tmp/a b.sock"), "admin_socket must be an absolute path"),
    (lambda: _spec(admin_socket="/" + "s" * 96), "at most 96 characters"),
    (lambda: AppDeadline("bad name", 30), "deadline application must match"),
    (lambda: AppDeadline("echo", 30, "echo"), "deadline route prefix must match"),
    (lambda: AppDeadline("echo", 0), "deadline of echo must be between 1 and 300 seconds.*got 0"),
    (lambda: AppDeadline("echo", MAX_DEADLINE_S + 1), "between 1 and 300 seconds.*got 301"),
    (lambda: AppDeadline("echo", True), "whole number of seconds; got True"),
    (lambda: AppDeadline("echo", 2.5), "whole number of seconds; got 2.5"),  # type: ignore[arg-type]
    (
        lambda: _spec(deadlines=(AppDeadline("a", 5, "/a"), AppDeadline("a", 6, "/b"))),
        "one deadline per application; got \\['a', 'a'\\]",
    ),
    (
        lambda: _spec(deadlines=(AppDeadline("a", 5, "/x"), AppDeadline("b", 6, "/x/"))),
        "one deadline per route prefix",
    ),
    (
        lambda: _spec(timeouts=Timeouts(client_s=60), deadlines=(AppDeadline("a", 90, "/a"),)),
        "deadline of a \\(90 s\\) must not exceed the client and server timeouts \\(60 s, 3600 s\\)",
    ),
]


@pytest.mark.pure
@pytest.mark.parametrize(("build", "match"), INVALID)
def test_invalid_specs_are_rejected(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


# ---------------------------------------------------------------- any spec: properties

_ports = st.integers(min_value=1025, max_value=65535)
_names = st.from_regex(r"\A[a-z][a-z0-9_.-]{0,10}\Z")
_prefixes = st.from_regex(r"\A/[A-Za-z0-9._~-]{0,8}(/[A-Za-z0-9._~-]{1,8}){0,2}/?\Z")


@st.composite
def specs(draw: st.DrawFn) -> IngressSpec:
    port_list = draw(st.lists(_ports, min_size=5, max_size=5, unique=True))
    ip = draw(st.sampled_from(["127.0.0.1", "0.0.0.0"]))
    if draw(st.booleans()):
        names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
        servers = tuple(
            StaticServer(n, "127.0.0.1", draw(_ports), draw(st.none() | _ports)) for n in names
        )
        backends: StaticBackends | DnsBackends = StaticBackends(servers)
    else:
        backends = DnsBackends(
            draw(st.sampled_from(["ray.default.svc.cluster.local", "b.ns.svc.example.org"])),
            slots=draw(st.integers(1, 64)),
            http_port=draw(_ports),
            grpc_port=draw(st.none() | _ports),
            nameservers=tuple(draw(st.lists(st.just("10.0.0.10:53"), max_size=1))),
        )
    with_grpc = hp._has_grpc(backends)
    return IngressSpec(
        http=Bind(ip, port_list[0]),
        grpc=Bind(ip, port_list[1]) if with_grpc and draw(st.booleans()) else None,
        stats=Bind(ip, port_list[2]) if draw(st.booleans()) else None,
        metrics=Bind(ip, port_list[3]) if draw(st.booleans()) else None,
        backends=backends,
        routes=tuple(draw(st.lists(_prefixes, min_size=1, max_size=5))),
        health=HealthCheck(
            inter_ms=draw(st.integers(100, 10_000)),
            fastinter_ms=draw(st.integers(100, 10_000)),
            downinter_ms=draw(st.integers(100, 10_000)),
            fall=draw(st.integers(1, 10)),
            rise=draw(st.integers(1, 10)),
            error_limit=draw(st.integers(0, 100)),
        ),
        timeouts=Timeouts(
            server_s=draw(st.integers(MIN_STREAM_TIMEOUT_S, 86_400)),
            tunnel_s=draw(st.integers(MIN_STREAM_TIMEOUT_S, 86_400)),
        ),
        retries=draw(st.integers(0, 10)),
        retry_empty_response=draw(st.booleans()),
        maxconn=draw(st.integers(1, 100_000)),
        nbthread=draw(st.none() | st.integers(1, 64)),
        access_log=draw(st.booleans()),
        hard_stop_after_s=draw(st.integers(MIN_STREAM_TIMEOUT_S, 86_400)),
        admin_socket=draw(st.none() | st.just("/tmp/raygke-tier.sock")),
        deadlines=tuple(
            AppDeadline(f"app{i}", draw(st.integers(1, MAX_DEADLINE_S)), prefix)
            for i, prefix in enumerate(
                draw(st.lists(st.none() | _prefixes, max_size=4, unique_by=_bare))
            )
        ),
    )


def _bare(prefix: str | None) -> str | None:
    return prefix.rstrip("/") if prefix is not None else None


def _timeout_s(text: str, which: str) -> int:
    match = re.search(rf"^    timeout {which} (\d+)s$", text, re.MULTILINE)
    assert match, f"no timeout {which}"
    return int(match.group(1))


@pytest.mark.pure
@settings(max_examples=100, deadline=None)
@given(spec=specs())
def test_any_spec_keeps_the_invariants(spec: IngressSpec) -> None:
    text = render_haproxy_cfg(spec)
    # Retries only where no byte reached a replica; never on a 503 or any other answer.
    assert re.findall(r"^\s*retry-on .*$", text, re.MULTILINE) == [
        "    retry-on conn-failure" + (" empty-response" if spec.retry_empty_response else "")
    ]
    assert not re.search(r"^\s*(retry-on|http-response|http-after-response)\b.*\b503\b", text, re.M)
    assert "response-timeout" not in text  # a request past its deadline is never replayed
    assert "http-server-close" not in text and "httpclose" not in text
    assert "    option redispatch 1\n" in text  # each retry on another server
    assert "observe layer7" not in text  # a 503 answer never marks a Ray pod down
    hard_stop = re.search(r"^    hard-stop-after (\d+)s$", text, re.MULTILINE)
    assert hard_stop and int(hard_stop.group(1)) >= MIN_STREAM_TIMEOUT_S
    # Streams are not cut by the defaults; only an app's own deadline is shorter, and then only
    # for its requests.
    assert _timeout_s(text, "server") >= MIN_STREAM_TIMEOUT_S
    assert _timeout_s(text, "tunnel") >= MIN_STREAM_TIMEOUT_S
    set_to = re.findall(r"^    http-request set-timeout server (\d+)s if dl_(\w+)$", text, re.M)
    expected = [d for d in spec.deadlines if d.route_prefix is not None]
    if hp._has_grpc(spec.backends):
        expected += list(spec.deadlines)
    assert sorted(int(s) for s, _ in set_to) == sorted(d.seconds for d in expected)
    assert ("grpc-status 4" in text) == hp._has_grpc(spec.backends)
    assert text.count("balance leastconn") == (2 if hp._has_grpc(spec.backends) else 1)
    if isinstance(spec.backends, StaticBackends):
        for s in spec.backends.servers:
            assert f"server {s.name} {s.address}:{s.http_port} check\n" in text
            if s.grpc_port is not None:
                assert f"{s.address}:{s.grpc_port} proto h2 check port {s.http_port}" in text
    if "/" not in spec.routes:
        for prefix in spec.routes:
            assert f" {prefix.rstrip('/')}/" in text
    assert text == render_haproxy_cfg(spec)


@pytest.mark.process
@settings(max_examples=25, deadline=None)
@given(spec=specs())
def test_any_spec_passes_haproxy_check(spec: IngressSpec) -> None:
    check_config(render_haproxy_cfg(spec))


# ---------------------------------------------------------------- one real run


class _Handler(http.server.BaseHTTPRequestHandler):
    server_name = "?"

    def do_GET(self) -> None:
        body = json.dumps({"server": self.server_name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def fake_ray_node(name: str) -> Iterator[tuple[int, int, http.server.ThreadingHTTPServer]]:
    """One fake Ray node: an HTTP server (health, echo of its name) and a gRPC server (its name)."""
    handler = type(f"Handler_{name}", (_Handler,), {"server_name": name})
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    rpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {"Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: name.encode())},
            ),
        )
    )
    grpc_port = rpc.add_insecure_port("127.0.0.1:0")
    rpc.start()
    try:
        yield web.server_address[1], grpc_port, web
    finally:
        rpc.stop(grace=None)
        web.shutdown()
        web.server_close()


def wait_for(what: str, predicate: Callable[[], bool], limit_s: float = PROCESS_EXIT_S) -> None:
    """Poll until `predicate()` holds; the limit only bounds a hang, it is not a measurement."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_S, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def grpc_call(target: str, root_pem: bytes | None = None) -> str:
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root_pem))
        if root_pem
        else grpc.insecure_channel(target)
    )
    with channel:
        call = channel.unary_unary("/test.Echo/Unary")
        return call(b"ping", timeout=REQUEST_S, metadata=(("application", "echo"),)).decode()


@pytest.mark.process
def test_real_haproxy_routes_and_marks_a_down_node(tmp_path: Path, tls_pem: str) -> None:
    with fake_ray_node("a") as (a_http, a_grpc, _), fake_ray_node("b") as (b_http, b_grpc, b_web):
        ports = host.free_ports(5)
        spec = ingress_spec(
            "127.0.0.1",
            StaticBackends(
                (
                    StaticServer("a", "127.0.0.1", a_http, a_grpc),
                    StaticServer("b", "127.0.0.1", b_http, b_grpc),
                )
            ),
            http=ports[0],
            grpc=ports[1],
            stats=ports[2],
            https=ports[3],
            tls_pem=tls_pem,
            metrics=ports[4],
            routes=("/echo",),
            health=HealthCheck(inter_ms=100, fall=2, rise=1),
            nbthread=1,
        )
        pid = tier.start(spec, tmp_path)
        try:
            stats, http_url = ports[2], f"http://127.0.0.1:{ports[0]}"
            names = ("a", "b")
            wait_for(
                "both nodes UP",
                lambda: all(
                    tier.server_states(stats).get((be, n)) == "UP"
                    for be in ("be_ray_http", "be_ray_grpc")
                    for n in names
                ),
            )
            seen = set()
            for _ in range(20):
                status, body = get(f"{http_url}/echo/unary?size=3")
                assert status == 200
                assert json.loads(body)["path"] == "/echo/unary?size=3"
                seen.add(json.loads(body)["server"])
            assert seen == {"a", "b"}
            assert get(f"{http_url}/-/healthz")[0] == 200
            assert get(f"http://127.0.0.1:{ports[2]}/healthz")[0] == 200  # haproxy's own health
            status, body = get(f"http://127.0.0.1:{ports[4]}/metrics")
            assert status == 200 and 'haproxy_server_status{proxy="be_ray_http",server="a"' in body
            assert get(f"{http_url}/echoes")[0] == 404  # not under the /echo prefix
            assert json.loads(get(f"{http_url}/nowhere")[1]) == {"error": "no route"}
            # gRPC through the h2c port and through the HTTP port (content-type routing).
            assert {grpc_call(f"127.0.0.1:{ports[1]}") for _ in range(10)} == {"a", "b"}
            assert grpc_call(f"127.0.0.1:{ports[0]}") in names
            # HTTPS and gRPC over TLS (ALPN h2) on the TLS port, with the key beside the cert.
            tls = ssl.create_default_context(cafile=tls_pem)
            status, body = get(f"https://127.0.0.1:{ports[3]}/echo/unary", context=tls)
            assert status == 200 and json.loads(body)["server"] in names
            assert grpc_call(f"127.0.0.1:{ports[3]}", Path(tls_pem).read_bytes()) in names

            # Node b's HTTP port goes away: its health check fails, and so does its gRPC server's.
            b_web.shutdown()
            b_web.server_close()
            wait_for(
                "node b DOWN in both backends",
                lambda: (
                    tier.server_states(stats)[("be_ray_http", "b")].startswith("DOWN")
                    and tier.server_states(stats)[("be_ray_grpc", "b")].startswith("DOWN")
                ),
            )
            assert tier.server_states(stats)[("be_ray_http", "a")] == "UP"
            for _ in range(10):
                status, body = get(f"{http_url}/echo/x")
                assert (status, json.loads(body)["server"]) == (200, "a")
            assert {grpc_call(f"127.0.0.1:{ports[1]}") for _ in range(5)} == {"a"}
        finally:
            tier.stop(pid)
