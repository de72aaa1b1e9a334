"""The EXTERNAL listener of a Cluster by NodePort and by LoadBalancer, on the e2e control
plane (kube.py).

The operator makes a NodePort Service per broker (`<cluster>-<ordinal>-external`, selecting
the pod by `statefulset.kubernetes.io/pod-name`) and `<cluster>-external-bootstrap`, writes
each broker's node port into the ConfigMap's `external.properties`, and every broker
advertises `<its node's address>:<its node port>` on EXTERNAL; status.externalBootstrap
lists those addresses. There is no kube-proxy here, so nothing forwards node ports on its
own: the test checks what Kafka clients are told, then stands in for kube-proxy with a TCP
forwarder per node port (node address:node port -> pod IP:external port) and produces and
consumes through status.externalBootstrap with a real client. A scale-up adds a Service and
a line of external.properties without restarting the running brokers.

LoadBalancer: nothing here implements LoadBalancer Services (no cloud controller, no
MetalLB), so the test plays that part as one would: it writes an address into each
Service's status.loadBalancer.ingress and forwards that address to the pod. Before it does,
no broker may start (it would advertise an address it does not have) and the Cluster says
why; each broker then advertises its own Service's address, and a client bootstrapped from
status.externalBootstrap (the bootstrap Service's address) produces and consumes.

The tests run in order against one control plane and build on each other."""

import json
import socket
import threading
import time

import pytest

from harness import kube
from harness.clients import create_topic, produce, read_partition, unique
from harness.kube import condition

KUBE_NODES = 2
KUBE_IMAGES = {"fjord/operator": kube.operator_bin()}
pytestmark = pytest.mark.fjord_only

NS = "edge-ns"
EXTERNAL_PORT = 9094


def cluster_yaml(replicas, name="edge", external=f"{{type: NodePort, port: {EXTERNAL_PORT}}}"):
    return f"""
apiVersion: fjord.dev/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  image: fjord/broker:dev
  replicas: {replicas}
  storage: {{size: 1Gi}}
  advertise: PodIp
  listeners:
    external: {external}
  config:
    group.initial.rebalance.delay.ms: "0"
"""


class Forwarder:
    """A TCP forwarder listen_addr -> target_addr: what kube-proxy does for a node port."""

    def __init__(self, listen, target):
        self.target = target
        self.sock = socket.create_server(listen, reuse_port=False)
        self.sock.settimeout(0.5)
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def kc(kube_cluster):
    kube_cluster.namespace(NS)
    kube_cluster.helm_install_operator()
    return kube_cluster


def brokers(kc, cluster="edge"):
    """{ordinal: pod} of a Cluster's brokers."""
    return {int(p["metadata"]["name"].rsplit("-", 1)[1]): p for p in kc.broker_pods(NS, cluster)}


def node_addresses(kc):
    """{node name: InternalIP}."""
    return {
        n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        for n in kc.get("nodes")["items"]
    }


def ready_with_external(kc, replicas):
    def ok():
        c = kc.cluster_ready(NS, "edge", brokers=replicas)
        ext = ((c or {}).get("status") or {}).get("externalBootstrap") or ""
        return c if c and len(ext.split(",")) == replicas else None

    return kc.wait_for(ok, 300, f"Cluster edge Ready with {replicas} external addresses")


def expected_addresses(kc, replicas):
    """{ordinal: (node address, node port)} from the API: the pod's node and its Service."""
    pods, nodes = brokers(kc), node_addresses(kc)
    out = {}
    for i in range(replicas):
        svc = kc.get("service", f"edge-{i}-external", NS)
        spec = svc["spec"]
        assert spec["type"] == "NodePort", spec
        assert spec["selector"]["statefulset.kubernetes.io/pod-name"] == f"edge-{i}", spec["selector"]
        assert svc["metadata"]["ownerReferences"][0]["kind"] == "Cluster", svc["metadata"]
        (port,) = spec["ports"]
        assert port["port"] == EXTERNAL_PORT and port["targetPort"] == "external", port
        assert 30000 <= port["nodePort"] <= 32767, port
        pod = pods[i]
        host = nodes[pod["spec"]["nodeName"]]
        assert pod["status"]["hostIP"] == host, (pod["status"], host)
        out[i] = (host, port["nodePort"])
    ports = [p for _, p in out.values()]
    assert len(set(ports)) == len(ports), out
    return out


