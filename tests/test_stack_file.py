"""infra/stack_file.py: reading a stack file (a key given twice is an error), and pydantic's errors as
one line per problem naming the key, with every secret value masked."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from stackfiles import NS, SECRET, cases, edit, mutated, with_secrets

from infra.stack_file import (
    MASK,
    ConfigError,
    load_stack_config,
    parse_stack_config,
    read_stack_file,
    redact,
)

pytestmark = pytest.mark.config


def test_missing_stack_file_names_the_stacks():
    with pytest.raises(
        ConfigError, match=r"no stack file .*Pulumi.qa.yaml; stacks: dev, prod, staging"
    ):
        load_stack_config("qa")


# --- duplicate keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "key", "lines"),
    [
        (lambda t: t.replace("  gcp:region: us-central1\n", "  gcp:region: us-central1\n  gcp:region: us-east4\n"), "gcp:region", (6, 7)),
        (lambda t: t.replace("    maxNodes: 2\n", "    maxNodes: 2\n    maxNodes: 20\n"), "maxNodes", (28, 29)),
        (lambda t: t.replace("      args: {payload_size: 1024}", "      args: {payload_size: 1024, payload_size: 8}"), "payload_size", (54, 54)),
    ],
    ids=["top-level", "nested", "flow-mapping-in-a-list"],
)  # fmt: skip
def test_a_key_given_twice_is_an_error_naming_key_file_and_lines(
    tmp_path: Path, edit: Callable[[str], str], key: str, lines: tuple[int, int]
):
    text = (Path(__file__).parents[1] / "stacks" / "Pulumi.dev.yaml").read_text()
    changed = edit(text)
    assert changed != text
    (tmp_path / "Pulumi.dev.yaml").write_text(changed)
    first, second = lines
    with pytest.raises(
        ConfigError,
        match=rf"Pulumi.dev.yaml: key '{key}' appears twice in one mapping, at lines {first} and "
        rf"{second}: YAML keeps only the last; remove one",
    ):
        read_stack_file("dev", tmp_path)


def _duplicate_app(config: dict) -> None:
    config[f"{NS}:apps"].append(copy.deepcopy(config[f"{NS}:apps"][0]))


SECRET_LEAK_CASES: list[tuple[str, Callable[[dict], None], str]] = [
    ("duplicate app name", _duplicate_app, r"apps: name 'echo' appears twice"),
    ("unknown top-level ray key", edit("ray", token=SECRET), r"ray.token: unknown key \(value \[secret\]\)"),
    ("extraEnv value of the wrong type", edit("ray", ["extraEnv"], PORT=[SECRET]), r"ray.extraEnv.PORT: .*got \[secret\]"),
    ("tuning conflict", edit("ray", ["extraEnv"], RAY_SERVE_HAPROXY_NBTHREAD=SECRET), r"ray.extraEnv.RAY_SERVE_HAPROXY_NBTHREAD conflicts"),
    ("secret as a whole section", edit("ray", version=SECRET), r"ray.version must look like .*; got '\[secret\]'"),
    ("bad env var name", edit("ray", ["extraEnv"], **{"A B": SECRET}), r"an environment variable name must be"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "pattern"), cases(SECRET_LEAK_CASES))
def test_secrets_are_masked_and_the_key_still_named(mutate, pattern):
    """extraEnv values, and any key Pulumi holds as secret (here the whole ray section), are masked;
    no message dumps a mapping (a duplicate app name used to print the whole stack config)."""
    config = with_secrets(mutated("dev"))
    mutate(config)
    with pytest.raises(ConfigError, match=pattern) as raised:
        parse_stack_config("dev", config, secret_keys=frozenset({f"{NS}:ray"}))
    message = str(raised.value)
    assert SECRET not in message
    assert "{" not in message, message  # no dict was dumped


def test_pulumi_hands_structured_config_over_as_json_text():
    raw = read_stack_file("dev")
    as_pulumi = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    assert parse_stack_config("dev", as_pulumi) == parse_stack_config("dev", raw)


def test_redact_masks_each_secret_the_longest_first():
    secrets = {SECRET, f"x{SECRET}x"}
    assert redact(f"got x{SECRET}x and {SECRET}", secrets) == f"got {MASK} and {MASK}"


def test_a_value_under_a_secret_key_is_masked_in_the_message():
    config = mutated("dev", lambda c: c.update({"gcp:region": SECRET}))
    with pytest.raises(ConfigError) as raised:
        parse_stack_config("dev", config, secret_keys=frozenset({"gcp:region"}))
    assert SECRET not in str(raised.value) and MASK in str(raised.value)
