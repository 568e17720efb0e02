"""The offline plan diff: pure diffing of two hand-made plans, its renderers, and `raygke plan --base` on a
temporary git repository (a real worktree, a real subprocess planning the base commit)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raygke import diff

ROOT = Path(__file__).resolve().parents[1]
POOL = "gcp:container/nodePool:NodePool"
SA = "gcp:serviceaccount/account:Account"


def _resource(type_: str, name: str, inputs: dict[str, Any], parent: str = "") -> dict[str, Any]:
    urn = f"urn:pulumi:dev::ray-serve-gke::{type_}::{name}"
    return {
        "urn": urn,
        "type": type_,
        "name": name,
        "parent": parent,
        "custom": True,
        "inputs": inputs,
    }


def _cost(machine: str, node_hourly: float, max_nodes: int = 2) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "currency": "USD",
        "prices_as_of": "2026-02-12",
        "machine_type": machine,
        "capacity_mode": "spot",
        "nodes_min": 0,
        "nodes_max": max_nodes,
        "hourly": {"min": 0.0, "max": round(node_hourly * max_nodes, 2)},
        "monthly": {"min": 0.0, "max": round(node_hourly * max_nodes * 730, 2)},
    }


def _plan(**overrides: Any) -> dict[str, Any]:
    pool = {
        "nodeConfig": {
            "machineType": "a3-highgpu-1g",
            "guestAccelerators": [{"count": 1, "type": "nvidia-h100-80gb"}],
            "labels": {"team": "serving"},
        },
        "autoscaling": {"totalMaxNodeCount": 2},
    }
    doc: dict[str, Any] = {
        "schema_version": 1,
        "kind": "raygke-plan",
        "stack": "dev",
        "resources": [
            _resource(POOL, "h100-pool", pool),
            _resource(SA, "nodes", {"accountId": "raygke-dev-nodes"}),
            _resource("pulumi:providers:kubernetes", "gke", {"kubeconfig": "[secret]"}),
            _resource("kubernetes:core/v1:ConfigMap", "cfg", {"metadata": {"name": "cfg"}}),
        ],
        "outputs": {
            "kubeconfig": {"secret": True, "sha256": "aaaa"},
            "cluster_name": "raygke-dev",
            "cost": _cost("a3-highgpu-1g", 4.4245),
        },
    }
    doc.update(overrides)
    return doc


def _changed() -> dict[str, Any]:
    head = copy.deepcopy(_plan())
    pool = head["resources"][0]["inputs"]
    pool["nodeConfig"]["machineType"] = "a3-highgpu-2g"
    pool["nodeConfig"]["guestAccelerators"][0]["count"] = 2
    head["resources"][2]["inputs"]["kubeconfig"] = "[secret]"
    head["resources"][3]["inputs"]["data"] = {"haproxy.cfg": "x" * 300}  # in-place update
    del head["resources"][1]  # service account removed
    head["resources"].append(_resource(SA, "nodes-v2", {"accountId": "raygke-dev-nodes2"}))
    head["outputs"]["kubeconfig"] = {"secret": True, "sha256": "bbbb"}
    head["outputs"]["cost"] = _cost("a3-highgpu-2g", 8.8489)
    return head


@pytest.mark.pure
def test_added_removed_replaced_and_changed():
    d = diff.diff_plans(_plan(), _changed(), base_ref="main")
    actions = [(r.action, r.name) for r in d.resources]
    assert actions == [
        ("replace", "h100-pool"),
        ("remove", "nodes"),
        ("add", "nodes-v2"),
        ("update", "cfg"),
    ]
    pool = d.resources[0]
    assert pool.replace_paths == ["nodeConfig.guestAccelerators[0].count", "nodeConfig.machineType"]
    change = next(c for c in pool.changes if c.path == "nodeConfig.machineType")
    assert (change.old, change.new) == ("a3-highgpu-1g", "a3-highgpu-2g")
    assert d.unchanged == 1  # the provider: its kubeconfig is masked on both sides
    assert (d.count("add"), d.count("remove"), d.count("replace"), d.count("update")) == (
        1,
        1,
        1,
        1,
    )


@pytest.mark.pure
def test_a_change_outside_the_force_new_table_updates_in_place():
    head = copy.deepcopy(_plan())
    head["resources"][0]["inputs"]["nodeConfig"]["labels"]["team"] = "ml"
    head["resources"][0]["inputs"]["autoscaling"]["totalMaxNodeCount"] = 4
    (pool,) = diff.diff_plans(_plan(), head).resources
    assert pool.action == "update" and pool.replace_paths == []
    assert [c.path for c in pool.changes] == [
        "autoscaling.totalMaxNodeCount",
        "nodeConfig.labels.team",
    ]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("type_", "path", "replaces"),
    [
        (POOL, "nodeConfig.shieldedInstanceConfig.enableSecureBoot", True),
        (POOL, "nodeLocations[0]", True),
        (POOL, "nodeConfig.machineType", True),
        (POOL, "nodeConfig.machineTypeHint", False),  # a prefix match must end at a path boundary
        (POOL, "autoscaling.totalMaxNodeCount", False),
        ("gcp:container/cluster:Cluster", "privateClusterConfig.enablePrivateNodes", True),
        ("gcp:container/cluster:Cluster", "location", True),
        ("gcp:container/cluster:Cluster", "releaseChannel.channel", False),
        ("gcp:compute/network:Network", "name", True),
        ("gcp:compute/subnetwork:Subnetwork", "ipCidrRange", True),
        ("kubernetes:apps/v1:Deployment", "metadata.namespace", True),
        ("kubernetes:apps/v1:Deployment", "spec.replicas", False),
    ],
)
def test_the_replace_table(type_: str, path: str, replaces: bool):
    assert diff.forces_replace(type_, path) is replaces


@pytest.mark.pure
def test_secrets_are_masked_but_their_change_is_reported():
    base, head = _plan(), _changed()
    for doc, token in ((head, "hunter2"), (base, "old")):
        cfg = next(r for r in doc["resources"] if r["name"] == "cfg")
        cfg["inputs"]["kubeconfig"] = f"apiVersion: v1\nusers: [token: {token}]"
    d = diff.diff_plans(base, head, base_ref="main")
    (kube,) = d.outputs
    assert (kube.path, kube.old, kube.new, kube.secret) == (
        "kubeconfig",
        "[secret]",
        "[secret]",
        True,
    )
    cfg = next(r for r in d.resources if r.name == "cfg")
    masked = next(c for c in cfg.changes if c.path == "kubeconfig")
    assert masked.old == masked.new == "[secret]"
    for text in (diff.render_text(d), diff.render_json(d), diff.render_markdown(d)):
        assert "hunter2" not in text and "aaaa" not in text and "bbbb" not in text
        assert "[secret]" in text


@pytest.mark.pure
def test_the_cost_delta():
    d = diff.diff_plans(_plan(), _changed(), base_ref="main")
    assert d.cost is not None
    assert d.cost.monthly_delta == {
        "min": 0.0,
        "max": round(8.8489 * 2 * 730 - 4.4245 * 2 * 730, 2),
    }
    assert d.cost.base is not None and d.cost.base["machine_type"] == "a3-highgpu-1g"
    assert "+$6,459.62 per month" in diff.summary_line(d)
    # a base from before the cost output: the head's full figure is the change
    base = _plan()
    del base["outputs"]["cost"]
    older = diff.diff_plans(base, _changed())
    assert older.cost is not None and older.cost.base is None
    assert older.cost.monthly_delta["max"] == 12919.39
    assert "(no cost output)" in diff.render_text(older)


@pytest.mark.pure
def test_identical_plans_have_no_changes():
    d = diff.diff_plans(_plan(), _plan(), base_ref="main")
    assert d.empty and d.resources == () and d.unchanged == 4
    assert diff.summary_line(d) == "stack dev vs main: no changes (4 resources unchanged)"


@pytest.mark.pure
def test_deterministic_whatever_the_order_of_resources():
    head = _changed()
    shuffled = copy.deepcopy(head)
    shuffled["resources"].reverse()
    shuffled["outputs"] = dict(reversed(list(shuffled["outputs"].items())))
    one = diff.diff_plans(_plan(), head, base_ref="main")
    two = diff.diff_plans(_plan(), shuffled, base_ref="main")
    for render in (diff.render_text, diff.render_json, diff.render_markdown):
        assert render(one) == render(two)


@pytest.mark.pure
def test_text_rendering_abbreviates_long_values_and_flags_replacements():
    text = diff.render_text(diff.diff_plans(_plan(), _changed(), base_ref="main"))
    lines = text.splitlines()
    assert lines[0] == (
        "stack dev vs main: 1 added, 1 changed, 1 REPLACED, 1 removed, 1 outputs changed; "
        "GPU cost ±$0.00..+$6,459.62 per month (min..max nodes)"
    )
    assert "REPLACED  gcp:container/nodePool:NodePool  h100-pool" in lines
    assert (
        '    nodeConfig.machineType: "a3-highgpu-1g" -> "a3-highgpu-2g"  [forces replacement]'
        in lines
    )
    long = next(line for line in lines if '["haproxy.cfg"]' in line)
    assert long.endswith("...") and len(long) < 140


@pytest.mark.pure
def test_json_is_versioned_and_complete():
    doc = json.loads(diff.render_json(diff.diff_plans(_plan(), _changed(), base_ref="main")))
    assert doc["schema_version"] == diff.DIFF_SCHEMA_VERSION and doc["kind"] == "raygke-plan-diff"
    assert doc["summary"] == {
        "added": 1,
        "changed": 1,
        "replaced": 1,
        "removed": 1,
        "unchanged": 1,
        "outputs_changed": 1,
    }
    pool = doc["resources"][0]
    assert pool["action"] == "replace" and "nodeConfig.machineType" in pool["replace_because"]
    assert doc["cost"]["monthly_delta"]["max"] == 6459.62


@pytest.mark.pure
def test_markdown_is_a_pr_comment_with_a_summary_and_folded_details():
    md = diff.render_markdown(diff.diff_plans(_plan(), _changed(), base_ref="main"))
    assert md.startswith("### `raygke plan` — stack `dev` vs `main`")
    assert "**stack dev vs main: 1 added, 1 changed, 1 REPLACED" in md
    assert "| **REPLACED** | `gcp:container/nodePool:NodePool` | `h100-pool` |" in md
    assert md.count("<details>") == md.count("</details>") == 3  # pool, config map, outputs
    assert '| `nodeConfig.machineType` | `"a3-highgpu-1g"` | `"a3-highgpu-2g"` | yes |' in md


@pytest.mark.pure
def test_a_document_of_another_version_is_refused():
    with pytest.raises(
        diff.PlanDocumentError, match="schema_version 1; got kind 'raygke-plan', schema_version 2"
    ):
        diff.diff_plans(_plan(schema_version=2), _plan())


@pytest.mark.mocks
def test_the_plan_document_masks_secrets_and_carries_the_cost():
    from raygke.plan import plan_document, plan_stack, render_json, render_text

    plan = plan_stack("dev")
    doc = json.loads(render_json(plan))
    assert doc == json.loads(json.dumps(plan_document(plan), default=repr))
    assert [r["urn"] for r in doc["resources"]] == sorted(r["urn"] for r in doc["resources"])
    assert doc["outputs"]["kubeconfig"]["secret"] is True
    assert "gke-gcloud-auth-plugin" not in render_json(plan)
    assert doc["outputs"]["cost"]["capacity_mode"] == "spot"
    assert doc["outputs"]["cost"]["prices_as_of"] == "2026-02-12"
    text = render_text(plan)
    assert "\ncost: a3-highgpu-1g x 0..2 nodes, spot; list prices as of 2026-02-12" in text
    assert "  cost: {" not in text  # not repeated among the plain outputs
    # the same plan diffed against itself: nothing to review
    assert diff.diff_plans(doc, doc).empty


# ------------------------------------------------------------------------------------ the real command
def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway git repository holding this working tree, plus one commit that reshapes dev's pool.

    Copied (tracked and untracked, not ignored) rather than cloned, so it tests the code as it is now.
    """
    root = tmp_path_factory.mktemp("plan-repo") / "repo"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    stack = root / "stacks" / "Pulumi.dev.yaml"
    text = stack.read_text()
    assert "machineType: a3-highgpu-1g " in text and "acceleratorCount: 1\n" in text
    stack.write_text(
        text.replace("machineType: a3-highgpu-1g ", "machineType: a3-highgpu-2g ").replace(
            "acceleratorCount: 1\n", "acceleratorCount: 2\n"
        )
    )
    _git(root, "commit", "-qam", "dev: two GPUs per node")
    return root


