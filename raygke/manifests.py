"""Every Kubernetes object a stack registers, as plain manifests, for scanners such as checkov.

Owns: turning the registrations of a mocked run (`raygke.mocks`) into `apiVersion`/`kind` manifests,
wrapping each RayService pod template (head and every worker group) as a plain Pod so pod-level
scanners see what KubeRay will create, and writing them out as YAML (`python -m raygke.manifests`).
Does not own: the objects themselves (components/), running the scanner (`make scan`), or the
Helm release's contents (a Release registers only its values; the chart renders in the cluster).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from raygke.mocks import Registration, ints

_K8S_TYPE = re.compile(r"^kubernetes:(?P<group>[^/:]+)/(?P<version>[^:]+):(?P<kind>[A-Za-z]+)$")
# Registrations that are not objects of their own: the provider, Helm releases (values only) and
# ConfigGroups of raw YAML (the CRDs, unchanged upstream files).
_SKIP_KINDS = {"Release", "ConfigGroup", "ConfigFile", "Chart"}
RAY_KINDS = {"RayService", "RayCluster"}


def manifest(reg: Registration) -> dict[str, Any] | None:
    """The object `reg` registers, or None when it is not one Kubernetes object."""
    match = _K8S_TYPE.match(reg.type)
    if match is None or match["kind"] in _SKIP_KINDS:
        return None
    group, version = match["group"], match["version"]
    inputs = {k: v for k, v in ints(reg.inputs).items() if k not in ("apiVersion", "kind")}
    if match["kind"] == "Secret":
        # A secret value is recorded masked, the whole map with it: scanners read no data anyway.
        inputs = {k: v for k, v in inputs.items() if k not in ("data", "stringData")}
    return {
        "apiVersion": version if group == "core" else f"{group}/{version}",
        "kind": match["kind"],
        **inputs,
    }


def ray_pods(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's and each worker group's pod template of a RayService/RayCluster, as Pods."""
    spec = obj.get("spec", {})
    cluster = spec.get("rayClusterConfig", spec) if obj["kind"] == "RayService" else spec
    meta = obj.get("metadata", {})
    name, namespace = meta.get("name", "ray"), meta.get("namespace", "default")
    groups = [("head", cluster.get("headGroupSpec", {}))]
    groups += [(g.get("groupName", "worker"), g) for g in cluster.get("workerGroupSpecs", [])]
    pods = []
    for group, spec_ in groups:
        template = spec_.get("template", {})
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    **template.get("metadata", {}),
                    "name": f"{name}-{group}",
                    "namespace": namespace,
                },
                "spec": template.get("spec", {}),
            }
        )
    return pods


def objects(registrations: Iterable[Registration]) -> list[dict[str, Any]]:
    """Every Kubernetes object registered, then the Ray pod templates as Pods."""
    found = [m for r in registrations if (m := manifest(r)) is not None]
    return found + [pod for m in found if m["kind"] in RAY_KINDS for pod in ray_pods(m)]


def file_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj['kind'].lower()}-{meta.get('namespace', 'cluster')}-{meta.get('name', 'x')}.yaml"


def write(objs: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """One YAML file per object under `out`; raises if two objects would share a file."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for obj in objs:
        path = out / file_name(obj)
        if path in paths:
            raise ValueError(f"two objects map to {path.name}")
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        paths.append(path)
    return paths


def dump_stack(stack: str, out: Path, stacks_dir: Path | None = None) -> list[Path]:
    """Plan `stack` under mocks and write its Kubernetes objects (and Ray pods) under `out`."""
    from raygke.plan import plan_stack  # the whole program: imported only when dumping a stack

    plan = plan_stack(stack, stacks_dir)
    return write(objects(plan.inventory.resources), out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raygke.manifests",
        description="Write every Kubernetes object of a stack (and the Ray pods) as YAML files.",
    )
    parser.add_argument("--stack", required=True, help="dev, staging or prod")
    parser.add_argument("--out", type=Path, required=True, help="folder for the YAML files")
    args = parser.parse_args(argv)
    paths = dump_stack(args.stack, args.out)
    print(f"{len(paths)} objects of stack {args.stack} written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
