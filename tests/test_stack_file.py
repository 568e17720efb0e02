"""infra/stack_file.py: reading a stack file (a key given twice is an error), and pydantic's errors as
one line per problem naming the key, with every secret value masked."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from stackfiles import NS, SECRET, STACKS, cases, edit, mutated, with_secrets

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


# --- YAML 1.1 (PyYAML: raygke plan) against YAML 1.2 (yaml.v3: pulumi up) ----------------------


def _read(tmp_path: Path, body: str) -> dict:
    (tmp_path / "Pulumi.t.yaml").write_text(f"config:\n{body}")
    return read_stack_file("t", tmp_path)


DISAGREEING = [
    # base 60: 1.1 reads a number, 1.2 a string
    ("5:00", r"5:00 is 300 \(base 60\) to YAML 1.1 but a string to YAML 1.2; quote it"),
    ("1:30:00", r"1:30:00 is 5400 \(base 60\)"),
    ("-1:30", r"-1:30 is -90 \(base 60\)"),
    ("1:30.5", r"1:30.5 is 90.5 \(base 60\)"),
    # 1.1 booleans (y/n are YAML 1.1's, and yaml.v2's, though not PyYAML's), any case
    *((b, rf"{b} is a boolean to YAML 1.1 but a string to YAML 1.2; write true or false, or quote it")
      for b in ("yes", "No", "ON", "off", "y", "N", "yEs")),
    # leading zeros and prefixes
    ("010", r"010 is octal 8 to YAML 1.1 \(and yaml.v3\) but 10 to YAML 1.2; write the number you mean in decimal \(8 or 10\)"),
    ("-0777", r"-0777 is octal -511 .* but -777 to YAML 1.2"),
    ("08", r"08 is a string to YAML 1.1 but the number 8 to yaml.v3; write 8, or quote it"),
    ("0o10", r"0o10 is a string to YAML 1.1 but 8 to yaml.v3; write 8, or quote it"),
    ("0O17", r"0O17 is a string to YAML 1.1 but 15 to yaml.v3"),
    ("0X1F", r"0X1F is a string to YAML 1.1 but 31 to yaml.v3"),
    ("0b101", r"0b101 is 5 to YAML 1.1 and yaml.v3 but a string to YAML 1.2; write 5"),
    # underscores
    ("1_000", r"1_000 has underscores, which YAML 1.2 does not allow in numbers; write 1000, or quote it"),
    ("1_000.5", r"1_000.5 has underscores.*write 1000.5"),
    ("0x_ff", r"0x_ff has underscores.*write 0xff"),
    ("08_1", r"08_1 has underscores"),
    # float spellings only yaml.v3 takes: no dot, unsigned exponent, sign before a dot
    ("1e3", r"1e3 is a string to YAML 1.1 but the number 1000.0 to YAML 1.2; write 1000.0, or quote it"),
    ("1.5E3", r"1.5E3 is a string .* number 1500.0"),
    ("-.5", r"-.5 is a string .* number -0.5 to YAML 1.2; write -0.5"),
    ("1e300", r"1e300 .* write a dot and a signed exponent \(1.0e\+300\)"),
    # past 64 bits, dates
    ("99999999999999999999", r"99999999999999999999 is past 64 bits: an integer to YAML 1.1, a float to yaml.v3; quote it"),
    ("-9223372036854775809", r"-9223372036854775809 is past 64 bits"),
    ("2024-01-01", r"2024-01-01 is a date to PyYAML but the text .* to Pulumi; quote it"),
    ("2024-01-01T10:00:00Z", r"2024-01-01T10:00:00Z is a date to PyYAML"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "pattern"), DISAGREEING, ids=[v for v, _ in DISAGREEING])
def test_a_plain_scalar_yaml_1_1_and_1_2_read_differently_is_refused(
    tmp_path: Path, value: str, pattern: str
):
    with pytest.raises(
        ConfigError, match=rf"^\S*Pulumi.t.yaml:4: config.ray-serve-gke:x.size: {pattern}"
    ):
        _read(tmp_path, f"  gcp:region: us-central1\n  ray-serve-gke:x:\n    size: {value}\n")


@pytest.mark.parametrize("value", [v for v, _ in DISAGREEING])
def test_the_same_value_quoted_is_a_string_to_both(tmp_path: Path, value: str):
    assert _read(tmp_path, f"  a: '{value}'\n  b: \"{value}\"\n") == {"a": value, "b": value}


@pytest.mark.parametrize(
    ("value", "read"),
    [("0x1F", 31), ("10", 10), ("0", 0), ("-3", -3), ("+7", 7), ("1.5", 1.5), ("1.0e+3", 1000.0),
     (".5", 0.5), ("true", True), ("False", False), ("~", None), ("null", None), ("1:60", "1:60"),
     ("us-central1", "us-central1"), ("10.10.0.0/20", "10.10.0.0/20"), ("a_b", "a_b"), ("yess", "yess")],
)  # fmt: skip
def test_a_plain_scalar_both_read_alike_is_accepted(tmp_path: Path, value: str, read: object):
    assert _read(tmp_path, f"  k: {value}\n") == {"k": read}


def test_infinities_and_nan_mean_the_same_in_both(tmp_path: Path):
    config = _read(tmp_path, "  a: [.inf, -.inf, +.Inf, .NaN]\n")
    assert config["a"][:3] == [float("inf"), float("-inf"), float("inf")]
    assert config["a"][3] != config["a"][3]


@pytest.mark.parametrize(
    ("key", "named"),
    [("gpu\u200bPool", "U+200B ZERO WIDTH SPACE at position 4"),
     ("gpu\u200cPool", "U+200C ZERO WIDTH NON-JOINER at position 4"),
     ("gpuPool\u200d", "U+200D ZERO WIDTH JOINER at position 8"),
     ("\ufeffgpuPool", "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"),
     ("gpu\u00a0Pool", "U+00A0 NO-BREAK SPACE at position 4"),
     ("gpu\tPool", "U+0009 CHARACTER TABULATION at position 4"),
     ("gpu\u2009Pool", "U+2009 THIN SPACE at position 4"),
     ("gpu\u2060Pool", "U+2060 WORD JOINER at position 4")],
)  # fmt: skip
def test_a_key_with_an_invisible_character_is_refused_naming_it(
    tmp_path: Path, key: str, named: str
):
    """At the top and under another key; the key path shows the character escaped."""
    written = key.replace("\t", "\\t")  # a double-quoted YAML key keeps a tab as \t
    shown = re.escape("".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in key))
    for body, where in (
        (f'  "{written}": 1\n', ""),
        (f'  ok:\n    "{written}": {{min: 1}}\n', "ok."),
    ):
        with pytest.raises(
            ConfigError,
            match=rf"Pulumi.t.yaml:\d: config\.{where}{shown}: key .* holds {re.escape(named)}; retype the key$",
        ):
            _read(tmp_path, body)


def test_a_key_with_a_plain_space_is_accepted(tmp_path: Path):
    assert _read(tmp_path, "  'a b': 1\n") == {"a b": 1}


def test_every_problem_at_once_one_line_each_before_a_duplicate_key(tmp_path: Path):
    body = '  a: yes\n  a: 1\n  b:\n    - {c: 010, "d\\u200b": 5:00}\n'
    with pytest.raises(ConfigError) as raised:
        _read(tmp_path, body)
    lines = str(raised.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "config.a", "config.b[0].c", "config.b[0].d\\u200b", "config.b[0].d\\u200b"
    ]  # fmt: skip
    assert all(line.startswith(str(tmp_path / "Pulumi.t.yaml:")) for line in lines)
    assert [line.split(":")[1] for line in lines] == ["2", "5", "5", "5"]


def test_an_alias_is_reported_once_and_a_recursive_one_ends(tmp_path: Path):
    with pytest.raises(ConfigError) as raised:
        _read(tmp_path, "  a: &x [yes]\n  b: *x\n")
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_reads_alike_in_both(stack: str):
    assert read_stack_file(stack)


def test_the_insecure_fixture_reads_alike_in_both():
    assert read_stack_file("insecure", Path(__file__).parent / "fixtures")