def _raygke(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raygke.cli", *args],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.process
def test_plan_base_reports_the_pool_replaced_and_the_cost_delta(repo: Path):
    done = _raygke(repo, "plan", "--stack", "dev", "--base", "HEAD~1", "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["kind"] == "raygke-plan-diff" and doc["base_ref"] == "HEAD~1"
    pool = next(r for r in doc["resources"] if r["type"] == POOL and r["name"] == "h100-pool")
    assert pool["action"] == "replace"
    machine = next(c for c in pool["changes"] if c["path"] == "nodeConfig.machineType")
    assert (machine["old"], machine["new"], machine["forces_replace"]) == (
        "a3-highgpu-1g",
        "a3-highgpu-2g",
        True,
    )
    assert doc["summary"]["replaced"] == 1 and doc["summary"]["added"] == 0
    cost = doc["cost"]
    assert cost["base"]["machine_type"] == "a3-highgpu-1g"
    assert cost["head"]["machine_type"] == "a3-highgpu-2g"
    assert cost["monthly_delta"]["max"] == pytest.approx(
        6459.62
    )  # 2 nodes x (8.8489 - 4.4245) x 730
    assert "gke-gcloud-auth-plugin" not in done.stdout  # the kubeconfig output stays masked
    # the temporary worktree is gone, and git no longer lists it
    assert _git(repo, "worktree", "list").count("\n") == 1


@pytest.mark.process
def test_plan_base_text_and_a_bad_ref(repo: Path):
    text = _raygke(repo, "plan", "--stack", "dev", "--base", "HEAD~1")
    assert text.returncode == 0, text.stderr
    assert "REPLACED  gcp:container/nodePool:NodePool  h100-pool" in text.stdout
    bad = _raygke(repo, "plan", "--stack", "dev", "--base", "no-such-ref")
    assert bad.returncode == 2
    assert bad.stderr.startswith("raygke: --base 'no-such-ref' is not a commit")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.process
@pytest.mark.parametrize(
    ("cli", "message"),
    [
        (
            'import sys; sys.stderr.write("raygke: error: unrecognized arguments: --format json\\n"); sys.exit(2)',
            "HEAD predates `raygke plan --format json`",
        ),
        ('print("stack dev: 3 resources")', "HEAD printed no plan document for stack dev"),
        (
            'import sys; sys.stderr.write("boom\\nraygke: no stack file x\\n"); sys.exit(2)',
            "exit 2): raygke: no stack file x",
        ),
    ],
)
def test_a_base_that_cannot_be_planned_is_one_line_and_leaves_no_worktree(
    tmp_path: Path, cli: str, message: str
):
    from raygke.plan import PlanBaseError, plan_at_ref

    old = tmp_path / "old"
    (old / "raygke").mkdir(parents=True)
    (old / "raygke" / "__init__.py").write_text("")
    (old / "raygke" / "cli.py").write_text(cli + "\n")
    _git(old, "init", "-q")
    _git(old, "add", "-A")
    _git(old, "commit", "-qm", "an older CLI")
    with pytest.raises(PlanBaseError, match=re.escape(message)):
        plan_at_ref("dev", "HEAD", repo=old)
    assert _git(old, "worktree", "list").count("\n") == 1
