"""Bad input to `raygke plan`, `raygke local` and `raygke smoke`: one clear line, a non-zero exit,
never a traceback.

Each case runs the real command (`python -m raygke.cli ...`) as a user would. None starts Ray: a
port in use is a socket this test binds on 127.0.0.1, an unreachable endpoint an outputs file that
points at a port nothing listens on. Argument errors are argparse's: the usage, then one error line,
exit 2.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stackfiles import cases

from infra.outputs import smoke_contract
from infra.stack_file import load_stack_config

pytestmark = pytest.mark.config

REPO = Path(__file__).resolve().parent.parent


def raygke(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAYGKE_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "raygke.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without argparse's usage block (its continuation lines are indented)."""
    lines = done.stderr.splitlines()
    if lines and lines[0].startswith("usage: "):
        lines = [line for line in lines[1:] if not line.startswith(" ")]
    return lines


def assert_one_line(done: subprocess.CompletedProcess[str], rc: int, pattern: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == rc, (done.returncode, done.stderr)
    lines = error_lines(done)
    assert len(lines) == 1, done.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that this test holds open (listening), so it is in use."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def closed_port() -> int:
    """A port that was free a moment ago and has no listener: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- plan ---------------------------------------------------------------------------------------

PLAN_CASES: list[tuple[str, list[str], int, str]] = [
    ("no command", [], 2, r"^raygke: error: the following arguments are required: command$"),
    ("plan without a stack", ["plan"], 2, r"^raygke plan: error: .*required: --stack$"),
    (
        "plan in an unknown format",
        ["plan", "--stack", "dev", "--format", "yaml"],
        2,
        r"argument --format: invalid choice: 'yaml' \(choose from 'text', 'json', 'markdown'\)",
    ),
    (
        "plan of an unknown stack",
        ["plan", "--stack", "qa"],
        2,
        r"^raygke: no stack file .*Pulumi.qa.yaml; stacks: dev, prod, staging$",
    ),
    (
        "json plan of two stacks",
        ["plan", "--stack", "dev", "--stack", "prod", "--format", "json"],
        2,
        r"^raygke: --format json takes one --stack; got \['dev', 'prod'\]$",
    ),
    ("unknown command", ["deploy"], 2, r"argument command: invalid choice: 'deploy'"),
]


@pytest.mark.parametrize(("argv", "rc", "pattern"), cases(PLAN_CASES))
def test_plan_bad_input(argv: list[str], rc: int, pattern: str) -> None:
    assert_one_line(raygke(*argv), rc, pattern)


# --- local --------------------------------------------------------------------------------------


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "file"
    path.write_text("not a directory")
    return path


def _state(tmp_path: Path, text: str) -> Path:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(text)
    return state_dir


# A run's state whose tier process is gone (PID 0 is never a tier of ours).
TIER_GONE = json.dumps(
    {"stack": "dev", "profile": "tuned", "pids": [], "ray": {}, "tier": {"pid": 0}}
)

LOCAL_CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    (
        "local without an action",
        lambda tmp: ["local"],
        2,
        r"^raygke local: error: the following arguments are required: action$",
    ),
    (
        "local with an unknown action",
        lambda tmp: ["local", "restart"],
        2,
        r"argument action: invalid choice: 'restart' \(choose from 'up', 'status', 'upgrade', "
        r"'check-queries', 'down'\)",
    ),
    (
        "port that is not a number",
        lambda tmp: ["local", "up", "--port", "http"],
        2,
        r"argument --port: must be a TCP port 1-65535; got 'http'$",
    ),
    (
        "port out of range",
        lambda tmp: ["local", "up", "--port", "70000", "--state-dir", str(tmp / "s")],
        2,
        r"argument --port: must be a TCP port 1-65535; got 70000$",
    ),
    (
        "port zero",
        lambda tmp: ["local", "up", "--grpc-port", "0", "--state-dir", str(tmp / "s")],
        2,
        r"argument --grpc-port: must be a TCP port 1-65535; got 0$",
    ),
    (
        "worker count not a number",
        lambda tmp: ["local", "up", "--workers", "two"],
        2,
        r"argument --workers: must be a whole number 0-8; got 'two'$",
    ),
    (
        "too many workers",
        lambda tmp: ["local", "up", "--workers", "9", "--state-dir", str(tmp / "s")],
        2,
        r"argument --workers: must be 0 \(one node holds everything\) to 8; got 9$",
    ),
    (
        "same port twice",
        lambda tmp: ["local", "up", "--port", "18080", "--grpc-port", "18080"],
        2,
        r"^raygke: --port and --grpc-port must differ; both are 18080$",
    ),
    (
        "unknown stack",
        lambda tmp: ["local", "up", "--stack", "qa", "--state-dir", str(tmp / "s")],
        2,
        r"^raygke: no stack file .*Pulumi.qa.yaml; stacks: dev, prod, staging$",
    ),
    (
        "state dir that is a file",
        lambda tmp: ["local", "status", "--state-dir", str(_file(tmp))],
        2,
        r"^raygke: --state-dir .*/file is a file, not a directory$",
    ),
    (
        "status of a missing state dir",
        lambda tmp: ["local", "status", "--state-dir", str(tmp / "none")],
        1,
        r"^raygke: no local run in .*/none; start one with `raygke local up`$",
    ),
    (
        "down with a state file that is not JSON",
        lambda tmp: ["local", "down", "--state-dir", str(_state(tmp, "{pids"))],
        1,
        r"^raygke: .*/state/state.json is not a local run's state \(not JSON: .*\); stop its "
        r"processes by hand and remove .*/state$",
    ),
    (
        "status with a state file missing its keys",
        lambda tmp: ["local", "status", "--state-dir", str(_state(tmp, "{}"))],
        1,
        r"is not a local run's state \(missing or bad keys: \['stack', 'profile', 'pids', "
        r"'ray'\]\)",
    ),
    (
        "upgrade with no run",
        lambda tmp: ["local", "upgrade", "--state-dir", str(tmp / "none")],
        2,
        r"^raygke: no local run in .*/none to upgrade; start one with `raygke local up`$",
    ),
    (
        "upgrade of a run whose tier is gone",
        lambda tmp: ["local", "upgrade", "--state-dir", str(_state(tmp, TIER_GONE))],
        1,
        r"^raygke: the run in .*/state has no running tier with an admin socket; `raygke local "
        r"down` and `raygke local up` it again$",
    ),
    (
        "up over a damaged state file",
        lambda tmp: ["local", "up", "--state-dir", str(_state(tmp, '{"pids": "x"}'))],
        1,
        r"is not a local run's state",
    ),
]


@pytest.mark.parametrize(("argv", "rc", "pattern"), cases(LOCAL_CASES))
def test_local_bad_input(
    tmp_path: Path, argv: Callable[[Path], list[str]], rc: int, pattern: str
) -> None:
    assert_one_line(raygke(*argv(tmp_path)), rc, pattern)
    # Nothing was started: no state directory appeared where none was.
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--port", "--grpc-port"])
def test_local_up_on_a_port_in_use_fails_before_starting_anything(
    tmp_path: Path, listening: int, flag: str
) -> None:
    done = raygke("local", "up", flag, str(listening), "--state-dir", str(tmp_path / "s"))
    assert_one_line(
        done, 1, rf"^raygke: {flag} {listening} is in use on this machine; pick another"
    )
    assert not (tmp_path / "s").exists()  # Ray was never started: no state, no temp dirs


def test_a_damaged_state_file_is_left_for_the_user(tmp_path: Path) -> None:
    state_dir = _state(tmp_path, "{pids")
    assert_one_line(raygke("local", "down", "--state-dir", str(state_dir)), 1, "not JSON")
    assert (state_dir / "state.json").read_text() == "{pids"  # not guessed at, not removed


# --- smoke --------------------------------------------------------------------------------------


def _outputs(tmp_path: Path, port: int) -> Path:
    doc = smoke_contract(
        load_stack_config("dev"),
        source="local",
        http_url=f"http://127.0.0.1:{port}",
        grpc_target=f"127.0.0.1:{port}",
        apps=["echo", "recsys"],
    )
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(doc))
    return path


SMOKE_CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    (
        "smoke without outputs",
        lambda tmp: ["smoke"],
        2,
        r"^raygke smoke: error: one of the arguments --outputs --stack is required$",
    ),
    (
        "missing outputs file",
        lambda tmp: ["smoke", "--outputs", str(tmp / "none.json")],
        2,
        r"^raygke smoke: cannot read outputs file .*/none.json: No such file or directory$",
    ),
    (
        "outputs file that is not JSON",
        lambda tmp: ["smoke", "--outputs", str(_state(tmp, "{").joinpath("state.json"))],
        2,
        r"^raygke smoke: outputs file .*state.json is not JSON: ",
    ),
    (
        "outputs that is a directory",
        lambda tmp: ["smoke", "--outputs", str(tmp)],
        2,
        r"^raygke smoke: cannot read outputs file .*: Is a directory$",
    ),
    (
        "unknown profile",
        lambda tmp: ["smoke", "--outputs", "x.json", "--profile", "soak"],
        2,
        r"argument --profile: invalid choice: 'soak'",
    ),
    (
        "levels that are not numbers",
        lambda tmp: ["smoke", "--outputs", str(_outputs(tmp, 1)), "--levels", "8,lots"],
        2,
        r"^raygke smoke: --levels must be integers separated by commas; got '8,lots'$",
    ),
    (
        "report directory that cannot be made",
        lambda tmp: [
            "smoke",
            "--outputs",
            str(_outputs(tmp, 1)),
            "--out",
            str(tmp / "outputs.json" / "report"),
        ],
        2,
        r"^raygke smoke: cannot create --out .*/outputs.json/report: Not a directory$",
    ),
]


@pytest.mark.parametrize(("argv", "rc", "pattern"), cases(SMOKE_CASES))
def test_smoke_bad_input(
    tmp_path: Path, argv: Callable[[Path], list[str]], rc: int, pattern: str
) -> None:
    assert_one_line(raygke(*argv(tmp_path)), rc, pattern)


def test_smoke_against_an_unreachable_endpoint_is_one_line_and_a_failed_gate(
    tmp_path: Path,
) -> None:
    port = closed_port()
    report = tmp_path / "report"
    done = raygke("smoke", "--outputs", str(_outputs(tmp_path, port)), "--out", str(report))
    # Exit 1 (a gate failed), as the smoke contract documents; the reason in one stderr line.
    assert_one_line(
        done,
        1,
        rf"^raygke smoke: A http://127.0.0.1:{port} is unreachable \(connection refused\): is the "
        rf"deployment up\? report: {report}/report.md$",
    )
    written = json.loads((report / "report.json").read_text())
    assert written["load"] == []
    (health,) = written["checks"]["A"]
    assert (health["name"], health["passed"]) == ("health", False)
    assert "connection refused" in health["detail"]


def test_the_last_resort_handler_hides_tracebacks_unless_asked(tmp_path: Path) -> None:
    # A state file whose `ray` entry is not what `down` expects fails deep inside the stop path;
    # the user still gets one line, and RAYGKE_TRACEBACK=1 shows where.
    state = {"stack": "dev", "profile": "tuned", "pids": [], "ray": {}}
    state_dir = _state(tmp_path, json.dumps(state))
    done = raygke("local", "down", "--state-dir", str(state_dir))
    assert_one_line(done, 1, r"^raygke: unexpected \w+: .*\(RAYGKE_TRACEBACK=1 shows where\)$")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYGKE_TRACEBACK": "1"}
    traced = subprocess.run(
        [sys.executable, "-m", "raygke.cli", "local", "down", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert traced.returncode != 0 and "Traceback" in traced.stderr


# --- plan: mistakes that used to deploy-fail, policy gate, secrets --------------------------------

PLAN_SECRET = "pl4n-s3cret-7e2b"


def _stack_copy(tmp_path: Path, stack: str, edit, name: str | None = None) -> Path:
    """stacks/Pulumi.<stack>.yaml, edited (a function of the parsed file), as <tmp>/Pulumi.<name>.yaml."""
    import yaml

    doc = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    edit(doc["config"])
    (tmp_path / f"Pulumi.{name or stack}.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def _plant_secret(config: dict) -> None:
    config["ray-serve-gke:ray"].setdefault("extraEnv", {})["HF_TOKEN"] = PLAN_SECRET


def test_an_uppercase_namespace_names_the_key_instead_of_crashing_in_an_apply(tmp_path: Path):
    stacks = _stack_copy(
        tmp_path, "dev", lambda c: c["ray-serve-gke:rayService"].update(namespace="Ray-Serve")
    )
    done = raygke("plan", "--stack", "dev", "--stacks-dir", str(stacks))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unexpected" not in done.stderr and "pulumi.output.Output" not in done.stderr
    assert re.search(
        r"ray-serve-gke:rayService.namespace: a Namespace name must be a DNS-1123 label.*got 'Ray-Serve'",
        done.stderr,
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["ray-serve-gke:apps"].append(dict(c["ray-serve-gke:apps"][0])),
        lambda c: c["ray-serve-gke:rayService"]["workers"].update(memory="200GB"),
        lambda c: c["ray-serve-gke:apps"][0]["args"].update(payload_sise=1),
        lambda c: c["ray-serve-gke:ray"].update(imageRepository="r.io/a/b:1", token=PLAN_SECRET),
        lambda c: c.update({"ray-serve-gke:environment": "prod"}),
    ],
    ids=["duplicate-app", "quantity", "args-key", "tagged-image-and-unknown-key", "environment"],
)
def test_plan_never_prints_a_secret_value(tmp_path: Path, edit):
    def both(config: dict) -> None:
        _plant_secret(config)
        edit(config)

    done = raygke("plan", "--stack", "dev", "--stacks-dir", str(_stack_copy(tmp_path, "dev", both)))
    assert done.returncode == 2, done.stderr
    assert "ray-serve-gke:" in done.stderr  # the key is named
    assert PLAN_SECRET not in done.stderr + done.stdout


def test_plan_exits_1_on_a_mandatory_control_and_fail_on_chooses_the_threshold(tmp_path: Path):
    # prod without a KMS key plans (the config allows it) but fails CIS 5.3.1, mandatory in prod
    stacks = _stack_copy(tmp_path, "prod", lambda c: c["ray-serve-gke:cluster"].pop("kmsKey"))
    done = raygke("plan", "--stack", "prod", "--stacks-dir", str(stacks))
    assert done.returncode == 1, done.stderr
    assert "[mandatory] 5.3.1" in done.stdout  # the plan is still printed
    assert re.search(
        r"^raygke: policy controls at or above --fail-on mandatory failed for prod \(1: 5.3.1\)",
        done.stderr.splitlines()[-1],
    )
    never = raygke("plan", "--stack", "prod", "--stacks-dir", str(stacks), "--fail-on", "never")
    assert never.returncode == 0, never.stderr


def test_advisories_keep_exit_0_unless_fail_on_advisory():
    fixtures = str(REPO / "tests" / "fixtures")
    assert raygke("plan", "--stack", "insecure", "--stacks-dir", fixtures).returncode == 0
    strict = raygke(
        "plan", "--stack", "insecure", "--stacks-dir", fixtures, "--fail-on", "advisory"
    )
    assert strict.returncode == 1
    assert "failed for insecure (2: 5.6.3, RAYGKE-NET-1)" in strict.stderr


def test_every_shipped_stack_plans_with_exit_0_under_the_default_gate():
    done = raygke("plan", "--stack", "dev", "--stack", "staging", "--stack", "prod")
    assert done.returncode == 0, done.stderr
