"""What a stack's Kubernetes objects name, and whether each will exist: a plan-time check.

Owns: `reference_problems`, over the plain manifests of a stack's rendered graph
(`RenderedStack.objects()`, infra/rendered.py): the Secrets, ConfigMaps, ServiceAccounts and
PersistentVolumeClaims a pod template or a RayService names, the namespace each object lives in, the
pods each Service selects, and the namespaces each NetworkPolicy admits; and the tables of what
exists although the stack does not create it (Kubernetes' and GKE's namespaces, what every namespace
holds, what KubeRay creates for a RayCluster, the labels it puts on Ray pods). Does not own the
objects (components/render/) nor which prerequisites a stack declares (the caller passes them).
Imports no Pulumi SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

Ref = tuple[str, str, str]
"""(kind, namespace, name) of an object; the namespace is "" for a Namespace."""
_Named = tuple[str, str, str]  # (field path, kind, name) of a reference inside an object

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
_BY_NAME = f'namespaceSelector.matchLabels["{NAMESPACE_LABEL}"]'

# Kubernetes creates the first four in every cluster ("Initial namespaces",
# https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/), and labels every
# namespace with NAMESPACE_LABEL (same page, "Automatic labelling"), which NetworkPolicies select.
# GKE adds its own: managed collection of Managed Service for Prometheus runs in gke-gmp-system and
# reads its OperatorConfig from gmp-public
# (https://cloud.google.com/stackdriver/docs/managed-prometheus/setup-managed); gke-managed-system
# holds GKE-managed system components. `gmp-system` is left out: it is where the self-deployed
# operator runs (GoogleCloudPlatform/prometheus-engine, manifests/operator.yaml).
CLUSTER_NAMESPACES = frozenset(
    {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "gke-gmp-system",
        "gmp-public",
        "gke-managed-system",
    }
)

# What Kubernetes puts in every namespace: the ServiceAccount a pod runs as when it names none
# (https://kubernetes.io/docs/concepts/security/service-accounts/, "Default service accounts") and
# the cluster's CA bundle (https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/,
# kube-root-ca.crt).
IN_EVERY_NAMESPACE = frozenset({("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")})


@dataclass(frozen=True)
class KubeRayCreates:
    """An object KubeRay makes for a RayCluster, in its namespace, when `when(spec)` holds."""

    kind: str
    name: str  # `{cluster}` stands for the RayCluster's name
    when: Callable[[Mapping[str, Any]], bool]  # of the RayCluster's spec
    what: str


def _get(spec: Any, *keys: str) -> Any:
    for key in keys:
        spec = spec.get(key) or {}
    return spec or None


def _token_auth(s: Mapping[str, Any]) -> bool:
    return _get(s, "authOptions", "mode") == "token"


def _autoscaling(s: Mapping[str, Any]) -> bool:
    return bool(s.get("enableInTreeAutoscaling"))


def _autoscaler_account(s: Mapping[str, Any]) -> bool:
    return _autoscaling(s) and not _get(
        s, "headGroupSpec", "template", "spec", "serviceAccountName"
    )


# KubeRay v1.7.0, ray-operator/controllers/ray/raycluster_controller.go: reconcileAuthSecret (the
# token Secret, key `auth_token`), reconcileAutoscalerServiceAccount (named by
# utils.GetHeadGroupServiceAccountName), reconcileAutoscalerRole / RoleBinding,
# reconcileGCSStoragePVC (utils.GetGCSStoragePVCName). The Secret, the ServiceAccount and the PVC
# each have a field that, when set, names the user's own object instead (authOptions.secretName, the
# head's serviceAccountName, gcsFaultToleranceOptions.storage.claimName); KubeRay then creates none
# and that name is checked like any other. KubeRay clips names over 50 characters
# (utils.CheckName). A RayService's RayClusters are named `<rayservice>-<5 random characters>`
# (utils.GenerateRayClusterName), so no template can name these objects of a RayService.
KUBERAY_CREATES = (
    KubeRayCreates(
        "Secret",
        "{cluster}",
        lambda s: (
            _token_auth(s)
            and not _get(s, "authOptions", "secretName")
            and not _get(s, "authOptions", "enableK8sTokenAuth")
        ),
        "the token of authOptions mode token",
    ),
    KubeRayCreates("ServiceAccount", "{cluster}", _autoscaler_account, "the autoscaler's identity"),
    KubeRayCreates("Role", "{cluster}", _autoscaling, "the autoscaler's permissions"),
    KubeRayCreates("RoleBinding", "{cluster}", _autoscaling, "binds them to its ServiceAccount"),
    KubeRayCreates(
        "PersistentVolumeClaim",
        "{cluster}-gcs-pvc",
        lambda s: (
            _get(s, "gcsFaultToleranceOptions", "backend") == "rocksdb"
            and not _get(s, "gcsFaultToleranceOptions", "storage", "claimName")
        ),
        "the GCS store of the rocksdb fault-tolerance backend",
    ),
)

# The labels KubeRay v1.7.0 puts on every Ray pod (ray-operator/controllers/ray/common/pod.go:
# labelPod; the head's group is utils.RayNodeHeadGroupLabelValue) and, for a RayService's pods,
# `ray.io/serve` (BuildPod: "true" on workers, "false" on the head until the RayService controller
# finds its proxy healthy, rayservice_controller.go updateHeadPodServeLabel). The template's labels
# and the group's `labels` are kept, except these four, which KubeRay always sets itself.
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"
GROUP_LABEL = "ray.io/group"
SERVE_LABEL = "ray.io/serve"
_KUBERAY_OWNS = frozenset({CLUSTER_LABEL, NODE_TYPE_LABEL, GROUP_LABEL, SERVE_LABEL})

# Where each workload kind keeps its pod template (a Pod is its own).
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# (field, kind, name key) of each way a pod spec names an object.
_KEY_REFS = (("secretKeyRef", "Secret", "name"), ("configMapKeyRef", "ConfigMap", "name"))
_ENV_FROM = (("secretRef", "Secret", "name"), ("configMapRef", "ConfigMap", "name"))
_VOLUMES = (
    ("secret", "Secret", "secretName"),
    ("configMap", "ConfigMap", "name"),
    ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName"),
)
_PROJECTED = (("secret", "Secret", "name"), ("configMap", "ConfigMap", "name"))


@dataclass(frozen=True)
class _PodTemplate:
    path: str  # of the pod spec, e.g. "spec.template.spec"
    spec: Mapping[str, Any]
    labels: Mapping[str, tuple[str, ...]]  # each label's possible values, as fnmatch patterns


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _ref(obj: Mapping[str, Any]) -> Ref:
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace") or "", meta.get("name", "")


def _who(obj: Mapping[str, Any]) -> str:
    kind, namespace, name = _ref(obj)
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _ray_cluster(obj: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(path, spec) of the RayCluster spec inside a RayService or RayCluster, else None."""
    if obj["kind"] == "RayService":
        return "spec.rayClusterConfig", _get(obj, "spec", "rayClusterConfig") or {}
    if obj["kind"] == "RayCluster":
        return "spec", obj.get("spec") or {}
    return None


