"""GkeCluster under mocks: hardening, the node account's roles, the system pool, the kubeconfig."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.cluster import NODE_ROLES, node_account_id, render_kubeconfig
from raygke.mocks import Inventory, Secret, run_with_mocks

COMPONENT = "raygke:cluster:GkeCluster"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
ACCOUNT = "gcp:serviceaccount/account:Account"
IAM = "gcp:projects/iAMMember:IAMMember"
EMAIL = "gke-nodes@mock-project.iam.gserviceaccount.com"
ARGS: dict[str, Any] = {
    "project": "my-proj",
    "location": "us-central1",
    "network": "projects/p/global/networks/vpc",
    "subnetwork": "projects/p/regions/us-central1/subnetworks/sub",
    "pods_range_name": "pods",
    "services_range_name": "services",
    "authorized_networks": [{"cidr": "198.51.100.0/24", "name": "vpn"}],
}


def _run(**extra: Any) -> tuple[Inventory, dict[str, Any]]:
    def program() -> dict[str, Any]:
        from components.cluster import GkeCluster

        cluster = GkeCluster("gke", {**ARGS, **extra})  # type: ignore[typeddict-item]
        return {
            "name": cluster.name,
            "location": cluster.location,
            "endpoint": cluster.endpoint,
            "node_service_account_email": cluster.node_service_account_email,
            "system_pool_name": cluster.system_pool_name,
            "kubeconfig": cluster.kubeconfig,
        }

    return run_with_mocks(program)


@pytest.fixture(scope="module")
def default_run() -> tuple[Inventory, dict[str, Any]]:
    return _run()


@pytest.mark.mocks
def test_private_nodes_behind_authorized_networks(default_run):
    inventory, _ = default_run
    cluster = inventory.one(CLUSTER).inputs
    assert cluster["privateClusterConfig"] == {
        "enablePrivateNodes": True,
        "enablePrivateEndpoint": False,
        "masterIpv4CidrBlock": "172.16.0.0/28",
    }
    assert cluster["masterAuthorizedNetworksConfig"] == {
        "cidrBlocks": [{"cidrBlock": "198.51.100.0/24", "displayName": "vpn"}]
    }
    assert "0.0.0.0/0" not in json.dumps(cluster)


@pytest.mark.mocks
def test_open_control_plane_only_when_asked():
    inventory, _ = _run(authorized_networks=[{"cidr": "0.0.0.0/0", "name": "anywhere"}])
    blocks = inventory.one(CLUSTER).inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]
    assert blocks == [{"cidrBlock": "0.0.0.0/0", "displayName": "anywhere"}]

    inventory, _ = _run(authorized_networks=[], master_cidr="172.16.1.0/28")
    cluster = inventory.one(CLUSTER).inputs
    assert cluster["masterAuthorizedNetworksConfig"].get("cidrBlocks", []) == []
    assert cluster["privateClusterConfig"]["masterIpv4CidrBlock"] == "172.16.1.0/28"


@pytest.mark.mocks
def test_cluster_hardening_and_features(default_run):
    inventory, _ = default_run
    c = inventory.one(CLUSTER).inputs
    assert c["project"] == "my-proj"
    assert c["location"] == "us-central1"
    assert c["removeDefaultNodePool"] is True
    assert c["initialNodeCount"] == 1
    assert c["networkingMode"] == "VPC_NATIVE"
    assert c["ipAllocationPolicy"] == {
        "clusterSecondaryRangeName": "pods",
        "servicesSecondaryRangeName": "services",
    }
    assert c["workloadIdentityConfig"] == {"workloadPool": "my-proj.svc.id.goog"}
    assert c["enableShieldedNodes"] is True
    assert c["enableLegacyAbac"] is False
    assert c["masterAuth"] == {"clientCertificateConfig": {"issueClientCertificate": False}}
    assert c["releaseChannel"] == {"channel": "REGULAR"}
    assert c["datapathProvider"] == "ADVANCED_DATAPATH"
    assert c["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
    assert c["addonsConfig"]["gcsFuseCsiDriverConfig"] == {"enabled": True}
    assert c["nodePoolDefaults"] == {"nodeConfigDefaults": {"gcfsConfig": {"enabled": True}}}
    assert c["databaseEncryption"] == {"state": "DECRYPTED"}
    assert c["deletionProtection"] is True
    assert c["enableMultiNetworking"] is False
    # Even the short-lived default pool must not run as the Compute Engine default account.
    assert c["nodeConfig"]["serviceAccount"] == EMAIL


@pytest.mark.mocks
def test_stack_choices_reach_the_cluster():
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    inventory, _ = _run(
        kms_key=key,
        project_number="210987654321",
        deletion_protection=False,
        release_channel="STABLE",
        multi_networking=True,
        location="us-central1-a",
    )
    c = inventory.one(CLUSTER).inputs
    assert c["databaseEncryption"] == {"state": "ENCRYPTED", "keyName": key}
    assert c["deletionProtection"] is False
    assert c["releaseChannel"] == {"channel": "STABLE"}
    assert c["enableMultiNetworking"] is True
    assert c["location"] == "us-central1-a"
    grant = inventory.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    agent = "service-210987654321@container-engine-robot.iam.gserviceaccount.com"
    assert (grant.inputs["cryptoKeyId"], grant.inputs["member"]) == (key, f"serviceAccount:{agent}")
    assert grant.urn in inventory.one(CLUSTER).dependencies


@pytest.mark.mocks
def test_a_secrets_key_without_the_project_number_fails_before_anything_registers():
    with pytest.raises(ValueError, match=r"kms_key needs args\.project_number"):
        _run(kms_key="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k")


@pytest.mark.mocks
def test_node_account_holds_exactly_the_least_privilege_roles(default_run):
    inventory, outputs = default_run
    account = inventory.one(ACCOUNT).inputs
    assert account["accountId"] == "gke-nodes"
    assert account["project"] == "my-proj"
    grants = inventory.of_type(IAM)
    assert sorted(g.inputs["role"] for g in grants) == sorted(NODE_ROLES)
    assert {g.inputs["member"] for g in grants} == {f"serviceAccount:{EMAIL}"}
    assert {g.inputs["project"] for g in grants} == {"my-proj"}
    assert not {"roles/editor", "roles/owner", "roles/container.admin"} & set(NODE_ROLES)
    assert outputs["node_service_account_email"] == EMAIL


@pytest.mark.mocks
def test_system_pool(default_run):
    inventory, _ = default_run
    pool = inventory.one(NODE_POOL).inputs
    assert pool["cluster"] == "gke-cluster"
    assert pool["location"] == "us-central1"
    assert pool["autoscaling"] == {"totalMinNodeCount": 1, "totalMaxNodeCount": 3}
    assert pool["management"] == {"autoUpgrade": True, "autoRepair": True}
    nc = pool["nodeConfig"]
    assert nc["machineType"] == "e2-standard-4"
    assert nc["imageType"] == "COS_CONTAINERD"
    assert nc["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableIntegrityMonitoring": True,
    }
    assert nc["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert nc["serviceAccount"] == EMAIL
    assert nc["labels"] == {"raygke.io/pool": "system"}
    assert "taints" not in nc

    inventory, _ = _run(
        system_pool={"machine_type": "e2-standard-8", "min_nodes": 2, "max_nodes": 5}
    )
    pool = inventory.one(NODE_POOL).inputs
    assert pool["nodeConfig"]["machineType"] == "e2-standard-8"
    assert pool["autoscaling"] == {"totalMinNodeCount": 2, "totalMaxNodeCount": 5}


@pytest.mark.mocks
def test_outputs_and_a_secret_kubeconfig_using_the_auth_plugin(default_run):
    _, outputs = default_run
    assert outputs["name"] == "gke-cluster"
    assert outputs["location"] == "us-central1"
    assert outputs["endpoint"] == "203.0.113.10"
    kubeconfig = outputs["kubeconfig"]
    assert isinstance(kubeconfig, Secret)
    config = json.loads(kubeconfig.value)
    assert config["clusters"][0]["cluster"]["server"] == "https://203.0.113.10"
    assert config["clusters"][0]["cluster"]["certificate-authority-data"]
    assert config["current-context"] == "gke-cluster"
    exec_ = config["users"][0]["user"]["exec"]
    assert exec_["command"] == "gke-gcloud-auth-plugin"
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert "token" not in json.dumps(config["users"])


@pytest.mark.mocks
def test_every_child_is_parented_and_named_from_the_component(default_run):
    inventory, _ = default_run
    component = inventory.one(COMPONENT, "gke")
    children = [r for r in inventory.resources if r.type != COMPONENT]
    assert len(children) == 1 + len(NODE_ROLES) + 2  # account, grants, cluster, system pool
    for child in children:
        assert child.parent == component.urn, child.name
        assert child.name.startswith("gke-"), child.name


@pytest.mark.pure
def test_kubeconfig_renders_one_context():
    config = json.loads(render_kubeconfig("c", "10.0.0.2", "Q0E="))
    assert [c["name"] for c in config["contexts"]] == ["c"]
    assert config["clusters"][0]["cluster"] == {
        "server": "https://10.0.0.2",
        "certificate-authority-data": "Q0E=",
    }


@pytest.mark.pure
@given(st.text(min_size=1, max_size=80))
def test_node_account_id_is_always_valid(name):
    account = node_account_id(name)
    assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account), account
