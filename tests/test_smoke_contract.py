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

from raygke.smoke.cli import direct_view, main
from raygke.smoke.contract import (
    EXAMPLE,
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
    (_set(["schema_version"], 3), "smoke.schema_version"),
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
