"""Reading a stack's config: stacks/Pulumi.<stack>.yaml or the running Pulumi stack, into a StackConfig.

Owns: the stack file (a key given twice is an error, not YAML's silent last-wins), mapping Pulumi's
`<namespace>:<section>` keys onto the model, and turning pydantic's errors into one line per problem,
"<key>: <what is wrong>; got <value>", with secrets masked. Does not own the rules themselves
(infra/config.py, and the renderers it calls).

YAML 1.1 against 1.2: `pulumi up` reads a stack file with gopkg.in/yaml.v3 (YAML 1.2, mostly), `raygke
plan` with PyYAML (YAML 1.1). Before anything else, `read_stack_file` refuses every unquoted scalar the
two read differently, naming file, line, key path, the value as written and what to write instead:
base 60 (`5:00`), 1.1 booleans (`yes`, `off`, `y`), leading zeros and `0o`/`0X` prefixes (`010`,
`0o10`), underscores and 1.1-only spellings (`1_000`, `0b101`), exponents PyYAML takes for strings
(`1e3`), integers past 64 bits, dates; and keys holding invisible characters (U+200B, NBSP, tabs...).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from infra.checks import stack_problems
from infra.config import (
    ENCRYPTED,
    FlexStart,
    OnDemand,
    QueuedProvisioning,
    Reservation,
    Spot,
    StackConfig,
    shown_value,
)

NAMESPACE = "ray-serve-gke"  # the project name: Pulumi's config namespace for our keys


class ConfigError(ValueError):
    """A stack config that cannot work; the message lists every problem found."""


_SECTIONS = {
    "environment": "environment",
    "environmentOverride": "environment_override",
    "network": "network",
    "cluster": "cluster",
    "gpuPool": "gpu_pool",
    "kuberay": "kuberay",
    "ingress": "ingress",
    "ray": "ray",
    "rayService": "ray_service",
    "apps": "apps",
    "smoke": "smoke",
}


def _decode(value: Any) -> Any:
    """Pulumi hands structured config over as JSON text; YAML files give it parsed, with each
    secret still encrypted (`{secure: v1:...}`), which only Pulumi can read: ENCRYPTED stands in."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, Mapping):
        if set(value) == {"secure"}:
            return ENCRYPTED
        return {k: _decode(v) if isinstance(v, Mapping | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) if isinstance(v, Mapping | list) else v for v in value]
    return value


def _where(loc: tuple[int | str, ...]) -> str:
    """`('gpu_pool', 'capacity', 'spot', 'mode')` -> `ray-serve-gke:gpuPool.capacity.mode`."""
    parts = [str(p) for p in loc]
    if not parts:
        return NAMESPACE
    top = {v: k for k, v in _SECTIONS.items()}.get(parts[0], parts[0])
    rest = []
    for part in parts[1:]:
        if part in _CAPACITY_MODELS:
            continue  # pydantic's discriminator tag, not a key the user wrote
        rest.append(
            f"[{part}]" if part.isdigit() else f".{to_camel(part) if '_' in part else part}"
        )
    if top in ("project", "region"):
        return f"gcp:{top}"
    if top == "stack":
        return "stack"
    return f"{NAMESPACE}:{top}" + "".join(rest)


_CAPACITY_MODELS = {
    get_args(m.model_fields["mode"].annotation)[0]: m
    for m in (OnDemand, Spot, FlexStart, QueuedProvisioning, Reservation)
}


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` (the parent of an unknown key) accepts, as written in YAML."""
    model: Any = StackConfig
    for part in loc[:-1]:
        if isinstance(part, int) or part.isdigit():
            continue
        field = _field(model, part)
        if field is not None:
            model = _model_in(field.annotation)
        elif part in _CAPACITY_MODELS:  # pydantic's discriminator tag names the union member
            model = _CAPACITY_MODELS[part]
        # otherwise `part` is a key of a dict of models (a deployment name): same model
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _field(model: Any, key: str) -> Any:
    """The field of `model` that `key` names: its YAML alias (camelCase) or its Python name."""
    return next((f for n, f in model.model_fields.items() if key in (f.alias, n)), None)


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None`, `list[X]` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _names_its_key(msg: str) -> bool:
    head = msg.split(" ", 1)[0].rstrip(":").split(".")[0].split("[")[0]
    return head in (*_SECTIONS, "apps", "gcp:region")


def _qualify(line: str) -> str:
    return line if line.startswith("gcp:") else f"{NAMESPACE}:{line}"