def _templates(obj: Mapping[str, Any]) -> Iterator[_PodTemplate]:
    if obj["kind"] in _TEMPLATE_PATHS:
        template: Any = obj
        for key in _TEMPLATE_PATHS[obj["kind"]]:
            template = template.get(key) or {}
        labels = _get(template, "metadata", "labels") or {}
        path = _join(*_TEMPLATE_PATHS[obj["kind"]], "spec")
        yield _PodTemplate(path, template.get("spec") or {}, {k: (v,) for k, v in labels.items()})
    if (found := _ray_cluster(obj)) is None:
        return
    path, cluster = found
    name = _ref(obj)[2]
    cluster_name = f"{name}-*" if obj["kind"] == "RayService" else name
    groups = [("head", "headgroup", f"{path}.headGroupSpec", cluster.get("headGroupSpec") or {})]
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        groups.append(
            ("worker", group.get("groupName", ""), f"{path}.workerGroupSpecs[{i}]", group)
        )
    for node_type, group_name, where, group in groups:
        kuberay: dict[str, tuple[str, ...]] = {
            "ray.io/is-ray-node": ("yes",),
            CLUSTER_LABEL: (cluster_name,),
            NODE_TYPE_LABEL: (node_type,),
            GROUP_LABEL: (group_name,),
            "ray.io/identifier": (f"{cluster_name}-{node_type}",),
            "app.kubernetes.io/name": ("kuberay",),
            "app.kubernetes.io/created-by": ("kuberay-operator",),
        }
        if obj["kind"] == "RayService":
            kuberay[SERVE_LABEL] = ("true", "false") if node_type == "head" else ("true",)
        user = {
            **(_get(group, "template", "metadata", "labels") or {}),
            **(group.get("labels") or {}),
        }
        kept = {k: (v,) for k, v in user.items() if not (k in _KUBERAY_OWNS and k in kuberay)}
        spec = _get(group, "template", "spec") or {}
        yield _PodTemplate(f"{where}.template.spec", spec, {**kuberay, **kept})


