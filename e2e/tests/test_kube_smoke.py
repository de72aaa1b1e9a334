"""Smoke check of the Kubernetes e2e infrastructure (kube.py): a real control plane and the node
agent run a one-replica Fjord StatefulSet the way the operator will deploy brokers (ConfigMap,
headless Service, volumeClaimTemplate, $(VAR) expansion, readiness probe); a real client
produces and consumes through the pod IP; a deleted pod comes back with its data."""

import subprocess

import pytest

from harness.clients import produce, read_partition, unique

KUBE_NODES = 1
pytestmark = pytest.mark.fjord_only

MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: fjord-config}
data:
  server.properties: |
    log.dirs=/var/lib/fjord/data
    listeners=PLAINTEXT://0.0.0.0:9092
    fjord.http.listen=0.0.0.0:9644
    group.initial.rebalance.delay.ms=0
---
apiVersion: v1
kind: Service
metadata: {name: fjord}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: fjord}
  ports: [{name: kafka, port: 9092}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: fjord}
spec:
  serviceName: fjord
  replicas: 1
  selector: {matchLabels: {app: fjord}}
  template:
    metadata: {labels: {app: fjord}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: broker
        image: fjord/broker:dev
        command: ["fjord", "broker", "--config", "/etc/fjord/server.properties",
                  "--override", "node.id=$(NODE_ID)",
                  "--override", "advertised.listeners=PLAINTEXT://$(POD_IP):9092"]
        env:
        - name: NODE_ID
          valueFrom: {fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        ports:
        - {name: kafka, containerPort: 9092}
        - {name: http, containerPort: 9644}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
        volumeMounts:
        - {name: config, mountPath: /etc/fjord}
        - {name: data, mountPath: /var/lib/fjord}
      volumes:
      - name: config
        configMap: {name: fjord-config}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def _pid(pod):
    cid = pod["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("process://"), cid
    return int(cid.removeprefix("process://"))


def test_statefulset_broker_serves_and_keeps_data_across_pod_deletion(kube_cluster):
    kube = kube_cluster
    ns = kube.namespace("smoke")
    kube.apply(MANIFESTS, ns)
    pod = kube.wait_pod_ready(ns, "fjord-0")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.0.10."), ip
    assert pod["spec"]["nodeName"] == "fjord-e2e-0"

    # The hosts file the broker sees (its own mount namespace) names the StatefulSet pod.
    hosts = subprocess.run(
        ["nsenter", "--target", str(_pid(pod)), "--mount", "cat", "/etc/hosts"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert f"{ip}\tfjord-0.fjord.{ns}.svc.cluster.local fjord-0.fjord.{ns}.svc fjord-0.fjord" in hosts.stdout, (
        hosts.stdout + hosts.stderr
    )

    # node.id=$(NODE_ID) came from the pod-index label, advertised.listeners from status.podIP.
    from harness.clients import admin

    md = admin(f"{ip}:9092").list_topics(timeout=10)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {0: (ip, 9092)}

    topic = unique("smoke")
    delivered = produce(f"{ip}:9092", topic, ["hello from a pod"])
    assert delivered == [(0, 0, b"hello from a pod")]
    assert read_partition(f"{ip}:9092", topic, 0, 0, 1) == [(0, b"hello from a pod")]

    # log.dirs=/var/lib/fjord/data is in the PersistentVolume: its folder is mounted at /var/lib/fjord.
    pvc = kube.get("pvc", "data-fjord-0", ns)
    assert pvc["status"]["phase"] == "Bound"
    pv = kube.get("pv", pvc["spec"]["volumeName"])
    from pathlib import Path

    assert (Path(pv["spec"]["hostPath"]["path"]) / "data" / f"{topic}-0").is_dir()

    # Deleting the pod: the agent stops the broker, the StatefulSet makes a new fjord-0 on the
    # same claim; it serves the record written through the old one.
    old_uid, old_pid = pod["metadata"]["uid"], _pid(pod)
    kube.kubectl("delete", "pod", "fjord-0", "-n", ns, "--wait=false")
    pod2 = kube.wait_pod_ready(ns, "fjord-0", not_uid=old_uid)
    ip2 = pod2["status"]["podIP"]
    assert not Path(f"/proc/{old_pid}").exists(), "the deleted pod's broker process still runs"
    assert pod2["status"]["containerStatuses"][0]["restartCount"] == 0
    assert read_partition(f"{ip2}:9092", topic, 0, 0, 1) == [(0, b"hello from a pod")]
    print(f"pod {ns}/fjord-0: first at {ip}, recreated at {ip2}; {kube.start_report}")