MASK = "[secret]"
# Config paths (pydantic locations) whose values may be secrets; shown as MASK, never as given.
_SECRET_LOCS = (("ray", "extra_env"), ("ingress", "tls_key"), ("ingress", "tls_certificate"))


def _is_secret_loc(loc: tuple[int | str, ...], secret_sections: frozenset[str]) -> bool:
    if loc and str(loc[0]) in secret_sections:
        return True
    return any(tuple(str(p) for p in loc[: len(s)]) == s for s in _SECRET_LOCS)


def _format(exc: ValidationError, secret_sections: frozenset[str] = frozenset()) -> str:
    """One line per problem: the key, what is wrong, the value if it is a scalar and not secret."""
    lines = []
    for err in exc.errors():
        where = _where(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        secret = _is_secret_loc(err["loc"], secret_sections)
        shown = MASK if secret else shown_value(err.get("input"))
        if err["type"] == "value_error" and _names_its_key(msg):
            # our validators already name the full key: "gpuPool.minNodes (3) must be <= ..."
            lines.extend(_qualify(line) for line in msg.split("\n"))
            continue
        if err["type"] == "extra_forbidden":
            msg = (
                f"unknown key (value {shown}); allowed keys: {', '.join(_allowed_keys(err['loc']))}"
            )
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif secret:
            # a rule's own message may quote the value it checked
            msg = f"{err['msg'].split(';')[0].removeprefix('Value error, ')}; got {MASK}"
        elif err["type"] == "union_tag_invalid":
            pass  # pydantic's message quotes the tag given and the tags allowed
        elif err["type"] in ("literal_error", "enum") or (
            "got" not in msg and err["type"] not in ("model_type", "dict_type")
        ):
            msg = f"{msg}; got {shown}"
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)


