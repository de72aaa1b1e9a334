"""The operator on a real Kubernetes control plane (kube.py: etcd, kube-apiserver, controller
manager, scheduler, and the node agent running pods as local processes). `helm install` of
charts/fjord-operator runs the operator as a pod; a Cluster becomes three broker pods that
report Ready; Topics become topics that real clients use; changes, drift, deletion policies,
a rolling restart under an acks=all producer, CEL validation and printer columns; the pause
annotation, a namesake topic left alone until adopted, and the operator's traces reaching
an OTLP receiver.

The tests of this module run in order against one control plane and build on each other."""

import json
import time
from pathlib import Path

import pytest

from harness import kube
from harness.clients import create_topic, produce, read_partition
from harness.kube import condition
from harness.otlp import OtlpSink
from harness.workload import AckingProducer, check_acked

KUBE_NODES = 3
REPO = Path(__file__).resolve().parents[2]
KUBE_IMAGES = {"fjord/operator": kube.operator_bin()}
pytestmark = pytest.mark.fjord_only

NS = "streaming"
CLUSTER = """
apiVersion: fjord.dev/v1alpha1
kind: Cluster
metadata: {name: events}
spec:
  image: fjord/broker:dev
  replicas: 3
  storage: {size: 1Gi}
  advertise: PodIp
  config:
    default.replication.factor: "3"
    min.insync.replicas: "2"
    group.initial.rebalance.delay.ms: "0"
    replica.lag.time.max.ms: "5000"
"""


def topic_yaml(name, partitions=3, rf=3, config=None, policy="Delete", topic_name=None, adopt=False):
    spec = {
        "cluster": "events",
        "partitions": partitions,
        "replicationFactor": rf,
        "config": config or {},
        "deletionPolicy": policy,
        "adopt": adopt,
    }
    if topic_name:
        spec["topicName"] = topic_name
    return json.dumps({"apiVersion": "fjord.dev/v1alpha1", "kind": "Topic", "metadata": {"name": name}, "spec": spec})


