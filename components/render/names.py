"""Kubernetes object names and keys, as the API server validates them (apimachinery's validation).

Owns the name grammars the renderers' objects must satisfy (namespaces, Secrets, Secret keys,
ServiceAccounts, environment variable names) and one checker per object kind, returning the problem
or None, so the stack config calls the same rule the renderers rely on. Does not own names that
KubeRay or GCP constrain further (components/render/rayservice.py's RayService name, GCS buckets).
"""

from __future__ import annotations

import re

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL_MAX = 63
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
DNS_1123_SUBDOMAIN_MAX = 253
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# A Secret's (or ConfigMap's) data key.
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# An env var name as Kubernetes validated it before 1.34 relaxed it (C identifier plus '-' and '.');
# shells and Ray's own `ray start` read only these.
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def dns_1123_label(value: str, what: str) -> str | None:
    """A namespace (or any DNS-1123 label name): `what` names the object kind in the message."""
    if len(value) > DNS_1123_LABEL_MAX or not DNS_1123_LABEL.match(value):
        return (
            f"a {what} name must be a DNS-1123 label: at most {DNS_1123_LABEL_MAX} lower-case "
            f"letters, digits and '-', starting and ending with a letter or digit; got {value!r}"
        )
    return None


def dns_1123_subdomain(value: str, what: str) -> str | None:
    """A Secret, ServiceAccount, ConfigMap or GatewayClass name."""
    if len(value) > DNS_1123_SUBDOMAIN_MAX or not DNS_1123_SUBDOMAIN.match(value):
        return (
            f"a {what} name must be a DNS-1123 subdomain: at most {DNS_1123_SUBDOMAIN_MAX} "
            "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit; "
            f"got {value!r}"
        )
    return None


def check_namespace(value: str) -> str | None:
    return dns_1123_label(value, "Namespace")


def check_secret_name(value: str) -> str | None:
    return dns_1123_subdomain(value, "Secret")


def check_service_account_name(value: str) -> str | None:
    return dns_1123_subdomain(value, "ServiceAccount")


def check_secret_key(value: str) -> str | None:
    if len(value) > DNS_1123_SUBDOMAIN_MAX or not CONFIG_KEY.match(value) or value in (".", ".."):
        return (
            "a Secret key must be 1-253 letters, digits, '-', '_' or '.' (not '.' or '..'); "
            f"got {value!r}"
        )
    return None


def check_env_var_name(value: str) -> str | None:
    if not ENV_VAR_NAME.match(value):
        return (
            "an environment variable name must be letters, digits, '_', '-' or '.', not starting "
            f"with a digit; got {value!r}"
        )
    return None