def secret_values(config: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> set[str]:
    """Every string in the stack config that may be a secret: extraEnv values, and every string under
    a key Pulumi holds as secret (`pulumi config set --secret`)."""
    found: set[str] = set()

    def strings(node: Any) -> None:
        if isinstance(node, str):
            found.add(node)
            decoded = _decode(node)
            if decoded is not node:
                strings(decoded)
        elif isinstance(node, Mapping):
            for value in node.values():
                strings(value)
        elif isinstance(node, list | tuple):
            for value in node:
                strings(value)

    for key, raw in config.items():
        if key in secret_keys:
            strings(raw)
    ray = _decode(config.get(f"{NAMESPACE}:ray"))
    if isinstance(ray, Mapping) and isinstance(ray.get("extraEnv"), Mapping):
        strings(list(ray["extraEnv"].values()))
    ingress = _decode(config.get(f"{NAMESPACE}:ingress"))
    if isinstance(ingress, Mapping):
        strings([ingress.get("tlsCertificate"), ingress.get("tlsKey")])
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


MIN_SECRET_CHARS = 4  # shorter values ("1", "true") would mask half a message and protect nothing
_KNOWN_SECRETS: set[str] = set()  # every secret value a parse has seen in this process


def redact(text: str, secrets: set[str] | None = None) -> str:
    """`text` with every secret value replaced by MASK; by default every one this process has
    parsed: the last line of defence for messages built elsewhere (the CLI's last resort)."""
    for secret in sorted(_KNOWN_SECRETS if secrets is None else secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def parse_stack_config(
    stack: str, config: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()
) -> StackConfig:
    """Validate a stack's `config:` map (keys like `gcp:project`, `ray-serve-gke:gpuPool`): each
    section's shape (infra/config.py), then what the stack means across sections and rendered
    objects (infra/checks.py), every problem at once.

    `secret_keys` are the keys Pulumi holds as secrets: no message shows a value from them, nor any
    extraEnv value."""
    secrets = secret_values(config, secret_keys)
    _KNOWN_SECRETS.update(secrets)
    secret_sections = frozenset(
        _SECTIONS[k.partition(":")[2]]
        for k in secret_keys
        if k.partition(":")[0] == NAMESPACE and k.partition(":")[2] in _SECTIONS
    )
    data: dict[str, Any] = {"stack": stack}
    unknown = []
    for key, raw in config.items():
        namespace, _, name = key.partition(":")
        if namespace == "gcp" and name in ("project", "region"):
            data[name] = _decode(raw) if name != "project" else str(raw)
        elif namespace == NAMESPACE:
            if name not in _SECTIONS:
                unknown.append(key)
            else:
                data[_SECTIONS[name]] = _decode(raw)
    if unknown:
        raise ConfigError(
            "\n".join(
                f"{key}: unknown key; allowed keys: {', '.join(f'{NAMESPACE}:{k}' for k in _SECTIONS)}"
                for key in sorted(unknown)
            )
        )
    try:
        parsed = StackConfig.model_validate(data)
    except ValidationError as exc:
        message = f"stack {stack!r} has an invalid config:\n{_format(exc, secret_sections)}"
        raise ConfigError(redact(message, secrets)) from None
    if problems := stack_problems(parsed):
        lines = (_qualify(line) if _names_its_key(line) else line for line in problems)
        message = f"stack {stack!r} has an invalid config:\n" + "\n".join(lines)
        raise ConfigError(redact(message, secrets))
    return parsed


def stack_file_path(stack: str, stacks_dir: Path | None = None) -> Path:
    return (
        stacks_dir or Path(__file__).resolve().parent.parent / "stacks"
    ) / f"Pulumi.{stack}.yaml"


class DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping, at any depth: PyYAML (and most
    loaders) keep the last silently, so the first value a reader sees is not the one deployed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[arg-type]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(
                    f"key {key!r} appears twice in one mapping, at lines {seen[key]} and "
                    f"{line}: YAML keeps only the last; remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# What pulumi up sees, checked against gopkg.in/yaml.v3 (v3.0.1, Pulumi's sdk/go.mod), which Pulumi's
# LoadProjectStack uses (sdk/go/common/workspace/loaders.go -> encoding.YAML, encoding/marshal.go).
# yaml.v3's resolve.go: booleans are only true/false in 3 cases; base 60 is "purposefully unsupported"
# (a string); ints go through Go's strconv.ParseInt(s, 0, 64) after dropping every `_`, so `010` is
# still octal 8 ("may be dropped in v4"), `0o10`/`0O10`/`0X1F`/`0B1` are numbers (strings to PyYAML),
# and past 64 bits, or on failing ParseInt, `08` and `1e3` match its float pattern: numbers.
_V3_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")  # resolve.go's
_V3_PREFIXED = re.compile(r"[-+]?0([oO][0-7]+|X[0-9a-fA-F]+|[bB][01]+)")  # `0x1F` agrees everywhere
_BOOLS_1_1 = {"yes", "no", "on", "off", "y", "n"}  # YAML 1.1's, any case (yaml.v2 took y/n too)
_TAG = "tag:yaml.org,2002:"


def _dialect_problem(node: yaml.ScalarNode) -> str | None:
    """Why YAML 1.1 (PyYAML, raygke plan) and 1.2 (yaml.v3, pulumi up) read this plain scalar
    differently, and what to write instead; None where they agree. Quoted scalars are strings to
    both. Where yaml.v3 still follows 1.1 (`010`, `0b101`, `1_000`) but YAML 1.2's core schema does
    not, it is refused too: yaml.v3 says it may drop these, and the reader cannot tell."""
    text, tag = node.value, node.tag.removeprefix(_TAG)
    if text.lower() in _BOOLS_1_1:
        return "is a boolean to YAML 1.1 but a string to YAML 1.2; write true or false, or quote it"
    if tag == "timestamp":
        return "is a date to PyYAML but the text '... 00:00:00 +0000 UTC' to Pulumi; quote it"
    if tag in ("int", "float") and ":" in text:
        return f"is {yaml.safe_load(text)} (base 60) to YAML 1.1 but a string to YAML 1.2; quote it"
    if "_" in text and (tag in ("int", "float") or _V3_FLOAT.fullmatch(text.replace("_", ""))):
        # both drop them (1_000 is 1000), YAML 1.2's core schema reads a string; 08_1 is 81 to yaml.v3
        return (
            "has underscores, which YAML 1.2 does not allow in numbers;"
            f" write {text.replace('_', '')}, or quote it"
        )
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits.isascii() and digits.isdigit():
        if tag == "str":  # 08, 09: not octal, so PyYAML gives up; yaml.v3 reads a float
            return f"is a string to YAML 1.1 but the number {int(text)} to yaml.v3; write {int(text)}, or quote it"
        return (
            f"is octal {yaml.safe_load(text)} to YAML 1.1 (and yaml.v3) but {int(text)} to YAML 1.2;"
            f" write the number you mean in decimal ({yaml.safe_load(text)} or {int(text)}), or quote it"
        )
    if _V3_PREFIXED.fullmatch(text):
        value = int(text, 0)
        if tag == "str":  # 0o10, 0X1F: PyYAML knows only lower-case 0x and 0b
            return f"is a string to YAML 1.1 but {value} to yaml.v3; write {value}, or quote it"
        return f"is {value} to YAML 1.1 and yaml.v3 but a string to YAML 1.2; write {value}, or quote it"
    if tag == "str" and _V3_FLOAT.fullmatch(text):  # PyYAML wants a dot, and a sign on the exponent
        fixed = repr(float(text))
        fix = fixed if "e" not in fixed else "a dot and a signed exponent (1.0e+300)"
        return (
            f"is a string to YAML 1.1 but the number {fixed} to YAML 1.2; write {fix}, or quote it"
        )
    if tag == "int" and not -(2**63) <= int(text, 0) < 2**64:
        return "is past 64 bits: an integer to YAML 1.1, a float to yaml.v3; quote it"
    return None


def _is_invisible(c: str) -> bool:
    """A character a reader cannot see, or cannot tell from a plain space."""
    return c != " " and unicodedata.category(c) in ("Cf", "Zs", "Zl", "Zp", "Cc")


def _invisible(key: str) -> list[str]:
    tab = "CHARACTER TABULATION"  # unicodedata names no control character
    return [
        f"U+{ord(c):04X} {unicodedata.name(c, tab if c == chr(9) else 'CONTROL')} at position {i}"
        for i, c in enumerate(key, 1)
        if _is_invisible(c)
    ]


def _shown_key(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if _is_invisible(c) else c for c in key)


def _dialect_problems(path: Path, root: yaml.Node | None) -> list[str]:
    """Every scalar below `root` that YAML 1.1 and 1.2 read differently, and every key with an
    invisible character: one line each, in file order."""
    problems: list[str] = []
    seen: set[int] = set()  # an alias is the same node again: report it once, and never loop

    def walk(node: yaml.Node, where: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        line = f"{path}:{node.start_mark.line + 1}: {where or '(top)'}"
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                sub = f"{where}.{_shown_key(key)}" if where else _shown_key(key)
                if isinstance(key_node, yaml.ScalarNode):
                    if chars := _invisible(key):
                        problems.append(
                            f"{path}:{key_node.start_mark.line + 1}: {sub}: key {key!r} holds "
                            f"{', '.join(chars)}; retype the key"
                        )
                    walk(key_node, sub)
                walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{where}[{i}]")
        elif (
            isinstance(node, yaml.ScalarNode) and node.style is None
        ):  # plain: resolved by its text
            why = _dialect_problem(node)
            if why:
                problems.append(f"{line}: {node.value} {why}")

    if root is not None:
        walk(root, "")
    return problems


def read_stack_file(stack: str, stacks_dir: Path | None = None) -> dict[str, Any]:
    """The raw `config:` map of stacks/Pulumi.<stack>.yaml, refused where YAML 1.1 and 1.2 (PyYAML
    here, yaml.v3 under `pulumi up`) would read it differently."""
    path = stack_file_path(stack, stacks_dir)
    if not path.is_file():
        available = sorted(p.name.split(".")[1] for p in path.parent.glob("Pulumi.*.yaml"))
        raise ConfigError(f"no stack file {path}; stacks: {', '.join(available) or 'none'}")
    loader = _UniqueKeyLoader(path.read_text())
    try:
        # compose, not construct: the check must see the text and quoting as written
        root = loader.get_single_node()
        if problems := _dialect_problems(path, root):
            raise ConfigError("\n".join(problems))
        document = (loader.construct_document(root) if root is not None else None) or {}
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(f"{path} must hold a `config:` mapping")
    return document["config"]


def load_stack_config(stack: str, stacks_dir: Path | None = None) -> StackConfig:
    return parse_stack_config(stack, read_stack_file(stack, stacks_dir))


def load_pulumi_stack_config() -> StackConfig:
    """The running Pulumi stack's config, validated (used by infra/__main__.py)."""
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    config = {**get_config_env(), **CONFIG.get()}
    return parse_stack_config(pulumi.get_stack(), config, _pulumi_secret_keys())


def _pulumi_secret_keys() -> frozenset[str]:
    """The config keys Pulumi decrypted for this run (their values must never reach a message)."""
    from pulumi.runtime.config import get_config_secret_keys_env

    return frozenset(get_config_secret_keys_env())
