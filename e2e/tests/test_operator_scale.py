"""Scaling a Cluster with the operator on a real control plane (kube.py), and the Topic
status's time lag.

A Cluster of one broker (one metadata-quorum voter) gets a Topic and a consumer group whose
committed offsets are behind: the Topic status lists the group with its record lag and a
lagSeconds > 0, read from the brokers' fjord_consumer_group_lag_seconds. The group is made
while there is one broker so that __consumer_offsets lives on broker 0 only. Then the Cluster
scales to 3: three pods Ready, a real client's Metadata lists 3 brokers, status readyBrokers 3
and Ready. A Topic with replication factor 3 puts replicas on brokers 1 and 2, so scaling back
to 1 is refused: condition Degraded reason ScaleDownBlocked and an Event of that reason, both
naming the brokers and their partitions, and the StatefulSet keeps 3 replicas. Deleting that
Topic (deletionPolicy Delete) empties brokers 1 and 2, and the scale-down proceeds to one
replica and Ready.

The tests run in order against one control plane and build on each other."""

import json
import time

import pytest

from harness import kube
from harness.clients import produce
from harness.kube import condition

KUBE_NODES = 3
KUBE_IMAGES = {"fjord/operator": kube.operator_bin()}
pytestmark = pytest.mark.fjord_only

NS = "scaling"
CLUSTER = {
    "apiVersion": "fjord.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "events"},
    "spec": {
        "image": "fjord/broker:dev",
        "replicas": 1,
        "storage": {"size": "1Gi"},
        "advertise": "PodIp",
        "config": {"group.initial.rebalance.delay.ms": "0"},
    },
}


def topic(name, partitions, rf):
    return json.dumps(
        {
            "apiVersion": "fjord.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name},
            "spec": {
                "cluster": "events",
                "partitions": partitions,
                "replicationFactor": rf,
                "deletionPolicy": "Delete",
            },
        }
    )


def scale(kc, replicas):
    kc.kubectl(
        "patch", "cluster", "events", "-n", NS, "--type=merge", "-p", json.dumps({"spec": {"replicas": replicas}})
    )


def sts_replicas(kc):
    return kc.get("statefulset", "events", NS)["spec"]["replicas"]


def topic_ready(kc, name):
    return (condition(kc.get("topic", name, NS), "Ready") or {}).get("status") == "True"


@pytest.fixture(scope="module")
def kc(kube_cluster):
    kube_cluster.namespace(NS)
    return kube_cluster


def test_operator_and_one_broker(kc):
    kc.helm_install_operator("--set", "operator.driftCheckInterval=2s")
    kc.apply(json.dumps(CLUSTER), NS)
    c = kc.wait_cluster_ready(NS, brokers=1, observed=True)
    assert c["status"].get("voters") == [0], c["status"]


def test_topic_status_lists_a_lagging_group_with_lag_seconds(kc):
    from confluent_kafka import Consumer, TopicPartition

    kc.apply(topic("lagging", 1, 1), NS)
    kc.wait_for(lambda: topic_ready(kc, "lagging"), 60, "Topic lagging Ready")
    bs = kc.bootstrap(NS, ready_only=True)
    produce(bs, "lagging", [f"v{i}" for i in range(20)], partition=0)
    c = Consumer({"bootstrap.servers": bs, "group.id": "slow-readers", "enable.auto.commit": False})
    try:
        res = c.commit(offsets=[TopicPartition("lagging", 0, 5)], asynchronous=False)
        assert all(tp.error is None for tp in res), res
    finally:
        c.close()

    def lagging():
        groups = kc.get("topic", "lagging", NS)["status"].get("groups", [])
        g = next((g for g in groups if g["group"] == "slow-readers"), None)
        return g if g and g["lag"] == 15 and g["lagSeconds"] > 0 else None

    g = kc.wait_for(lagging, 60, "Topic status: group slow-readers with lag 15 and lagSeconds > 0", interval=1)
    print(f"Topic lagging status group: {g}")
    # The brokers' own figure, which the operator copies (rounded to 0.1 s).
    from harness.clients import http_get, parse_prometheus

    ip = bs.split(",")[0].rsplit(":", 1)[0]
    series = [
        v
        for n, labels, v in parse_prometheus(http_get(f"http://{ip}:9644/metrics")[1])
        if n == "fjord_consumer_group_lag_seconds" and labels.get("group") == "slow-readers"
    ]
    assert series and max(series) >= g["lagSeconds"] - 0.1, (series, g)


