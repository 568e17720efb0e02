"""The shipped stack files as test input: their names, and copies of their `config:` maps with edits."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from infra.stack_file import NAMESPACE as NS
from infra.stack_file import read_stack_file

STACKS = sorted(
    p.name.split(".")[1] for p in (Path(__file__).parents[1] / "stacks").glob("Pulumi.*.yaml")
)

Mutation = Callable[[dict[str, Any]], None]


def edit(section: str, path: Sequence[str | int] = (), /, **values: Any) -> Mutation:
    """Set `values` on the mapping at `path` inside `ray-serve-gke:<section>`."""

    def mutate(config: dict[str, Any]) -> None:
        node = config[f"{NS}:{section}"]
        for part in path:
            node = node[part]
        node.update(values)

    return mutate


def mutated(stack: str, *mutations: Mutation) -> dict[str, Any]:
    """A deep copy of stacks/Pulumi.<stack>.yaml's config with `mutations` applied."""
    config = copy.deepcopy(read_stack_file(stack))
    for mutate in mutations:
        mutate(config)
    return config


SECRET = "s3cr3t-Tok3n-9f1c"  # planted where a secret may be: no message may show it


def with_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with SECRET in ray.extraEnv, whose values may be secrets."""
    ray = config[f"{NS}:ray"]
    ray["extraEnv"] = {**ray.get("extraEnv", {}), "HF_TOKEN": SECRET, "REDIS_AUTH": f"x{SECRET}x"}
    return config


def cases(table: Sequence[tuple[Any, ...]]) -> list[Any]:
    """A table of (id, *values) rows as pytest params, each named by its id."""
    return [pytest.param(*row[1:], id=row[0]) for row in table]
