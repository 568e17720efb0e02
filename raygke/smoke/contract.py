"""Reads and validates the `smoke` outputs contract (schema_version 3, 2 and 1; docs/architecture.md).

Owns: parsing a local run's file, a whole `pulumi stack output --json` document, or the Pulumi CLI's
output for `--stack`, into a typed `SmokeContract`; errors that name the offending field; which
objectives a deployment is gated on (a local run's `local_slo` over `slo`) and the stack key behind
each of them. Does not own: producing the contract (infra/outputs.py and `raygke local up` do that).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from infra.config import AppKind
from infra.outputs import DEFAULT_SLO
from infra.outputs import SMOKE_SCHEMA_VERSION as SCHEMA_VERSION

# Version 1 lacks what the LLM phase reads (`apps[].model`, `slo.llm`), version 2 a local run's
# `local_slo`; all still read.
KNOWN_VERSIONS = (1, 2, SCHEMA_VERSION)
APP_KINDS: tuple[str, ...] = get_args(AppKind)  # a custom app gets the health gate only

# The contract as docs/architecture.md shows it: documentation, and the base of tests' variations.
EXAMPLE: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "source": "pulumi",
    "stack": "dev",
    "http_url": "http://203.0.113.20:80",
    "grpc_target": "203.0.113.20:9000",
    "health_path": "/-/healthz",
    "apps": [
        {
            "name": "echo",
            "kind": "echo",
            "route_prefix": "/echo",
            "grpc_service": "raygke.echo.v1.EchoService",
            "grpc_application": "echo",
            "model": None,
        },
        {
            "name": "recsys",
            "kind": "recsys",
            "route_prefix": "/recsys",
            "grpc_service": "raygke.recsys.v1.RecsysService",
            "grpc_application": "recsys",
            "model": None,
        },
    ],
    "ray_version": "2.60.0",
    "image": "rayproject/ray:2.60.0-py311-gpu",
    "serve_flags": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "kuberay_version": "1.7.0",
    "gpu": {"type": "nvidia-h100-80gb", "count_per_node": 1, "nodes_min": 0, "nodes_max": 2},
    "slo": dict(DEFAULT_SLO),
}


class ContractError(ValueError):
    """The contract is missing or malformed; the message names the field (`smoke.<path>`)."""


@dataclass(frozen=True)
class AppEndpoint:
    name: str
    kind: str
    route_prefix: str
    grpc_service: str | None
    grpc_application: str | None
    model: str | None = None  # llm: the model id clients send (None: the first /v1/models lists)

    @property
    def grpc(self) -> bool:
        """Whether the app is served over gRPC (probed and loaded over both transports)."""
        return bool(self.grpc_service)


@dataclass(frozen=True)
class LlmSlo:
    """A request's objectives (goodput counts the requests within both; the gates hold their p99)
    and the load they are measured under."""

    concurrency: int
    ttft_ms: float
    tpot_ms: float
    input_tokens: int
    output_tokens: int


SloOrigin = Literal["slo", "localSlo"]
# How a report names each: the stack's `smoke` section, or its `smoke.localSlo` block.
SLO_SOURCES: dict[str, str] = {"slo": "cluster SLO", "localSlo": "local SLO"}
# An objective's field (dotted below `slo`) -> its key below `smoke` in the stack file.
STACK_KEYS = {
    "concurrency": "concurrency",
    "p99_ms": "p99Ms",
    "max_error_rate": "maxErrorRate",
    "llm.concurrency": "llm.concurrency",
    "llm.ttft_ms": "llm.ttftMs",
    "llm.tpot_ms": "llm.tpotMs",
    "llm.input_tokens": "llm.inputTokens",
    "llm.output_tokens": "llm.outputTokens",
}


@dataclass(frozen=True)
class Slo:
    """The objectives a deployment is gated on, and where each came from: `origin` "slo" (the
    stack's `smoke` section) or "localSlo" (a local run's, with `local_keys` the fields its
    `smoke.localSlo` set; the others are the cluster's)."""

    concurrency: int
    p99_ms: float
    max_error_rate: float
    llm: LlmSlo | None = None  # None: a version 1 contract (no LLM objectives)
    origin: SloOrigin = "slo"
    local_keys: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The SLO's name in reports: "cluster SLO" or "local SLO"."""
        return SLO_SOURCES[self.origin]

    def key(self, field: str) -> str:
        """The stack key that set `field` ("p99_ms", "llm.ttft_ms"), e.g. smoke.localSlo.p99Ms."""
        below = STACK_KEYS[field]
        return f"smoke.localSlo.{below}" if field in self.local_keys else f"smoke.{below}"

    def cite(self, field: str) -> str:
        """Which objective a gate held: "local SLO smoke.localSlo.p99Ms"."""
        return f"{self.source} {self.key(field)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "p99_ms": self.p99_ms,
            "max_error_rate": self.max_error_rate,
            "llm": None if self.llm is None else asdict(self.llm),
            "origin": self.origin,
            "source": self.source,
            "local_keys": list(self.local_keys),
        }