def test_scale_up_to_three(kc):
    scale(kc, 3)
    t0 = time.monotonic()
    c = kc.wait_cluster_ready(NS, brokers=3, observed=True, interval=1)
    print(f"scaled 1 -> 3 in {time.monotonic() - t0:.1f}s; status {json.dumps(c['status'])}")
    for i in range(3):
        kc.wait_pod_ready(NS, f"events-{i}")
    assert sts_replicas(kc) == 3
    assert c["status"].get("voters") == [0], "the voter set is fixed at creation"
    from confluent_kafka.admin import AdminClient

    bs = kc.bootstrap(NS, ready_only=True)

    def three_brokers():
        md = AdminClient({"bootstrap.servers": bs}).list_topics(timeout=10)
        return sorted(md.brokers) if len(md.brokers) == 3 else None

    assert kc.wait_for(three_brokers, 60, "Metadata listing 3 brokers") == [0, 1, 2]


def test_scale_down_refused_while_removed_brokers_hold_partitions(kc):
    from confluent_kafka.admin import AdminClient

    kc.apply(topic("spread", 3, 3), NS)
    kc.wait_for(lambda: topic_ready(kc, "spread"), 60, "Topic spread Ready")
    md = AdminClient({"bootstrap.servers": kc.bootstrap(NS, ready_only=True)}).list_topics(timeout=10)
    assert all(sorted(p.replicas) == [0, 1, 2] for p in md.topics["spread"].partitions.values())
    scale(kc, 1)

    def blocked():
        d = condition(kc.get("cluster", "events", NS), "Degraded") or {}
        return d if d.get("reason") == "ScaleDownBlocked" else None

    d = kc.wait_for(blocked, 60, "Degraded reason ScaleDownBlocked", interval=1)
    print(f"Degraded: {d['message']}")
    assert d["status"] == "True"
    assert "broker 1 hosts" in d["message"] and "broker 2 hosts" in d["message"], d["message"]
    assert "partitions" in d["message"], d["message"]
    events = [e for e in kc.get("events", namespace=NS)["items"] if e.get("reason") == "ScaleDownBlocked"]
    assert events, "no ScaleDownBlocked Event"
    note = events[-1].get("message") or events[-1].get("note") or ""
    assert "broker 1 hosts" in note and "broker 2 hosts" in note, note
    assert events[-1].get("type") == "Warning", events[-1]
    # It stays refused: nothing is removed while the brokers hold partitions.
    time.sleep(5)
    assert sts_replicas(kc) == 3
    pods = kc.broker_pods(NS)
    assert len(pods) == 3 and not any(p["metadata"].get("deletionTimestamp") for p in pods), [
        p["metadata"]["name"] for p in pods
    ]
    c = kc.get("cluster", "events", NS)
    assert (condition(c, "Ready") or {}).get("status") == "False", c["status"]
    # One Event per refusal, not one per reconcile.
    again = [e for e in kc.get("events", namespace=NS)["items"] if e.get("reason") == "ScaleDownBlocked"]
    assert sum(e.get("count") or 1 for e in again) <= 2, again


def test_scale_down_proceeds_once_the_partitions_are_gone(kc):
    kc.kubectl("delete", "topic", "spread", "-n", NS, "--wait=true", timeout=90)
    t0 = time.monotonic()
    c = kc.wait_for(
        lambda: sts_replicas(kc) == 1 and kc.cluster_ready(NS, brokers=1, observed=True),
        300,
        "scale-down to 1 broker and Ready",
        interval=1,
    )
    print(f"scaled 3 -> 1 in {time.monotonic() - t0:.1f}s after the Topic went; status {json.dumps(c['status'])}")
    assert (condition(c, "Degraded") or {}).get("reason") != "ScaleDownBlocked", c["status"]
    kc.wait_for(
        lambda: (
            not any(p["metadata"]["name"] in ("events-1", "events-2") for p in kc.get("pods", namespace=NS)["items"])
        ),
        120,
        "pods events-1 and -2 gone",
    )
    # The group and its topic on broker 0 survived.
    kc.wait_for(lambda: topic_ready(kc, "lagging"), 60, "Topic lagging still Ready")