def advertised(bootstrap):
    """{broker id: (host, port)} from a Metadata response through `bootstrap`."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    return {b.id: (b.host, b.port) for b in md.brokers.values()}


def round_trip(bs, want, prefix):
    """Through bootstrap `bs`, whose brokers advertise `want`: a topic with a partition
    per broker, records produced to each partition and read back."""
    assert advertised(bs) == want
    topic = unique(prefix)
    create_topic(bs, topic, partitions=2, replication_factor=2)
    for part in range(2):
        values = [f"{topic}-{part}-{n}" for n in range(20)]
        delivered = produce(bs, topic, values, partition=part)
        got = read_partition(bs, topic, part, delivered[0][1], delivered[-1][1] + 1)
        assert [v.decode() for _, v in got] == values


def test_node_port_services_and_advertised_addresses(kc):
    kc.apply(cluster_yaml(2), NS)
    c = ready_with_external(kc, 2)
    want = expected_addresses(kc, 2)
    print(f"status {c['status']}; expected {want}")

    boot = kc.get("service", "edge-external-bootstrap", NS)["spec"]
    assert boot["type"] == "NodePort" and "statefulset.kubernetes.io/pod-name" not in boot["selector"], boot
    assert boot["selector"]["app.kubernetes.io/instance"] == "edge", boot
    cm = kc.get("configmap", "edge-config", NS)["data"]["external.properties"]
    for i, (_, port) in want.items():
        assert f"broker-{i}.port={port}\n" in cm, cm

    assert sorted(c["status"]["externalBootstrap"].split(",")) == sorted(f"{h}:{p}" for h, p in want.values())
    pods = brokers(kc)
    for i in range(2):
        ip = pods[i]["status"]["podIP"]
        # The EXTERNAL listener (pod IP, external port) names node addresses and node ports...
        assert advertised(f"{ip}:{EXTERNAL_PORT}") == want, (i, want)
        # ... while the internal one keeps naming the pods.
        internal = advertised(f"{ip}:9092")
        assert internal == {j: (pods[j]["status"]["podIP"], 9092) for j in range(2)}, internal


def test_a_client_through_the_node_ports(kc):
    """With node ports forwarded as kube-proxy would, a client bootstrapped from
    status.externalBootstrap produces and consumes: every connection it makes after the
    first goes to an advertised node address and node port."""
    c = kc.get("cluster", "edge", NS)
    want = expected_addresses(kc, 2)
    pods = brokers(kc)
    fwd = [Forwarder(want[i], (pods[i]["status"]["podIP"], EXTERNAL_PORT)) for i in range(2)]
    try:
        round_trip(c["status"]["externalBootstrap"], want, "edge")
    finally:
        for f in fwd:
            f.close()


def test_scale_up_adds_a_node_port_without_a_roll(kc):
    before = {i: p["metadata"]["uid"] for i, p in brokers(kc).items()}
    kc.apply(cluster_yaml(3), NS)
    t0 = time.monotonic()
    ready_with_external(kc, 3)
    print(f"third broker Ready with its node port {time.monotonic() - t0:.1f}s after the scale-up")
    want = expected_addresses(kc, 3)
    cm = kc.get("configmap", "edge-config", NS)["data"]["external.properties"]
    assert f"broker-2.port={want[2][1]}\n" in cm, cm
    pods = brokers(kc)
    assert advertised(f"{pods[2]['status']['podIP']}:{EXTERNAL_PORT}") == want
    after = {i: p["metadata"]["uid"] for i, p in pods.items()}
    assert {i: after[i] for i in before} == before, "the running brokers were not restarted"


LB_NAME = "glow"
LB_ADDR = "127.0.99."  # the "load balancer" addresses: .1 bootstrap, .10 + ordinal per broker
LB_ANNOTATIONS = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}


def lb_cluster_yaml(replicas):
    external = f"{{type: LoadBalancer, port: {EXTERNAL_PORT}, annotations: {json.dumps(LB_ANNOTATIONS)}}}"
    return cluster_yaml(replicas, LB_NAME, external)


def assign_lb_address(kc, service, ip):
    """What a cloud controller or MetalLB does once the load balancer exists."""
    kc.kubectl(
        "patch",
        "service",
        service,
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        f'{{"status": {{"loadBalancer": {{"ingress": [{{"ip": "{ip}"}}]}}}}}}',
    )


def sts_replicas(kc):
    sts = kc.get("statefulset", LB_NAME, NS, missing_ok=True)
    return sts and sts["spec"].get("replicas")


def test_load_balancer_brokers_wait_for_their_addresses(kc):
    # The NodePort cluster is done with; its brokers would only compete for the cores.
    kc.kubectl("delete", "cluster", "edge", "-n", NS, "--wait=true", timeout=120)
    kc.apply(lb_cluster_yaml(2), NS)

    def waiting():
        c = kc.get("cluster", LB_NAME, NS)
        p = condition(c, "Progressing")
        return p and p["reason"] == "WaitingForLoadBalancer" and p

    p = kc.wait_for(waiting, 60, "Progressing=WaitingForLoadBalancer")
    assert (
        p["message"] == f"waiting for a load balancer address on Service {LB_NAME}-0-external, {LB_NAME}-1-external"
    ), p
    for name in (f"{LB_NAME}-external-bootstrap", f"{LB_NAME}-0-external", f"{LB_NAME}-1-external"):
        svc = kc.get("service", name, NS)
        assert svc["spec"]["type"] == "LoadBalancer", svc["spec"]
        assert LB_ANNOTATIONS.items() <= svc["metadata"]["annotations"].items(), svc["metadata"]
        assert not svc.get("status", {}).get("loadBalancer"), svc["status"]
    time.sleep(3)  # a few reconciles later, still no broker
    assert sts_replicas(kc) == 0 and brokers(kc, LB_NAME) == {}, (sts_replicas(kc), list(brokers(kc, LB_NAME)))
    assert "external.properties" in kc.get("configmap", f"{LB_NAME}-config", NS)["data"]

    # Broker 0's address arrives: broker 0 starts, broker 1 still waits for its own.
    assign_lb_address(kc, f"{LB_NAME}-0-external", f"{LB_ADDR}10")
    kc.wait_for(lambda: sts_replicas(kc) == 1, 60, "StatefulSet at 1 replica")

    # A reconcile applies the StatefulSet before it writes the Cluster's status: wait for
    # that status rather than read it between the two writes.
    def waiting_for_broker_1():
        p = condition(kc.get("cluster", LB_NAME, NS), "Progressing")
        return p and p["message"].endswith(f"Service {LB_NAME}-1-external") and p

    p = kc.wait_for(waiting_for_broker_1, 30, f"Progressing names only {LB_NAME}-1-external")
    assert p["reason"] == "WaitingForLoadBalancer", p
    assert sts_replicas(kc) == 1, "the StatefulSet grows only up to the first broker still waiting"
    cm = kc.get("configmap", f"{LB_NAME}-config", NS)["data"]["external.properties"]
    assert f"broker-0.host={LB_ADDR}10\n" in cm and "broker-1." not in cm, cm


def test_load_balancer_addresses_are_advertised_and_serve_a_client(kc):
    assign_lb_address(kc, f"{LB_NAME}-1-external", f"{LB_ADDR}11")
    assign_lb_address(kc, f"{LB_NAME}-external-bootstrap", f"{LB_ADDR}1")

    def ready():
        c = kc.get("cluster", LB_NAME, NS)
        cond = condition(c, "Ready")
        return (
            cond
            and cond["status"] == "True"
            and c["status"].get("readyBrokers") == 2
            and c["status"].get("externalBootstrap")
            and c
        )

    c = kc.wait_for(ready, 300, f"Cluster {LB_NAME} Ready with its external bootstrap")
    assert c["status"]["externalBootstrap"] == f"{LB_ADDR}1:{EXTERNAL_PORT}", c["status"]
    assert condition(c, "Progressing")["status"] == "False", c["status"]
    cm = kc.get("configmap", f"{LB_NAME}-config", NS)["data"]["external.properties"]
    assert f"broker-0.host={LB_ADDR}10\nbroker-1.host={LB_ADDR}11\n" in cm, cm

    pods = brokers(kc, LB_NAME)
    want = {i: (f"{LB_ADDR}{10 + i}", EXTERNAL_PORT) for i in range(2)}
    for i in range(2):
        ip = pods[i]["status"]["podIP"]
        assert advertised(f"{ip}:{EXTERNAL_PORT}") == want, i
        assert advertised(f"{ip}:9092") == {j: (pods[j]["status"]["podIP"], 9092) for j in range(2)}

    # The load balancers: the bootstrap one to any broker, each broker's to its pod.
    fwd = [Forwarder((f"{LB_ADDR}1", EXTERNAL_PORT), (pods[0]["status"]["podIP"], EXTERNAL_PORT))]
    fwd += [Forwarder(want[i], (pods[i]["status"]["podIP"], EXTERNAL_PORT)) for i in range(2)]
    try:
        round_trip(c["status"]["externalBootstrap"], want, "glow")
    finally:
        for f in fwd:
            f.close()