def kafka_topic(bs, name):
    """(partitions, {config: value}) of a topic as the brokers see it, or None."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    a = AdminClient({"bootstrap.servers": bs})
    md = a.list_topics(timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    res = ConfigResource("TOPIC", name)
    cfg = a.describe_configs([res])[res].result(10)
    return len(t.partitions), {k: v.value for k, v in cfg.items()}


@pytest.fixture(scope="module")
def kc(kube_cluster):
    kube_cluster.namespace(NS)
    return kube_cluster


@pytest.fixture(scope="module")
def otlp():
    """The OTLP/HTTP receiver the operator exports its traces to (pods share the host's
    loopback under the node agent)."""
    sink = OtlpSink()
    yield sink
    sink.close()


def test_helm_install_runs_the_operator(kc, otlp):
    kc.helm_install_operator("--set", "operator.driftCheckInterval=2s", "--set", f"operator.otlpEndpoint={otlp.url}")


def test_cluster_becomes_ready(kc):
    kc.apply(CLUSTER, NS)
    t0 = time.monotonic()

    c = kc.wait_cluster_ready(NS)
    print(f"Cluster Ready {time.monotonic() - t0:.1f}s after apply; status {json.dumps(c['status'])}")
    st = c["status"]
    assert st.get("readyBrokers") == 3, st
    assert st.get("bootstrap"), st
    assert st.get("clusterId"), st
    assert st.get("observedGeneration") == c["metadata"]["generation"], st
    for kind in ("statefulset", "service", "configmap", "poddisruptionbudget"):
        items = kc.get(kind, namespace=NS)["items"]
        assert any(i["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == "events" for i in items), kind


def test_topic_applied_and_used(kc):
    kc.apply(topic_yaml("orders", partitions=3, config={"retention.ms": "3600000"}), NS)
    t0 = time.monotonic()
    kc.wait_for(
        lambda: (condition(kc.get("topic", "orders", NS), "Ready") or {}).get("status") == "True",
        60,
        "Topic orders Ready",
    )
    print(f"Topic Ready {time.monotonic() - t0:.2f}s after apply")
    bs = kc.bootstrap(NS)
    parts, cfg = kafka_topic(bs, "orders")
    assert parts == 3 and cfg["retention.ms"] == "3600000", (parts, cfg["retention.ms"])
    values = [f"order-{i}" for i in range(50)]
    delivered = produce(bs, "orders", values, partition=0)
    got = read_partition(bs, "orders", 0, delivered[0][1], delivered[-1][1] + 1)
    assert [v.decode() for _, v in got] == values
    st = kc.get("topic", "orders", NS)["status"]
    assert st.get("topicId") and st.get("partitions") == 3, st


def test_topic_changes_applied(kc):
    kc.apply(topic_yaml("orders", partitions=6, config={"retention.ms": "7200000"}), NS)
    bs = kc.bootstrap(NS)
    kc.wait_for(
        lambda: (
            kafka_topic(bs, "orders")
            and kafka_topic(bs, "orders")[0] == 6
            and kafka_topic(bs, "orders")[1]["retention.ms"] == "7200000"
        ),
        60,
        "6 partitions and retention.ms=7200000 on the brokers",
    )


def test_change_made_with_kafka_tool_is_reverted(kc, tools):
    bs = kc.bootstrap(NS)
    r = tools.run_class(
        "kafka.admin.ConfigCommand",
        "--bootstrap-server",
        bs,
        "--alter",
        "--entity-type",
        "topics",
        "--entity-name",
        "orders",
        "--add-config",
        "retention.ms=1000",
    )
    assert "Completed updating config" in r.stdout, r.describe()
    kc.wait_for(
        lambda: kafka_topic(bs, "orders")[1]["retention.ms"] == "7200000", 60, "the operator to revert retention.ms"
    )
    events = kc.get("events", namespace=NS)["items"]
    assert any(e.get("reason") == "DriftReverted" for e in events), [e.get("reason") for e in events]


def test_deletion_policies(kc):
    bs = kc.bootstrap(NS)
    kc.apply(topic_yaml("gone", partitions=1), NS)
    kc.apply(topic_yaml("kept", partitions=1, policy="Retain"), NS)
    for t in ("gone", "kept"):
        kc.wait_for(lambda t=t: kafka_topic(bs, t), 60, f"topic {t} on the brokers")
    kc.kubectl("delete", "topic", "gone", "kept", "-n", NS, "--wait=true", timeout=90)
    kc.wait_for(lambda: kafka_topic(bs, "gone") is None, 60, "topic gone deleted from the brokers")
    time.sleep(3)
    assert kafka_topic(bs, "kept") is not None, "a Retain topic was deleted from the brokers"


def test_invalid_resources_refused_with_cel_message(kc):
    p = kc.kubectl("apply", "-n", NS, "-f", "-", input=topic_yaml("orders", partitions=2), check=False)
    assert p.returncode != 0 and "partitions can only be increased" in p.stderr, p.stderr
    p = kc.kubectl(
        "apply", "-n", NS, "-f", "-", input=topic_yaml("bad", partitions=1, topic_name="no spaces"), check=False
    )
    assert p.returncode != 0 and "topicName may only contain" in p.stderr, p.stderr
    p = kc.kubectl("apply", "-n", NS, "-f", "-", input=topic_yaml("bad2", partitions=1, rf=40), check=False)
    assert p.returncode != 0 and "replicationFactor must be between 1 and 32" in p.stderr, p.stderr


def test_printer_columns(kc):
    out = kc.kubectl("get", "clusters,topics", "-n", NS).stdout
    print(out)
    for col in ("REPLICAS", "READY", "STATUS", "BOOTSTRAP", "CLUSTER", "TOPIC", "PARTITIONS", "RF"):
        assert col in out, f"column {col} missing:\n{out}"
    row = next(line for line in out.splitlines() if line.startswith("topic.fjord.dev/orders"))
    assert " 6 " in row and " True " in row, row


def _sum(samples, name):
    return sum(v for n, _, v in samples if n == name)


def test_operator_metrics_and_no_writes_when_nothing_changes(kc):
    listed = (REPO / "docs" / "metrics.md").read_text().split("<!-- operator-metrics:begin -->")[1]
    listed = listed.split("<!-- operator-metrics:end -->")[0]
    names = [line.split("`")[1] for line in listed.splitlines() if line.startswith("| `")]
    text = kc.operator_metrics(raw=True)
    samples = kc.operator_metrics()
    errors = _sum([x for x in samples if x[1].get("result") == "error"], "fjord_operator_reconciles_total")
    # The error series exist once an error happened (labels carry the reason).
    expected = [n for n in names if n != "fjord_operator_reconcile_errors_total" or errors > 0]
    missing = [n for n in expected if f"# TYPE {n.removesuffix('_total')} " not in text]
    assert not missing, f"listed in docs/metrics.md but not exported by the operator: {missing}"
    before = kc.operator_metrics()
    time.sleep(8)  # four drift checks of every Topic (2 s) and the Cluster's periodic requeue
    after = kc.operator_metrics()
    for name in ("fjord_operator_api_writes_total", "fjord_operator_kafka_admin_writes_total"):
        assert _sum(after, name) == _sum(before, name), f"{name} moved while nothing changed"
    assert _sum(after, "fjord_operator_reconciles_total") > _sum(before, "fjord_operator_reconciles_total")
    print(
        f"idle 8 s: reconciles {_sum(before, 'fjord_operator_reconciles_total'):.0f} -> "
        f"{_sum(after, 'fjord_operator_reconciles_total'):.0f}, API and admin writes unchanged"
    )


def test_config_change_rolls_brokers_without_a_failed_send(kc):
    bs = kc.bootstrap(NS)
    topic = "rolling"
    kc.apply(topic_yaml(topic, partitions=3), NS)
    kc.wait_for(lambda: kafka_topic(bs, topic), 60, f"topic {topic}")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kc.get("pods", namespace=NS)["items"]}
    prod = AckingProducer(bs, topic, 3, rate=200).start()
    try:
        prod.wait_acks(300, 60, what="before the roll")
        kc.kubectl(
            "patch",
            "cluster",
            "events",
            "-n",
            NS,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"config": {"log.retention.ms": "86400000"}}}),
        )

        def rolled():
            pods = {p["metadata"]["name"]: p for p in kc.get("pods", namespace=NS)["items"]}
            fresh = [n for n, p in pods.items() if n in before and p["metadata"]["uid"] != before[n]]
            c = kc.get("cluster", "events", NS)
            ready = (condition(c, "Ready") or {}).get("status") == "True"
            return len(fresh) == 3 and ready

        kc.wait_for(rolled, 600, "every broker restarted and the Cluster Ready again", interval=1)
        prod.wait_acks(300, 60, after=time.monotonic(), what="after the roll")
    finally:
        undelivered = prod.stop()
    summary = prod.summary()
    print(f"producer during the roll: {summary}")
    assert undelivered == 0 and not summary["failed"], summary
    check_acked(kc.bootstrap(NS), topic, 3, prod.acks_snapshot(), label="roll")


def progressing_reason(kc):
    return (condition(kc.get("cluster", "events", NS), "Progressing") or {}).get("reason")


def test_pause_annotation_holds_changes(kc):
    bs = kc.bootstrap(NS)
    assert kafka_topic(bs, "orders")[0] == 6
    kc.kubectl("annotate", "topic", "orders", "-n", NS, "fjord.dev/paused=true")
    kc.kubectl("annotate", "cluster", "events", "-n", NS, "fjord.dev/paused=true")
    kc.apply(topic_yaml("orders", partitions=8, config={"retention.ms": "7200000"}), NS)
    kc.wait_for(lambda: progressing_reason(kc) == "Paused", 30, "Cluster Progressing=Paused")
    time.sleep(6)  # three drift-check intervals
    assert kafka_topic(bs, "orders")[0] == 6, "a paused Topic's change reached the brokers"
    kc.kubectl("annotate", "topic", "orders", "-n", NS, "fjord.dev/paused-")
    kc.kubectl("annotate", "cluster", "events", "-n", NS, "fjord.dev/paused-")
    kc.wait_for(lambda: kafka_topic(bs, "orders")[0] == 8, 60, "8 partitions once the Topic is resumed")
    kc.wait_for(lambda: progressing_reason(kc) != "Paused", 60, "the Cluster resumed")


def test_namesake_topic_left_alone_until_adopted(kc):
    """A topic the operator did not create is neither altered nor deleted through a Topic
    naming it; with spec.adopt the operator takes it over."""
    bs = kc.bootstrap(NS)
    create_topic(bs, "legacy", partitions=2, replication_factor=3)

    def refused():
        cond = condition(kc.get("topic", "legacy", NS), "Ready")
        return cond and cond["reason"] == "TopicExistsNotManaged" and cond

    kc.apply(topic_yaml("legacy", partitions=4), NS)
    cond = kc.wait_for(refused, 60, "Topic legacy refused as not managed")
    assert cond["status"] == "False" and "spec.adopt" in cond["message"], cond
    time.sleep(3)
    assert kafka_topic(bs, "legacy")[0] == 2, "a topic the operator did not create was altered"
    kc.kubectl("delete", "topic", "legacy", "-n", NS, "--wait=true", timeout=90)
    time.sleep(3)
    assert kafka_topic(bs, "legacy") is not None, "a topic the operator did not create was deleted"

    kc.apply(topic_yaml("legacy", partitions=4, adopt=True), NS)
    kc.wait_for(lambda: kafka_topic(bs, "legacy")[0] == 4, 60, "the adopted topic at 4 partitions")
    assert kc.get("topic", "legacy", NS)["status"]["managed"] is True
    kc.kubectl("delete", "topic", "legacy", "-n", NS, "--wait=true", timeout=90)
    kc.wait_for(lambda: kafka_topic(bs, "legacy") is None, 60, "the adopted topic deleted with its Topic")


def test_operator_traces_reach_the_otlp_receiver(kc, otlp):
    """Both controllers' reconcile spans, with the object's name, under service.name
    fjord-operator."""

    def spans():
        bodies = otlp.traces()
        return (
            bodies
            and any(b"fjord-operator" in b and b"reconcile" in b and b"events" in b for b in bodies)
            and any(b"reconcile" in b and b"orders" in b for b in bodies)
        )

    kc.wait_for(spans, 60, "Cluster and Topic reconcile spans at the OTLP receiver", interval=1)
    print(f"{len(otlp.traces())} trace exports received")