def _named(where: str, holder: Any, fields: Iterable[tuple[str, str, str]]) -> Iterator[_Named]:
    """(field path, kind, name) of each non-optional reference `holder` makes through `fields`."""
    if not isinstance(holder, Mapping):
        return
    for field, kind, key in fields:
        ref = holder.get(field)
        if isinstance(ref, Mapping) and ref.get(key) and not ref.get("optional"):
            yield _join(where, field, key), kind, ref[key]


def _pod_refs(spec: Mapping[str, Any]) -> Iterator[_Named]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(group) or []):
            for j, env in enumerate(container.get("env") or []):
                yield from _named(
                    f"{group}[{i}].env[{j}].valueFrom", env.get("valueFrom"), _KEY_REFS
                )
            for j, source in enumerate(container.get("envFrom") or []):
                yield from _named(f"{group}[{i}].envFrom[{j}]", source, _ENV_FROM)
    for i, volume in enumerate(spec.get("volumes") or []):
        yield from _named(f"volumes[{i}]", volume, _VOLUMES)
        for j, source in enumerate(_get(volume, "projected", "sources") or []):
            yield from _named(f"volumes[{i}].projected.sources[{j}]", source, _PROJECTED)
    if account := spec.get("serviceAccountName"):
        yield "serviceAccountName", "ServiceAccount", account
    for i, secret in enumerate(spec.get("imagePullSecrets") or []):
        yield f"imagePullSecrets[{i}].name", "Secret", secret.get("name", "")


def _refs(obj: Mapping[str, Any]) -> Iterator[_Named]:
    """(field path, kind, name) of every object `obj` needs in its own namespace."""
    for template in _templates(obj):
        for field, kind, name in _pod_refs(template.spec):
            yield _join(template.path, field), kind, name
    if (found := _ray_cluster(obj)) is None:
        return
    path, cluster = found
    ft = cluster.get("gcsFaultToleranceOptions") or {}
    for credential in ("redisPassword", "redisUsername"):
        where = f"{path}.gcsFaultToleranceOptions.{credential}.valueFrom"
        yield from _named(where, _get(ft, credential, "valueFrom"), _KEY_REFS)
    storage = (("storage", "PersistentVolumeClaim", "claimName"),)
    yield from _named(f"{path}.gcsFaultToleranceOptions", ft, storage)
    if _token_auth(cluster):
        yield from _named(path, cluster, (("authOptions", "Secret", "secretName"),))


