"""Rack awareness of a Cluster on a real control plane (kube.py).

The three Nodes are labelled topology.kubernetes.io/zone=zone-a|zone-b|zone-c, then a Cluster
of 3 brokers with rack.topologyKey topology.kubernetes.io/zone is applied. The operator gives
each broker FJORD_RACK from the pod label of that key (downward API) and passes
`--override broker.rack=$(FJORD_RACK)`; the pod label itself is copied from the Node at binding
by kube-apiserver's PodTopologyLabels admission plugin (on by default in the Kubernetes
version the suite builds).
So: each pod carries its Node's zone, a real client's DescribeCluster reports that zone as the
broker's rack, and a topic with replication factor 3 has its replicas in three racks.

The tests run in order against one control plane and build on each other."""

import json

import pytest

from harness import kube
from harness.kube import condition

KUBE_NODES = 3
KUBE_IMAGES = {"fjord/operator": kube.operator_bin()}
pytestmark = pytest.mark.fjord_only

NS = "racks"
ZONE = "topology.kubernetes.io/zone"
CLUSTER = {
    "apiVersion": "fjord.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "events"},
    "spec": {
        "image": "fjord/broker:dev",
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "advertise": "PodIp",
        "rack": {"topologyKey": ZONE},
    },
}


@pytest.fixture(scope="module")
def kc(kube_cluster):
    kube_cluster.namespace(NS)
    return kube_cluster


def node_zones(kc):
    return {n["metadata"]["name"]: n["metadata"]["labels"].get(ZONE) for n in kc.get("nodes")["items"]}


def test_nodes_labelled_and_cluster_ready(kc):
    nodes = sorted(node_zones(kc))
    assert len(nodes) == 3, nodes
    for n, zone in zip(nodes, ("zone-a", "zone-b", "zone-c"), strict=True):
        kc.kubectl("label", "node", n, f"{ZONE}={zone}", "--overwrite")
    assert sorted(node_zones(kc).values()) == ["zone-a", "zone-b", "zone-c"]
    kc.helm_install_operator()
    kc.apply(json.dumps(CLUSTER), NS)
    kc.wait_cluster_ready(NS, brokers=3, interval=1)


def test_each_pod_carries_the_zone_of_its_node(kc):
    zones = node_zones(kc)
    pods = kc.broker_pods(NS)
    assert len(pods) == 3, [p["metadata"]["name"] for p in pods]
    for p in pods:
        node = p["spec"].get("nodeName")
        assert node in zones, (p["metadata"]["name"], node)
        assert p["metadata"].get("labels", {}).get(ZONE) == zones[node], (
            p["metadata"]["name"],
            node,
            zones[node],
            p["metadata"].get("labels"),
        )
        env = {e["name"]: e for e in p["spec"]["containers"][0].get("env", [])}
        assert env["FJORD_RACK"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{ZONE}']", env
    # The default anti-affinity spreads the brokers over the three nodes, hence three racks.
    assert sorted(zones[p["spec"]["nodeName"]] for p in pods) == ["zone-a", "zone-b", "zone-c"], {
        p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods
    }


def expected_racks(kc):
    """{broker id: zone of its pod's node}; broker id = StatefulSet ordinal."""
    zones = node_zones(kc)
    return {int(p["metadata"]["name"].rsplit("-", 1)[1]): zones[p["spec"]["nodeName"]] for p in kc.broker_pods(NS)}


def test_brokers_report_their_rack_to_a_client(kc):
    from confluent_kafka.admin import AdminClient

    want = expected_racks(kc)
    admin = AdminClient({"bootstrap.servers": kc.bootstrap(NS)})  # held: the future fails if the client goes
    res = admin.describe_cluster(request_timeout=15).result(timeout=20)
    got = {n.id: n.rack for n in res.nodes}
    print(f"DescribeCluster racks: {got}; node zones: {want}")
    assert got == want, (got, want)


def test_replicas_of_an_rf3_topic_land_in_three_racks(kc):
    from confluent_kafka.admin import AdminClient

    kc.apply(
        json.dumps(
            {
                "apiVersion": "fjord.dev/v1alpha1",
                "kind": "Topic",
                "metadata": {"name": "spread"},
                "spec": {"cluster": "events", "partitions": 6, "replicationFactor": 3, "deletionPolicy": "Delete"},
            }
        ),
        NS,
    )
    kc.wait_for(
        lambda: (condition(kc.get("topic", "spread", NS), "Ready") or {}).get("status") == "True",
        60,
        "Topic spread Ready",
    )
    racks = expected_racks(kc)
    md = AdminClient({"bootstrap.servers": kc.bootstrap(NS)}).list_topics("spread", timeout=10)
    parts = md.topics["spread"].partitions
    assert len(parts) == 6, parts
    for p in parts.values():
        assert sorted(racks[r] for r in p.replicas) == ["zone-a", "zone-b", "zone-c"], (p.id, p.replicas, racks)
    # Leaders spread over the racks as well.
    assert {racks[p.leader] for p in parts.values()} == {"zone-a", "zone-b", "zone-c"}, {
        p.id: p.leader for p in parts.values()
    }
