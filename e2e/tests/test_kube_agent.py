"""The node agent's container-like view for pods (e2e/kube/node_agent.py): volumes at their real
mount paths in a private mount namespace per pod, and in-cluster API access through the
ServiceAccount volume the admission plugin adds plus KUBERNETES_SERVICE_HOST/PORT."""

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.kube import KUBE_DIR

KUBE_NODES = 1
pytestmark = pytest.mark.fjord_only  # the cluster fixture needs the fjord binary
KUBE_IMAGES = {"e2e/incluster-check": str(KUBE_DIR / "incluster_check.py"), "e2e/sh": shutil.which("sh")}
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

INCLUSTER = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: checker}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: checker-pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: checker}]
---
apiVersion: v1
kind: Pod
metadata: {name: incluster-check}
spec:
  serviceAccountName: checker
  restartPolicy: Never
  containers:
  - {name: check, image: "e2e/incluster-check:dev"}
"""

SAME_PATH = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-NAME}
data: {value: "content of NAME\\n", extra: "extra of NAME\\n"}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-NAME}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/sh:dev
    command: [sh, -c, "cat /etc/fjord-e2e-agent/value /etc/fjord-e2e-agent-file/extra; exec sleep 600"]
    volumeMounts:
    - {name: config, mountPath: /etc/fjord-e2e-agent, readOnly: true}
    - {name: config, mountPath: /etc/fjord-e2e-agent-file/extra, subPath: extra}
  volumes:
  - name: config
    configMap: {name: cm-NAME}
"""


def _pid(pod):
    cid = pod["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("process://"), cid
    return int(cid.removeprefix("process://"))


def _in_pod(pid, *cmd):
    return subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", "--uts", *cmd], capture_output=True, text=True, timeout=10
    )


def test_pod_reaches_the_apiserver_with_its_service_account(kube_cluster):
    kube = kube_cluster
    ns = kube.namespace("incluster")
    # The CA that kube-root-ca.crt publishes (controller manager --root-ca-file) signed the
    # apiserver's serving certificate (e2e/kube/start): the pod can verify it.
    root_ca = kube.get("configmap", "kube-root-ca.crt", ns)["data"]["ca.crt"]
    assert root_ca.strip() == (kube.root / "pki" / "ca.crt").read_text().strip()
    kube.apply(INCLUSTER, ns)

    def finished():
        pod = kube.get("pod", "incluster-check", ns)
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    pod = kube.wait_for(finished, 60, what=f"pod {ns}/incluster-check to finish")
    log = (kube.pod_dir(ns, "incluster-check") / "check.log").read_text()
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"/api/v1/namespaces/{ns}/pods: 200; pods ['incluster-check']" in log, log
    # The ServiceAccount admission plugin added the projected volume the agent mounted.
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert any(m["name"].startswith("kube-api-access-") and m["mountPath"] == SA_DIR for m in mounts), mounts
    assert f"{SA_DIR} <- " in log, log


def test_pods_mount_their_own_configmaps_at_the_same_path(kube_cluster):
    kube = kube_cluster
    ns = kube.namespace("samepath")
    for name in ("a", "b"):
        kube.apply(SAME_PATH.replace("NAME", name), ns)
    pods = {name: kube.wait_pod_ready(ns, f"pod-{name}") for name in ("a", "b")}
    for name, pod in pods.items():  # both run at once, each sees its own ConfigMap
        pid = _pid(pod)
        r = _in_pod(pid, "cat", "/etc/fjord-e2e-agent/value", "/etc/fjord-e2e-agent-file/extra")
        assert r.stdout == f"content of {name}\nextra of {name}\n", r.stdout + r.stderr
        kube.wait_for(
            lambda name=name: (
                f"content of {name}\nextra of {name}\n" in (kube.pod_dir(ns, f"pod-{name}") / "main.log").read_text()
            ),
            10,
            what=f"pod-{name} output",
        )
        w = _in_pod(pid, "sh", "-c", "echo x > /etc/fjord-e2e-agent/new")
        assert w.returncode != 0 and "Read-only file system" in w.stderr, w
        # Its mounts and hosts file are private to its namespace; the pod IP is its own.
        assert _in_pod(pid, "hostname").stdout.strip() == f"pod-{name}"
        assert f"{pod['status']['podIP']}\tpod-{name}" in _in_pod(pid, "cat", "/etc/hosts").stdout
    # Nothing leaked to the host: the mount points exist there, empty.
    assert not Path("/etc/fjord-e2e-agent/value").exists()
    assert Path("/etc/fjord-e2e-agent-file/extra").read_text() == ""