def _kuberay_objects(obj: Mapping[str, Any]) -> Iterator[Ref]:
    if obj["kind"] != "RayCluster":
        return
    _, namespace, name = _ref(obj)
    for made in KUBERAY_CREATES:
        if made.when(obj.get("spec") or {}):
            yield made.kind, namespace, made.name.format(cluster=name)


def _matches(selector: Mapping[str, str], labels: Mapping[str, tuple[str, ...]]) -> bool:
    return all(any(fnmatchcase(v, p) for p in labels.get(k, ())) for k, v in selector.items())


def _peers(policy: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, namespace name) of each namespace a NetworkPolicy's peers name by label."""
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_get(policy, "spec", direction) or []):
            for j, peer in enumerate(rule.get(peers) or []):
                name = _get(peer, "namespaceSelector", "matchLabels", NAMESPACE_LABEL)
                if name:
                    yield f"spec.{direction}[{i}].{peers}[{j}].{_BY_NAME}", name


def reference_problems(
    objects: Iterable[Mapping[str, Any]], provided: Iterable[Ref] = ()
) -> list[str]:
    """Every reference among `objects` to something that will not exist, one line each.

    `provided` is what the user brings and declares, as (kind, namespace, name); it counts as
    existing. An empty list means every name resolves.
    """
    objects = list(objects)
    existing = {_ref(o) for o in objects} | {(k, ns or "", n) for k, ns, n in provided}
    existing |= {ref for o in objects for ref in _kuberay_objects(o)}
    namespaces = CLUSTER_NAMESPACES | {n for k, _, n in existing if k == "Namespace"}
    templates: dict[str, list[_PodTemplate]] = {}
    for obj in objects:
        templates.setdefault(_ref(obj)[1], []).extend(_templates(obj))
    problems: list[str] = []
    for obj in objects:
        problems += _namespace_problems(obj, namespaces)
        problems += _missing_references(obj, existing, namespaces)
        problems += _selector_problems(obj, templates)
        problems += _policy_problems(obj, namespaces)
    return problems


def _namespace_problems(obj: Mapping[str, Any], namespaces: Set[str]) -> Iterator[str]:
    namespace = _ref(obj)[1]
    if namespace and namespace not in namespaces:
        yield (
            f"{_who(obj)}: metadata.namespace names namespace {namespace}, which neither the stack "
            "nor GKE creates; create the Namespace in the stack, or declare it as a prerequisite"
        )


def _missing_references(
    obj: Mapping[str, Any], existing: Set[Ref], namespaces: Set[str]
) -> Iterator[str]:
    namespace = _ref(obj)[1]
    for field, kind, name in _refs(obj):
        if (kind, name) in IN_EVERY_NAMESPACE and namespace in namespaces:
            continue
        if (kind, namespace, name) not in existing:
            yield (
                f"{_who(obj)}: {field} names {kind} {namespace}/{name}, which the stack does not "
                "create; create it in the stack, or declare it as a prerequisite"
            )


def _selector_problems(
    obj: Mapping[str, Any], templates: Mapping[str, list[_PodTemplate]]
) -> Iterator[str]:
    selector = _get(obj, "spec", "selector") if obj["kind"] == "Service" else None
    namespace = _ref(obj)[1]
    if selector and not any(_matches(selector, t.labels) for t in templates.get(namespace, [])):
        shown = ", ".join(f"{k}={v}" for k, v in selector.items())
        yield (
            f"{_who(obj)}: spec.selector {{{shown}}} matches the pods of no workload in namespace "
            f"{namespace}, so the Service never gets endpoints; add the workload to the stack, or "
            "change the selector to the pods' labels"
        )


def _policy_problems(obj: Mapping[str, Any], namespaces: Set[str]) -> Iterator[str]:
    for field, name in _peers(obj) if obj["kind"] == "NetworkPolicy" else ():
        if name not in namespaces:
            yield (
                f"{_who(obj)}: {field} admits namespace {name}, which neither the stack nor GKE "
                "creates, so the rule admits nothing; name a namespace that exists, or create it "
                "in the stack or declare it as a prerequisite"
            )
