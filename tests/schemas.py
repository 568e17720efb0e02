"""Validators for rendered manifests, shared by every test that renders Kubernetes objects.

Owns: `validate_rayservice(obj)` (the KubeRay v1.7.0 RayService CRD's openAPIV3Schema, via
jsonschema) and `validate_core(obj)` (Kubernetes' own schemas, via kubernetes-validate). Both raise
`ManifestError` with the object, the path and the reason.
Does not own: the manifests (components/render/) or the CRD files (components/crds/).

The CRD schema is made strict before use: an object schema that lists `properties` and neither
`additionalProperties` nor `x-kubernetes-preserve-unknown-fields` is closed. The API server would
prune unknown fields silently (or reject them under strict field validation); either way a typo is a
bug. CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from jsonschema import Draft7Validator

CRD_DIR = Path(__file__).resolve().parent.parent / "components" / "crds"
# GKE's regular channel runs 1.33; kubernetes-validate picks the newest schema not newer than this.
KUBERNETES_VERSION = "1.33"


class ManifestError(AssertionError):
    """A rendered manifest the API server would reject."""


@functools.cache
def crd(kind_plural: str) -> dict[str, Any]:
    """The parsed CRD `ray.io_<kind_plural>.yaml` (about 1 MB: parsed once per test session)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (CRD_DIR / f"ray.io_{kind_plural}.yaml").open() as f:
        return yaml.load(f, Loader=loader)


def _close(schema: Any) -> Any:
    """`schema` with every object that lists properties closed to unknown fields, recursively."""
    if isinstance(schema, list):
        return [_close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: _close(v) for k, v in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def _rayservice_validator() -> Any:
    versions = crd("rayservices")["spec"]["versions"]
    schema = copy.deepcopy(
        next(v for v in versions if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    )
    strict = _close(schema)
    return Draft7Validator(strict)


def validate_rayservice(obj: dict[str, Any]) -> None:
    """Raise ManifestError unless `obj` is a ray.io/v1 RayService its CRD's schema accepts."""
    if obj.get("apiVersion") != "ray.io/v1" or obj.get("kind") != "RayService":
        raise ManifestError(
            f"expected apiVersion ray.io/v1, kind RayService; got {obj.get('apiVersion')!r}, "
            f"{obj.get('kind')!r}"
        )
    errors = sorted(_rayservice_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  at {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
        ]
        name = obj.get("metadata", {}).get("name")
        raise ManifestError(
            f"RayService {name!r} fails the v1.7.0 CRD schema:\n" + "\n".join(lines)
        )


def validate_core(obj: dict[str, Any]) -> None:
    """Raise ManifestError unless Kubernetes' schema for `obj`'s kind accepts it (strictly)."""
    where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')!r}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(map(str, e.absolute_path)) or "<root>"
        raise ManifestError(
            f"{where} fails Kubernetes {KUBERNETES_VERSION}: at {path}: {e.message}"
        ) from e
    except kubernetes_validate.SchemaNotFoundError as e:
        raise ManifestError(f"{where}: no Kubernetes schema: {e.message}") from e
