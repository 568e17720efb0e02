"""The `smoke` contract reader and `raygke smoke`'s bad-input exits (2, naming the field)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.outputs import smoke_contract
from infra.stack_file import load_stack_config
from raygke.smoke.cli import direct_view, main, slo_warnings
from raygke.smoke.contract import (
    EXAMPLE,
    STACK_KEYS,
    ContractError,
    contract_from_stack,
    load_contract,
    parse_contract,
)
from raygke.smoke.profiles import targets

REPO = Path(__file__).resolve().parent.parent

# The documented example, plus what a real stack may add: a trailing slash, a defaulted field.
VALID: dict[str, Any] = copy.deepcopy(EXAMPLE)
VALID["http_url"] += "/"
del VALID["apps"][1]["grpc_application"]


@pytest.mark.pure
def test_valid_contract_parses() -> None:
    contract = parse_contract(copy.deepcopy(VALID))
    assert contract.http_url == "http://203.0.113.20:80"  # trailing slash dropped
    assert contract.slo.concurrency == 8
    assert [a.name for a in contract.apps] == ["echo", "recsys"]
    assert contract.apps[1].grpc_application == "recsys"  # defaults to the app name
    assert contract.serve_flags["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert contract.direct is None


@pytest.mark.pure
def test_app_without_grpc_is_http_only() -> None:
    doc = copy.deepcopy(VALID)
    doc["apps"][0]["grpc_service"] = None  # ray.grpc: false
    doc["apps"].append({"name": "chat", "kind": "llm", "route_prefix": "/llm"})
    contract = parse_contract(doc)
    assert [a.grpc for a in contract.apps] == [False, True, False]
    assert targets(contract) == [
        ("echo", "http", "unary"),
        ("echo", "http", "stream"),
        ("recsys", "http", "unary"),
        ("recsys", "grpc", "unary"),
    ]


@pytest.mark.pure
def test_stack_output_document_and_json_string_forms() -> None:
    whole = {"clusterName": "x", "smoke": copy.deepcopy(VALID)}
    assert parse_contract(whole).stack == "dev"
    encoded = {"smoke": json.dumps(VALID)}
    assert parse_contract(encoded).grpc_target == "203.0.113.20:9000"


@pytest.mark.pure
def test_local_run_direct_endpoints() -> None:
    doc = copy.deepcopy(VALID) | {
        "source": "local",
        "direct": {"http_url": "http://127.0.0.1:8000", "grpc_target": "127.0.0.1:9000"},
    }
    contract = parse_contract(doc)
    assert contract.direct is not None and contract.direct.grpc_target == "127.0.0.1:9000"


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


BROKEN = [
    (_drop("schema_version"), "smoke.schema_version"),
    (_set(["schema_version"], 4), "smoke.schema_version"),
    (_drop("http_url"), "smoke.http_url"),
    (_set(["http_url"], "203.0.113.20:80"), "smoke.http_url"),
    (_drop("grpc_target"), "smoke.grpc_target"),
    (_set(["grpc_target"], "no-port"), "smoke.grpc_target"),
    (_drop("apps"), "smoke.apps"),
    (_set(["apps"], []), "smoke.apps"),
    (_set(["apps", 0, "kind"], "chat"), r"smoke.apps\[0\].kind"),
    (_set(["apps", 1, "route_prefix"], "recsys"), r"smoke.apps\[1\].route_prefix"),
    (_set(["apps", 0, "kind"], "llm"), r"smoke.apps\[0\].grpc_service: must be null"),
    (_set(["apps", 1, "name"], "echo"), "smoke.apps: app names must be unique"),
    (_drop("slo"), "smoke.slo"),
    (_set(["slo", "concurrency"], 0), "smoke.slo.concurrency"),
    (_set(["slo", "concurrency"], True), "smoke.slo.concurrency"),
    (_set(["slo", "p99_ms"], "fast"), "smoke.slo.p99_ms"),
    (_set(["slo", "p99_ms"], -1), "smoke.slo.p99_ms"),
    (_set(["slo", "max_error_rate"], 1.5), "smoke.slo.max_error_rate"),
    (_set(["slo", "llm"], 8), "smoke.slo.llm: must be an object"),
    (_set(["slo", "llm", "ttft_ms"], 0), "smoke.slo.llm.ttft_ms"),
    (_set(["slo", "llm", "tpot_ms"], "slow"), "smoke.slo.llm.tpot_ms"),
    (_set(["slo", "llm", "concurrency"], 0), "smoke.slo.llm.concurrency"),
    (_set(["slo", "llm", "output_tokens"], 1), "smoke.slo.llm.output_tokens"),
    (_set(["apps", 0, "model"], 7), r"smoke.apps\[0\].model"),
    (_set(["serve_flags"], ["RAY_SERVE_ENABLE_HA_PROXY"]), "smoke.serve_flags"),
    (_set(["direct"], {"http_url": "http://x:1"}), "smoke.direct.grpc_target"),
]


@pytest.mark.pure
@pytest.mark.parametrize(("breaks", "field"), BROKEN)
def test_broken_contract_names_the_field(
    breaks: Callable[[dict[str, Any]], None], field: str
) -> None:
    doc = copy.deepcopy(VALID)
    breaks(doc)
    with pytest.raises(ContractError, match=field):
        parse_contract(doc)


@pytest.mark.pure
def test_a_version_1_contract_still_reads_without_llm_objectives() -> None:
    doc = copy.deepcopy(VALID)
    doc["schema_version"] = 1
    del doc["slo"]["llm"]
    for app in doc["apps"]:
        del app["model"]
    contract = parse_contract(doc)
    assert contract.schema_version == 1 and contract.slo.llm is None
    assert parse_contract(VALID).slo.llm is not None


@pytest.mark.pure
def test_document_without_smoke_key() -> None:
    with pytest.raises(ContractError, match="smoke: missing"):
        parse_contract({"clusterName": "x"})


@pytest.mark.pure
@pytest.mark.parametrize(("breaks", "field"), BROKEN[:6] + BROKEN[12:14])
def test_cli_exits_2_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    breaks: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    doc = copy.deepcopy(VALID)
    breaks(doc)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"smoke": doc}))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygke smoke: ")
    assert re.search(field, err)
    assert not (tmp_path / "report").exists()  # nothing measured, nothing written


@pytest.mark.pure
def test_cli_exits_2_on_unreadable_or_non_json_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--outputs", str(tmp_path / "absent.json")]) == 2
    assert "cannot read outputs file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--outputs", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    with pytest.raises(ContractError, match="is not JSON"):
        load_contract(bad)


@pytest.mark.pure
@pytest.mark.parametrize(
    "extra",
    [
        ["--profile", "huge"],
        ["--levels", "8,many"],
        ["--levels", "0"],
        ["--duration", "0"],
        ["--repeats", "0"],
        ["--processes", "0"],
        ["--llm-range-ratio", "1.5"],
        ["--direct"],  # the example has no `direct` endpoints
        ["--compare-direct"],
        ["--llm-rates", "0.5,fast"],
        ["--llm-rates", "0,1"],
        ["--llm-rates", "50"],  # a fraction of the peak, not a rate
        ["--llm-workloads", "chat"],
        ["--llm-workloads", "synthetic"],  # always runs: not a workload to add
    ],
)
def test_cli_exits_2_on_bad_arguments(tmp_path: Path, extra: list[str]) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(VALID))
    assert main(["--outputs", str(outputs), "--out", str(tmp_path / "r"), *extra]) == 2


@pytest.mark.pure
def test_cli_needs_exactly_one_source(tmp_path: Path) -> None:
    assert main([]) == 2
    assert main(["--outputs", "a.json", "--stack", "dev"]) == 2


@pytest.mark.pure
def test_compare_needs_the_same_apps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps(VALID))
    other = copy.deepcopy(VALID)
    other["apps"] = other["apps"][:1]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(other))
    assert main(["--outputs", str(a), "--compare", str(b), "--out", str(tmp_path / "r")]) == 2
    assert "--compare: its smoke.apps has no app named 'recsys'" in capsys.readouterr().err


@pytest.mark.pure
def test_stack_without_pulumi_cli_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `pulumi` anywhere
    assert main(["--stack", "dev"]) == 2
    assert "Pulumi CLI is not on PATH" in capsys.readouterr().err


@pytest.mark.process
def test_stack_reads_pulumi_stack_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in `pulumi` that records its arguments and prints a stack output document.
    fake = tmp_path / "pulumi"
    (tmp_path / "doc.json").write_text(json.dumps({"smoke": VALID, "other": 1}))
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat {tmp_path}/doc.json\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    contract = contract_from_stack("prod")
    assert contract.stack == "dev"
    assert (tmp_path / "args").read_text().split() == [
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "-s",
        "prod",
    ]
    fake.write_text("#!/bin/sh\necho 'error: no stack named prod' >&2\nexit 255\n")
    with pytest.raises(ContractError, match="no stack named prod"):
        contract_from_stack("prod")


@pytest.mark.pure
def test_smoke_cli_does_not_import_ray() -> None:
    code = (
        "import sys, raygke.smoke.cli, raygke.smoke.plot, raygke.smoke.checks;"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.pure
def test_direct_view_aims_at_rays_own_ingress() -> None:
    doc = copy.deepcopy(VALID) | {
        "direct": {"http_url": "http://127.0.0.1:8000", "grpc_target": "127.0.0.1:9000"},
    }
    direct = direct_view(parse_contract(doc))
    assert (direct.http_url, direct.grpc_target) == ("http://127.0.0.1:8000", "127.0.0.1:9000")
    assert direct.stack == "dev (direct)"
    with pytest.raises(ContractError, match=r"smoke\.direct: missing"):
        direct_view(parse_contract(VALID))


# ------------------------------------------------------------------------------- a local run's SLO
def _local(local_slo: Any = None, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID) | {"source": "local", **changes}
    if local_slo is not None:
        doc["local_slo"] = local_slo
    return doc


@pytest.mark.pure
@pytest.mark.parametrize(
    ("local_slo", "expected", "keys"),
    [
        ({"p99_ms": 900}, {"p99_ms": 900.0}, ["p99_ms"]),
        ({"concurrency": 4, "max_error_rate": 0.01}, {"concurrency": 4}, ["concurrency", "max_error_rate"]),
        ({"llm": {"ttft_ms": 3000}}, {"llm.ttft_ms": 3000.0, "llm.tpot_ms": 100.0}, ["llm.ttft_ms"]),
        (
            {"p99_ms": 700, "llm": {"tpot_ms": 250, "concurrency": 2}},
            {"p99_ms": 700.0, "llm.tpot_ms": 250.0, "llm.concurrency": 2, "llm.input_tokens": 128},
            ["llm.concurrency", "llm.tpot_ms", "p99_ms"],
        ),
    ],
)  # fmt: skip
def test_a_local_runs_slo_overrides_only_what_it_sets(
    local_slo: dict[str, Any], expected: dict[str, Any], keys: list[str]
) -> None:
    contract = parse_contract(_local(local_slo))
    slo, cluster = contract.slo, contract.cluster_slo
    assert cluster is not None and cluster.origin == "slo" and cluster.p99_ms == 500.0
    assert (slo.origin, slo.source, list(slo.local_keys)) == ("localSlo", "local SLO", keys)
    for field, value in expected.items():
        holder = slo.llm if field.startswith("llm.") else slo
        assert getattr(holder, field.removeprefix("llm.")) == value
    # a gate names the key the user wrote: the local block's, and the cluster's for the rest
    for field in ("concurrency", "p99_ms", "max_error_rate", "llm.ttft_ms", "llm.tpot_ms"):
        prefix = "smoke.localSlo." if field in keys else "smoke."
        assert slo.key(field) == prefix + STACK_KEYS[field]


@pytest.mark.pure
def test_without_a_local_slo_a_local_run_is_gated_on_the_cluster_slo_and_says_so() -> None:
    contract = parse_contract(_local())
    assert (contract.slo.origin, contract.slo.source, contract.cluster_slo) == (
        "slo",
        "cluster SLO",
        None,
    )
    assert contract.slo.cite("p99_ms") == "cluster SLO smoke.p99Ms"
    [warning] = slo_warnings(contract)
    assert "gated on the cluster SLO" in warning and "nvidia-h100-80gb" in warning
    assert "smoke.localSlo" in warning
    assert slo_warnings(parse_contract(_local({"p99_ms": 900}))) == []
    assert slo_warnings(parse_contract(copy.deepcopy(VALID))) == []  # a cluster: nothing to say


@pytest.mark.pure
def test_a_version_2_contract_reads_as_before() -> None:
    doc = _local({"p99_ms": 900}, schema_version=2)
    contract = parse_contract(doc)
    assert contract.slo.origin == "slo" and contract.slo.p99_ms == 500.0


@pytest.mark.pure
@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_local({}), "smoke.local_slo: must be a non-empty object"),
        (_local(["p99_ms"]), "smoke.local_slo: must be a non-empty object"),
        (_local({"p99": 3}), r"smoke.local_slo.p99: unknown key; allowed keys: concurrency"),
        (_local({"p99_ms": -1}), r"smoke.local_slo.p99_ms: must be > 0"),
        (_local({"concurrency": 0}), r"smoke.local_slo.concurrency: must be an integer >= 1"),
        (_local({"max_error_rate": 2}), r"smoke.local_slo.max_error_rate: must be in \[0, 1\]"),
        (_local({"llm": {}}), r"smoke.local_slo.llm: must be a non-empty object"),
        (_local({"llm": {"ttft_ms": "slow"}}), r"smoke.local_slo.llm.ttft_ms: must be a finite"),
        (_local({"llm": {"input_tokens": 64}}), r"local_slo.llm.input_tokens: unknown key \(a local"),
        (_local({"p99_ms": 900}, source="pulumi"), r"smoke.local_slo: only a local run's outputs"),
    ],
)  # fmt: skip
def test_a_broken_local_slo_names_its_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError, match=field):
        parse_contract(doc)


@pytest.mark.pure
def test_the_local_slo_travels_from_the_stack_file_to_the_local_contract_only() -> None:
    config = load_stack_config("prod")
    local_slo = config.smoke.local_slo
    assert local_slo is not None  # prod's objectives are written for H100s
    urls = ("http://127.0.0.1:1", "127.0.0.1:2")
    cluster = smoke_contract(config, source="pulumi", http_url=urls[0], grpc_target=urls[1])
    local = smoke_contract(config, source="local", http_url=urls[0], grpc_target=urls[1])
    assert "local_slo" not in cluster and cluster["slo"] == local["slo"]
    assert set(local["local_slo"]) <= {"concurrency", "p99_ms", "max_error_rate", "llm"}
    parsed = parse_contract(local)
    assert parsed.slo.origin == "localSlo" and parsed.cluster_slo is not None
    assert parsed.slo.p99_ms == (local_slo.p99_ms or config.smoke.p99_ms)
    assert parsed.cluster_slo.p99_ms == config.smoke.p99_ms
    assert parse_contract(cluster).slo.origin == "slo"
    # the request a local run sends is the cluster's: its lengths are never the local block's
    assert parsed.slo.llm is not None and parsed.cluster_slo.llm is not None
    assert (parsed.slo.llm.input_tokens, parsed.slo.llm.output_tokens) == (
        parsed.cluster_slo.llm.input_tokens,
        parsed.cluster_slo.llm.output_tokens,
    )
