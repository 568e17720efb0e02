"""Container image references: `[registry/]path[:tag][@sha256:<64 hex>]`, parsed once.

Owns what "pinned" means (a version tag, or a digest, which wins: the registry cannot move it) for the
stack config, the renderers and the policy pack. Does not own which images the stack uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH = re.compile(r"^[a-z0-9]+(?:[._-]+[a-z0-9]+|__)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class ImageRef:
    repository: str  # registry and path, without tag or digest
    tag: str | None
    digest: str | None  # sha256:<64 hex>

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def parse_image(ref: str) -> ImageRef:
    """Split an image reference; ValueError with what is allowed when it is not one."""
    rest, _, digest = ref.partition("@")
    if digest and not DIGEST.match(digest):
        raise ValueError(
            f"{ref!r}: a digest must be sha256:<64 lowercase hex digits>; got {digest!r}"
        )
    head, _, last = rest.rpartition("/")
    name, _, tag = last.partition(":")
    repository = f"{head}/{name}" if head else name
    registry, _, path = repository.partition("/")
    is_registry = "." in registry or ":" in registry or registry == "localhost"
    if not name or not _PATH.match(path if path and is_registry else repository):
        raise ValueError(
            f"{ref!r} is not an image reference such as repo/name:tag or repo/name@sha256:<digest>"
        )
    if tag and not _TAG.match(tag):
        raise ValueError(f"{ref!r}: tag {tag!r} is not a valid image tag")
    return ImageRef(repository=repository, tag=tag or None, digest=digest or None)


def pin_problem(ref: str) -> str | None:
    """Why `ref` is not pinned (no tag, `latest`, or not a reference), or None."""
    try:
        image = parse_image(ref)
    except ValueError as exc:
        return str(exc)
    if image.digest:
        return None
    if image.tag is None:
        return "no tag (Kubernetes pulls :latest)"
    if image.tag == "latest":
        return "tag 'latest'"
    return None
