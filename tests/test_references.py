"""infra/references.py: what rendered objects name, on small manifests and on every shipped stack."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from stackfiles import NS, STACKS, mutated

from infra.references import CLUSTER_NAMESPACES, KUBERAY_CREATES, reference_problems
from infra.rendered import render_stack
from infra.stack_file import load_stack_config, parse_stack_config

pytestmark = pytest.mark.pure

NSNAME = "app"
FIX = "create it in the stack, or declare it as a prerequisite"


def namespace(name: str = NSNAME) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def obj(kind: str, name: str, ns: str = NSNAME, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, **fields}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox:1.37", **fields}


def deployment(pod: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": pod or {}}
    return obj("Deployment", kw.pop("name", "web"), spec={"template": template}, **kw)


def env_from_secret(name: str, **ref: Any) -> dict[str, Any]:
    secret_ref = {"name": name, "key": "k", **ref}
    return {
        "containers": [container(env=[{"name": "X", "valueFrom": {"secretKeyRef": secret_ref}}])]
    }


def rayservice(name: str = "serving", kind: str = "RayService", **cluster: Any) -> dict[str, Any]:
    head = cluster.pop("head", {"containers": [container()]})
    worker = cluster.pop("worker", {"containers": [container()]})
    spec = {
        "headGroupSpec": {"template": {"metadata": {"labels": {"app": name}}, "spec": head}},
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "template": {"metadata": {"labels": {"app": name}}, "spec": worker},
            }
        ],
        **cluster,
    }
    return obj(kind, name, spec={"rayClusterConfig": spec} if kind == "RayService" else spec)


def service(selector: dict[str, str] | None, ns: str = NSNAME) -> dict[str, Any]:
    return obj("Service", "svc", ns, spec={"selector": selector} if selector is not None else {})


def policy(ns_name: str, direction: str = "ingress") -> dict[str, Any]:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns_name}}}
    rule = {"from" if direction == "ingress" else "to": [peer]}
    return obj("NetworkPolicy", "pol", spec={"podSelector": {}, direction: [rule]})


def problems(
    *objects: dict[str, Any], provided: tuple[tuple[str, str, str], ...] = ()
) -> list[str]:
    return reference_problems([namespace(), *objects], provided)


# ---------------------------------------------------------------------- 1. what pod templates name


def test_a_missing_secret_is_one_line_naming_referrer_field_target_and_fix() -> None:
    [line] = problems(deployment(env_from_secret("db")))
    assert line == (
        "Deployment app/web: spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name "
        f"names Secret app/db, which the stack does not create; {FIX}"
    )


def test_a_secret_in_the_stack_or_provided_resolves_but_not_one_in_another_namespace() -> None:
    web = deployment(env_from_secret("db"))
    assert problems(web, obj("Secret", "db")) == []
    assert problems(web, provided=(("Secret", NSNAME, "db"),)) == []
    assert len(problems(web, namespace("other"), obj("Secret", "db", "other"))) == 1
    assert len(problems(web, provided=(("Secret", "other", "db"),))) == 1


def test_optional_references_are_skipped() -> None:
    optional_env = env_from_secret("db", optional=True)
    optional_volume = {
        "containers": [container()],
        "volumes": [{"name": "v", "configMap": {"name": "cfg", "optional": True}}],
    }
    assert problems(deployment(optional_env), deployment(optional_volume, name="b")) == []


# Each way a pod spec names an object: (pod spec, field path under the pod spec, kind, name).
POD_REFS = [
    pytest.param(
        {
            "initContainers": [
                container(
                    env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
                )
            ],
            "containers": [container()],
        },
        "initContainers[0].env[0].valueFrom.configMapKeyRef.name",
        "ConfigMap",
        "c",
        id="configMapKeyRef-init",
    ),
    pytest.param(
        {"containers": [container(envFrom=[{"secretRef": {"name": "s"}}])]},
        "containers[0].envFrom[0].secretRef.name",
        "Secret",
        "s",
        id="envFrom-secret",
    ),
    pytest.param(
        {"containers": [container(envFrom=[{"configMapRef": {"name": "c"}}])]},
        "containers[0].envFrom[0].configMapRef.name",
        "ConfigMap",
        "c",
        id="envFrom-configmap",
    ),
    pytest.param(
        {"containers": [container()], "volumes": [{"name": "v", "secret": {"secretName": "s"}}]},
        "volumes[0].secret.secretName",
        "Secret",
        "s",
        id="volume-secret",
    ),
    pytest.param(
        {"containers": [container()], "volumes": [{"name": "v", "configMap": {"name": "c"}}]},
        "volumes[0].configMap.name",
        "ConfigMap",
        "c",
        id="volume-configmap",
    ),
    pytest.param(
        {
            "containers": [container()],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}],
        },
        "volumes[0].persistentVolumeClaim.claimName",
        "PersistentVolumeClaim",
        "data",
        id="volume-pvc",
    ),
    pytest.param(
        {
            "containers": [container()],
            "volumes": [
                {
                    "name": "v",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "t"}},
                            {"secret": {"name": "s"}},
                        ]
                    },
                }
            ],
        },
        "volumes[0].projected.sources[1].secret.name",
        "Secret",
        "s",
        id="projected-secret",
    ),
    pytest.param(
        {"containers": [container()], "serviceAccountName": "runner"},
        "serviceAccountName",
        "ServiceAccount",
        "runner",
        id="service-account",
    ),
    pytest.param(
        {"containers": [container()], "imagePullSecrets": [{"name": "registry"}]},
        "imagePullSecrets[0].name",
        "Secret",
        "registry",
        id="image-pull-secret",
    ),
]


@pytest.mark.parametrize(("pod", "field", "kind", "name"), POD_REFS)
def test_each_way_a_pod_names_an_object(
    pod: dict[str, Any], field: str, kind: str, name: str
) -> None:
    [line] = problems(deployment(pod))
    assert f": spec.template.spec.{field} names {kind} app/{name}," in line
    assert problems(deployment(pod), obj(kind, name)) == []


@pytest.mark.parametrize(
    ("kind", "spec", "path"),
    [
        ("Pod", None, "spec"),
        ("StatefulSet", "template", "spec.template.spec"),
        ("DaemonSet", "template", "spec.template.spec"),
        ("Job", "template", "spec.template.spec"),
        ("CronJob", "cron", "spec.jobTemplate.spec.template.spec"),
    ],
)
def test_every_workload_kinds_pod_template_is_read(kind: str, spec: str | None, path: str) -> None:
    pod = env_from_secret("db")
    body = {"template": {"spec": pod}}
    fields = {
        None: {"spec": pod},
        "template": {"spec": body},
        "cron": {"spec": {"jobTemplate": {"spec": body}}},
    }[spec]
    [line] = problems(obj(kind, "w", **fields))
    assert line.startswith(
        f"{kind} app/w: {path}.containers[0].env[0].valueFrom.secretKeyRef.name "
    )


def test_the_default_service_account_and_root_ca_exist_in_every_namespace_the_stack_has() -> None:
    pod = {
        "serviceAccountName": "default",
        "containers": [container()],
        "volumes": [{"name": "ca", "configMap": {"name": "kube-root-ca.crt"}}],
    }
    assert problems(deployment(pod)) == []


def test_rayservice_head_and_worker_templates_and_redis_password_are_read() -> None:
    ray = rayservice(
        head={"containers": [container()], "serviceAccountName": "head-sa"},
        worker=env_from_secret("hf-token"),
        gcsFaultToleranceOptions={
            "redisAddress": "10.0.0.3:6379",
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
        },
    )
    found = problems(ray)
    base = "RayService app/serving: spec.rayClusterConfig."
    assert [line.split(" names ")[0] for line in found] == [
        f"{base}headGroupSpec.template.spec.serviceAccountName",
        f"{base}workerGroupSpecs[0].template.spec.containers[0].env[0].valueFrom.secretKeyRef.name",
        f"{base}gcsFaultToleranceOptions.redisPassword.valueFrom.secretKeyRef.name",
    ]
    prerequisites = (
        ("ServiceAccount", NSNAME, "head-sa"),
        ("Secret", NSNAME, "hf-token"),
        ("Secret", NSNAME, "redis"),
    )
    assert problems(ray, provided=prerequisites) == []


def test_an_auth_secret_or_gcs_claim_the_user_names_must_exist() -> None:
    ray = rayservice(
        authOptions={"mode": "token", "secretName": "ray-token"},
        gcsFaultToleranceOptions={"backend": "rocksdb", "storage": {"claimName": "gcs"}},
    )
    assert [line.split(" names ")[1].split(",")[0] for line in problems(ray)] == [
        "PersistentVolumeClaim app/gcs",
        "Secret app/ray-token",
    ]
    disabled = rayservice(authOptions={"mode": "disabled", "secretName": "ray-token"})
    assert problems(disabled) == []


def test_what_kuberay_creates_for_a_rayservice_is_not_asked_for() -> None:
    # Token auth without secretName (KubeRay's own Secret) and in-tree autoscaling without a head
    # serviceAccountName (KubeRay's own ServiceAccount, Role and RoleBinding) name nothing.
    ray = rayservice(authOptions={"mode": "token"}, enableInTreeAutoscaling=True)
    assert problems(ray) == []


def test_a_head_service_account_set_with_autoscaling_is_the_users_to_create() -> None:
    head = {"containers": [container()], "serviceAccountName": "autoscaler"}
    ray = rayservice(head=head, enableInTreeAutoscaling=True)
    assert len(problems(ray)) == 1
    assert problems(ray, obj("ServiceAccount", "autoscaler")) == []


# How a worker's pod spec names each kind KubeRay makes that a pod can name (Roles it cannot).
NAMING = {
    "Secret": lambda name: {"volumes": [{"name": "v", "secret": {"secretName": name}}]},
    "ServiceAccount": lambda name: {"serviceAccountName": name},
    "PersistentVolumeClaim": lambda name: {
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": name}}]
    },
}


@pytest.mark.parametrize(
    "made", [m for m in KUBERAY_CREATES if m.kind in NAMING], ids=lambda m: m.kind
)
def test_a_rayclusters_own_objects_resolve_only_when_kuberay_makes_them(made: Any) -> None:
    # A RayCluster's name is fixed, so its templates can name what KubeRay makes for it.
    worker = {"containers": [container()], **NAMING[made.kind](made.name.format(cluster="rc"))}
    on = {
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": True,
        "gcsFaultToleranceOptions": {"backend": "rocksdb", "storage": {}},
    }
    assert problems(rayservice("rc", kind="RayCluster", worker=worker, **on)) == []
    assert len(problems(rayservice("rc", kind="RayCluster", worker=worker))) == 1


# -------------------------------------------------------------------------------- 2. namespaces


def test_an_object_in_a_namespace_nobody_creates_is_reported() -> None:
    cm = obj("ConfigMap", "c", "team")
    [line] = problems(cm)
    assert line == (
        "ConfigMap team/c: metadata.namespace names namespace team, which neither the stack nor "
        "GKE creates; create the Namespace in the stack, or declare it as a prerequisite"
    )
    assert problems(cm, namespace("team")) == []
    assert problems(cm, provided=(("Namespace", "", "team"),)) == []


@pytest.mark.parametrize("ns", sorted(CLUSTER_NAMESPACES))
def test_kubernetes_and_gke_namespaces_exist(ns: str) -> None:
    assert problems(obj("ConfigMap", "c", ns)) == []


# ---------------------------------------------------------------------- 3. what Services select


def test_a_selector_matching_no_pod_template_is_reported() -> None:
    [line] = problems(deployment(), service({"app": "api"}))
    assert line == (
        "Service app/svc: spec.selector {app=api} matches the pods of no workload in namespace app, "
        "so the Service never gets endpoints; add the workload to the stack, or change the selector "
        "to the pods' labels"
    )
    assert problems(deployment(), service({"app": "web"})) == []
    assert problems(deployment(), service(None)) == []  # no selector: endpoints are managed by hand


def test_a_selector_only_matches_workloads_in_its_own_namespace() -> None:
    other = deployment(ns="other")
    assert len(problems(namespace("other"), other, service({"app": "web"}))) == 1


@pytest.mark.parametrize(
    "selector",
    [
        {"app": "serving", "ray.io/serve": "true"},  # serving pods of every cluster of it
        # KubeRay's serve Service (common/service.go BuildServeService), which our tier resolves
        {"ray.io/cluster": "serving-x7k2p", "ray.io/serve": "true"},
        {"ray.io/node-type": "worker", "ray.io/group": "gpu"},
        {"ray.io/node-type": "head", "ray.io/group": "headgroup", "ray.io/serve": "false"},
        {"ray.io/cluster": "serving-x7k2p", "ray.io/is-ray-node": "yes"},
        {"ray.io/identifier": "serving-x7k2p-worker"},
        {"app.kubernetes.io/created-by": "kuberay-operator"},
    ],
)
def test_selectors_match_the_labels_kuberay_puts_on_rayservice_pods(
    selector: dict[str, str],
) -> None:
    assert problems(rayservice(), service(selector)) == []


@pytest.mark.parametrize(
    "selector",
    [
        {"ray.io/node-type": "worker", "ray.io/group": "cpu"},  # no such group
        {"ray.io/node-type": "worker", "ray.io/serve": "false"},  # workers are always true
        {"ray.io/cluster": "other-x7k2p"},  # another RayService's cluster
        {"app": "serving", "tier": "gold"},  # a label no template has
    ],
)
def test_selectors_for_labels_no_ray_pod_has_are_reported(selector: dict[str, str]) -> None:
    assert len(problems(rayservice(), service(selector))) == 1


def test_kuberay_overrides_a_templates_own_group_label_and_only_serves_for_a_rayservice() -> None:
    ray = rayservice()
    ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["metadata"]["labels"] = {
        "ray.io/group": "mine"
    }
    assert len(problems(ray, service({"ray.io/group": "mine"}))) == 1
    cluster = rayservice("rc", kind="RayCluster")
    assert len(problems(cluster, service({"ray.io/serve": "true"}))) == 1
    assert problems(cluster, service({"ray.io/cluster": "rc", "ray.io/group": "gpu"})) == []


# ----------------------------------------------------------- 4. namespaces NetworkPolicies admit


def test_a_policy_admitting_gmp_system_admits_nothing_on_gke() -> None:
    [line] = problems(policy("gmp-system"))
    assert line == (
        'NetworkPolicy app/pol: spec.ingress[0].from[0].namespaceSelector.matchLabels["kubernetes.io'
        '/metadata.name"] admits namespace gmp-system, which neither the stack nor GKE creates, so '
        "the rule admits nothing; name a namespace that exists, or create it in the stack or declare "
        "it as a prerequisite"
    )
    assert problems(policy("gke-gmp-system")) == []


def test_a_policy_may_admit_namespaces_the_stack_creates_or_the_user_declares() -> None:
    assert len(problems(policy("kuberay-system"))) == 1
    assert problems(policy("kuberay-system"), namespace("kuberay-system")) == []
    assert problems(policy("monitoring"), provided=(("Namespace", "", "monitoring"),)) == []
    [line] = problems(policy("elsewhere", direction="egress"))
    assert ": spec.egress[0].to[0].namespaceSelector" in line


# ---------------------------------------------------------------------------- the shipped stacks

TLS_SECRET = ("Secret", "ray-serve", "serving-tls")


def _missing(line: str) -> str:
    return line.split(" names ")[1].split(",")[0]


@pytest.mark.config
@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_names_only_what_exists_or_what_the_user_brings(stack: str) -> None:
    objects = render_stack(load_stack_config(stack)).objects()
    # prod terminates TLS at the tier with a Secret the user brings; the rest the stack creates.
    brought = (TLS_SECRET,) if stack == "prod" else ()
    assert reference_problems(objects, brought) == []
    assert [_missing(p) for p in reference_problems(objects)] == [
        f"{kind} {ns}/{name}" for kind, ns, name in brought
    ]


@pytest.mark.config
def test_prod_with_a_redis_the_user_brings_lists_its_password_secret() -> None:
    def bring_redis(config: dict[str, Any]) -> None:
        config[f"{NS}:rayService"]["faultTolerance"] = {
            "enabled": True,
            "redisAddress": "10.50.16.3:6379",
            "redisPassword": {"name": "ray-redis", "key": "password"},
        }

    objects = render_stack(parse_stack_config("prod", mutated("prod", bring_redis))).objects()
    assert sorted(_missing(p) for p in reference_problems(objects)) == [
        "Secret ray-serve/ray-redis",
        "Secret ray-serve/serving-tls",
    ]
    assert reference_problems(objects, (TLS_SECRET, ("Secret", "ray-serve", "ray-redis"))) == []


@pytest.mark.config
@pytest.mark.parametrize("stack", STACKS)
def test_the_stacks_policies_admit_gkes_managed_prometheus(stack: str) -> None:
    objects = render_stack(load_stack_config(stack)).objects()
    admitted = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
        for rule in o["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    }
    assert "gke-gmp-system" in admitted
    assert "gmp-system" not in admitted


def test_the_check_loads_no_pulumi() -> None:
    probe = "import sys, infra.references; print(sorted(m for m in sys.modules if 'pulumi' in m))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