@dataclass(frozen=True)
class Endpoints:
    http_url: str
    grpc_target: str


@dataclass(frozen=True)
class SmokeContract:
    schema_version: int
    source: str
    stack: str
    http_url: str
    grpc_target: str
    health_path: str
    apps: tuple[AppEndpoint, ...]
    slo: Slo  # what the gates hold: `local_slo` over `slo` for a local run that has one
    ray_version: str | None = None
    image: str | None = None
    serve_flags: dict[str, str] = field(default_factory=dict)
    kuberay_version: str | None = None
    gpu: dict[str, Any] | None = None
    direct: Endpoints | None = None
    cluster_slo: Slo | None = None  # the contract's `slo` (the cluster's), when `slo` is not it

    @property
    def local(self) -> bool:
        return self.source == "local"

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.http_url, self.grpc_target)


def _fail(path: str, problem: str) -> ContractError:
    return ContractError(f"smoke.{path}: {problem}")


def _str(doc: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
    if key not in doc or doc[key] is None:
        if default is not None:
            return default
        raise _fail(path, "missing (a non-empty string is required)")
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"must be a non-empty string; got {value!r}")
    return value


def _opt_str(doc: dict[str, Any], key: str, path: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(path, f"must be a string; got {value!r}")
    return value


def _http_url(value: str, path: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise _fail(path, f"must start with http:// or https://; got {value!r}")
    return value.rstrip("/")


def _grpc_target(value: str, path: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise _fail(path, f"must be HOST:PORT; got {value!r}")
    return value


def _number(doc: dict[str, Any], key: str, path: str) -> float:
    value = doc.get(key)
    # bool is an int subclass: reject it explicitly so `true` is not read as 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"must be a finite number; got {value!r}")
    return float(value)


def _parse_slo(doc: Any) -> Slo:
    if not isinstance(doc, dict):
        raise _fail("slo", f"missing or not an object; got {doc!r}")
    concurrency = doc.get("concurrency")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise _fail("slo.concurrency", f"must be an integer >= 1; got {concurrency!r}")
    p99_ms = _number(doc, "p99_ms", "slo.p99_ms")
    if p99_ms <= 0:
        raise _fail("slo.p99_ms", f"must be > 0; got {p99_ms!r}")
    rate = _number(doc, "max_error_rate", "slo.max_error_rate")
    if not 0.0 <= rate <= 1.0:
        raise _fail("slo.max_error_rate", f"must be in [0, 1]; got {rate!r}")
    llm = None if "llm" not in doc else _parse_llm_slo(doc["llm"])
    return Slo(concurrency=concurrency, p99_ms=p99_ms, max_error_rate=rate, llm=llm)


def _positive_int(doc: dict[str, Any], key: str, path: str, minimum: int = 1) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"must be an integer >= {minimum}; got {value!r}")
    return value


def _parse_llm_slo(doc: Any) -> LlmSlo:
    if not isinstance(doc, dict):
        raise _fail("slo.llm", f"must be an object; got {doc!r}")
    times = {}
    for key in ("ttft_ms", "tpot_ms"):
        times[key] = _number(doc, key, f"slo.llm.{key}")
        if times[key] <= 0:
            raise _fail(f"slo.llm.{key}", f"must be > 0; got {times[key]!r}")
    return LlmSlo(
        concurrency=_positive_int(doc, "concurrency", "slo.llm.concurrency"),
        input_tokens=_positive_int(doc, "input_tokens", "slo.llm.input_tokens"),
        output_tokens=_positive_int(doc, "output_tokens", "slo.llm.output_tokens", minimum=2),
        **times,
    )


def _parse_local_slo(doc: Any, cluster: Slo) -> Slo:
    """`local_slo` over `slo`: each key it sets replaces the cluster's (every key optional)."""
    if not isinstance(doc, dict) or not doc:
        raise _fail("local_slo", f"must be a non-empty object; got {doc!r}")
    unknown = sorted(set(doc) - {"concurrency", "p99_ms", "max_error_rate", "llm"})
    if unknown:
        raise _fail(
            f"local_slo.{unknown[0]}",
            "unknown key; allowed keys: concurrency, p99_ms, max_error_rate, llm",
        )
    merged: dict[str, Any] = {
        "concurrency": cluster.concurrency,
        "p99_ms": cluster.p99_ms,
        "max_error_rate": cluster.max_error_rate,
        **{k: v for k, v in doc.items() if k != "llm"},
    }
    keys = [k for k in doc if k != "llm"]
    if "llm" in doc:
        llm = doc["llm"]
        if not isinstance(llm, dict) or not llm:
            raise _fail("local_slo.llm", f"must be a non-empty object; got {llm!r}")
        unknown = sorted(set(llm) - {"concurrency", "ttft_ms", "tpot_ms"})
        if unknown:
            raise _fail(
                f"local_slo.llm.{unknown[0]}",
                "unknown key (a local run sends the cluster's request lengths); allowed keys: "
                "concurrency, ttft_ms, tpot_ms",
            )
        if cluster.llm is None:
            raise _fail("local_slo.llm", "needs slo.llm to apply over")
        merged["llm"] = {**asdict(cluster.llm), **llm}
        keys += [f"llm.{k}" for k in llm]
    elif cluster.llm is not None:
        merged["llm"] = asdict(cluster.llm)
    try:
        slo = _parse_slo(merged)
    except ContractError as exc:  # name the key the user wrote: local_slo, not slo
        raise ContractError(str(exc).replace("smoke.slo", "smoke.local_slo", 1)) from exc
    return replace(slo, origin="localSlo", local_keys=tuple(sorted(keys)))


def _parse_app(doc: Any, index: int) -> AppEndpoint:
    path = f"apps[{index}]"
    if not isinstance(doc, dict):
        raise _fail(path, f"must be an object; got {doc!r}")
    name = _str(doc, "name", f"{path}.name")
    kind = _str(doc, "kind", f"{path}.kind")
    if kind not in APP_KINDS:
        raise _fail(f"{path}.kind", f"must be one of {', '.join(APP_KINDS)}; got {kind!r}")
    prefix = _str(doc, "route_prefix", f"{path}.route_prefix")
    if not prefix.startswith("/"):
        raise _fail(f"{path}.route_prefix", f"must start with '/'; got {prefix!r}")
    grpc_service = _opt_str(doc, "grpc_service", f"{path}.grpc_service")
    grpc_application = _opt_str(doc, "grpc_application", f"{path}.grpc_application")
    # No grpc_service means the app is not served over gRPC (ray.grpc off): HTTP only.
    if grpc_service and kind == "llm":
        raise _fail(f"{path}.grpc_service", "must be null: the llm app is served over HTTP only")
    if grpc_service:
        grpc_application = grpc_application or name
    return AppEndpoint(
        name=name,
        kind=kind,
        route_prefix=prefix.rstrip("/") or "/",
        grpc_service=grpc_service,
        grpc_application=grpc_application,
        model=_opt_str(doc, "model", f"{path}.model"),
    )


def _parse_endpoints(doc: Any, path: str) -> Endpoints:
    if not isinstance(doc, dict):
        raise _fail(path, f"must be an object; got {doc!r}")
    return Endpoints(
        http_url=_http_url(_str(doc, "http_url", f"{path}.http_url"), f"{path}.http_url"),
        grpc_target=_grpc_target(
            _str(doc, "grpc_target", f"{path}.grpc_target"), f"{path}.grpc_target"
        ),
    )


def parse_contract(document: Any) -> SmokeContract:
    """Validate a contract object, or a stack output document holding it under `smoke`."""
    if isinstance(document, dict) and "schema_version" not in document and "smoke" in document:
        document = document["smoke"]
        # Some producers export the object JSON-encoded; accept that rather than fail the pipeline.
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except json.JSONDecodeError as exc:
                raise _fail("", f"the `smoke` output is a string that is not JSON: {exc}") from exc
    looks_like_contract = isinstance(document, dict) and (
        "schema_version" in document or "http_url" in document
    )
    if not looks_like_contract:
        raise ContractError(
            "smoke: missing (expected the smoke object, or a stack output document with `smoke`)"
        )
    version = document.get("schema_version")
    if version not in KNOWN_VERSIONS:
        known = " or ".join(map(str, KNOWN_VERSIONS))
        raise _fail("schema_version", f"must be {known}; got {version!r}")
    apps_doc = document.get("apps")
    if not isinstance(apps_doc, list) or not apps_doc:
        raise _fail("apps", f"must be a non-empty list; got {apps_doc!r}")
    apps = tuple(_parse_app(app, i) for i, app in enumerate(apps_doc))
    names = [a.name for a in apps]
    if len(set(names)) != len(names):
        raise _fail("apps", f"app names must be unique; got {names}")
    flags = document.get("serve_flags") or {}
    if not isinstance(flags, dict):
        raise _fail("serve_flags", f"must be an object of strings; got {flags!r}")
    gpu = document.get("gpu")
    if gpu is not None and not isinstance(gpu, dict):
        raise _fail("gpu", f"must be an object or null; got {gpu!r}")
    direct = document.get("direct")
    cluster_slo = _parse_slo(document.get("slo"))
    slo = cluster_slo
    if "local_slo" in document and version >= 3:
        if document.get("source") != "local":
            raise _fail("local_slo", "only a local run's outputs carry it (source: local)")
        slo = _parse_local_slo(document["local_slo"], cluster_slo)
    return SmokeContract(
        schema_version=version,
        source=_str(document, "source", "source", default="unknown"),
        stack=_str(document, "stack", "stack", default="unknown"),
        http_url=_http_url(_str(document, "http_url", "http_url"), "http_url"),
        grpc_target=_grpc_target(_str(document, "grpc_target", "grpc_target"), "grpc_target"),
        health_path=_str(document, "health_path", "health_path", default="/-/healthz"),
        apps=apps,
        slo=slo,
        ray_version=_opt_str(document, "ray_version", "ray_version"),
        image=_opt_str(document, "image", "image"),
        serve_flags={str(k): str(v) for k, v in flags.items()},
        kuberay_version=_opt_str(document, "kuberay_version", "kuberay_version"),
        gpu=gpu,
        direct=None if direct is None else _parse_endpoints(direct, "direct"),
        cluster_slo=None if slo is cluster_slo else cluster_slo,
    )


def load_contract(path: str | Path) -> SmokeContract:
    """Read `--outputs FILE`: a local run's file or a `pulumi stack output --json` document."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ContractError(f"smoke: cannot read outputs file {file}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"smoke: outputs file {file} is not JSON: {exc}") from exc
    return parse_contract(document)


def contract_from_stack(stack: str, cwd: str | Path | None = None) -> SmokeContract:
    """Read `--stack STACK` through the Pulumi CLI (secrets shown: endpoints may be secret)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise ContractError(
            "smoke: the Pulumi CLI is not on PATH, so --stack cannot be read; "
            "run `pulumi stack output --json > out.json` where it is, then pass --outputs out.json"
        )
    cmd = [pulumi, "stack", "output", "--json", "--show-secrets", "-s", stack]
    try:
        done = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ContractError(f"smoke: `{' '.join(cmd[1:])}` timed out after 120 s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ContractError(f"smoke: `pulumi stack output -s {stack}` failed: {tail[0]}")
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise ContractError(f"smoke: `pulumi stack output -s {stack}` is not JSON: {exc}") from exc
    return parse_contract(document)
