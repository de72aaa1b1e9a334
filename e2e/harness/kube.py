"""A real Kubernetes control plane plus the node agent, for tests of what runs on Kubernetes.

    def test_x(kube_cluster):                 # module-scoped: one cluster per test module
        ns = kube_cluster.namespace("x")      # fresh namespace, default ServiceAccount ready
        kube_cluster.apply(YAML, ns)          # kubectl apply -f -
        pod = kube_cluster.wait_pod_ready(ns, "fjord-0")
        kube_cluster.kubectl("get", "pods", "-n", ns)
        kube_cluster.helm_install_operator("--set", "k=v")   # charts/fjord-operator as release
                                              # "fjord" in fjord-system, the pod runs operator_bin()
        kube_cluster.operator_metrics()       # the operator pod's /metrics, parsed
        condition(kube_cluster.get("cluster", "events", ns), "Ready")   # a status condition or None

The control plane is e2e/kube/start (etcd, kube-apiserver, controller manager, scheduler on
free loopback ports); e2e/kube/node_agent.py registers KUBE_NODES nodes (module attribute,
default 3; zones zone-0..) and runs pods whose image starts with `fjord` as $FJORD_BIN, each on
its own 127.0.10.x address. Missing binaries fail the test (provision: e2e/provision/kube).
A watchdog runs e2e/kube/stop if the test process dies; the agent's pods die with the agent.
Loaded by conftest.py as a plugin; imports nothing heavy at module level.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import REPO, fjord_bin_path, fjord_bin_problem
from harness.paths import operator_bin as operator_bin

KUBE_DIR = REPO / "e2e" / "kube"
POD_IP_BASE = "127.0.10."


def kube_bin():
    """Folder with kube-apiserver, kubectl, ...: $FJORD_KUBE_BIN (env.sh) or the provisioned one."""
    d = os.environ.get("FJORD_KUBE_BIN")
    if not d:
        versions = (REPO / "e2e" / "provision" / "versions").read_text()
        ver = next(
            line.split("=", 1)[1].split()[0] for line in versions.splitlines() if line.startswith("KUBE_VERSION=")
        )
        cache = os.environ.get("FJORD_CACHE") or str(Path.home() / ".cache" / "fjord")
        d = f"{cache}/kube-{ver}/bin"
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
        if not os.access(Path(d) / b, os.X_OK)
    ]
    if missing:
        pytest.fail(
            f"Kubernetes binaries missing in {d}: {', '.join(missing)}; build them with "
            "`bash e2e/provision/kube` (or set FJORD_KUBE_BIN)",
            pytrace=False,
        )
    return Path(d)


def fjord_bin():
    b = fjord_bin_path()
    problem = fjord_bin_problem(b)
    if problem:
        pytest.fail(problem, pytrace=False)
    return b


def condition(obj, type_):
    """The status condition of that type of a resource (JSON), or None."""
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c.get("type") == type_:
            return c
    return None


def is_true(obj, type_):
    """The resource's condition of that type has status "True"."""
    return (condition(obj, type_) or {}).get("status") == "True"


def _pod_ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


OPERATOR_RELEASE = "fjord"
OPERATOR_NS = "fjord-system"
OPERATOR_DEPLOYMENT = f"{OPERATOR_RELEASE}-fjord-operator"


def _tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


# e2e/kube/stop DIR once our stdin closes: the test process ended, even by SIGKILL.
_WATCHDOG = "import subprocess, sys; sys.stdin.buffer.read(); subprocess.run(sys.argv[1:])"


class KubeCluster:
    def __init__(self, root, nodes=3, images=None):
        try:
            import kubernetes  # noqa: F401 - the node agent's API client, from the e2e venv
        except ImportError:
            pytest.fail(
                f"{sys.executable} has no `kubernetes` package: provision the venv with "
                "`bash e2e/provision/clients` and run the tests with $FJORD_PY",
                pytrace=False,
            )
        self.root = Path(root)
        self.bin = kube_bin()
        self.images = {"fjord": fjord_bin(), **(images or {})}
        self.nodes = nodes
        self.agent_state = self.root / "agent"
        self.agent_log = self.root / "logs" / "node-agent.log"
        self.kubeconfig = None
        self.agent = None
        self._api = None
        self.watchdog = None

    # --- lifecycle ---------------------------------------------------------------
    def start(self, timeout=120):
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, FJORD_KUBE_BIN=str(self.bin))
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(KUBE_DIR / "stop"), str(self.root)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        p = subprocess.run([KUBE_DIR / "start", self.root], capture_output=True, text=True, env=env, timeout=timeout)
        if p.returncode != 0:
            pytest.fail(f"e2e/kube/start failed ({p.returncode}):\n{p.stderr}", pytrace=False)
        self.kubeconfig = p.stdout.strip().splitlines()[-1]
        self.start_report = p.stderr.strip()
        cmd = [
            sys.executable,
            str(KUBE_DIR / "node_agent.py"),
            "--kubeconfig",
            self.kubeconfig,
            "--state",
            str(self.agent_state),
            "--nodes",
            str(self.nodes),
            "--ip-base",
            POD_IP_BASE,
        ]
        for prefix, binary in self.images.items():
            cmd += ["--image-binary", f"{prefix}={binary}"]
        with open(self.agent_log, "ab") as out:
            self.agent = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        (self.root / "pids" / "node-agent").write_text(f"{self.agent.pid}\n")  # for e2e/kube/stop
        self.wait_for(lambda: self._nodes_ready(), timeout=60, what=f"{self.nodes} Ready nodes")
        return self

    def _nodes_ready(self):
        if self.agent.poll() is not None:
            raise AssertionError(f"node agent exited with {self.agent.returncode}:\n{_tail(self.agent_log)}")
        items = self.get("nodes")["items"]
        return (
            sum(
                any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                and not any(t["effect"] == "NoSchedule" for t in n["spec"].get("taints", []))
                for n in items
            )
            >= self.nodes
        )

    def stop(self):
        """Agent first (it stops the pods' processes), then the control plane."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(10)
        subprocess.run([KUBE_DIR / "stop", self.root], timeout=60)
        if self.watchdog is not None:
            self.watchdog.stdin.close()
            self.watchdog.wait(60)

    def diagnostics(self):
        """What a failing test should show: agent and control-plane log tails, pods, events."""
        out = [f"--- node agent log ({self.agent_log})", _tail(self.agent_log, 40)]
        for name in ("kube-controller-manager", "kube-scheduler"):
            out += [f"--- {name} log", _tail(self.root / "logs" / f"{name}.log", 10)]
        for args in (("get", "pods,pvc", "-A", "-o", "wide"), ("get", "events", "-A", "--sort-by=.lastTimestamp")):
            r = self.kubectl(*args, check=False)
            out += [f"--- kubectl {' '.join(args)}", (r.stdout + r.stderr)[-4000:]]
        for log in sorted(self.agent_state.glob("pods/*/*/*.log")):
            out += [f"--- {log}", _tail(log, 20)]
        return "\n".join(out)

    # --- API ---------------------------------------------------------------------
    def kubectl(self, *args, input=None, check=True, timeout=60):
        p = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", self.kubeconfig, *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p

    def apply(self, manifest, namespace=None):
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def get(self, kind, name=None, namespace=None, missing_ok=False):
        """The object (or list) as JSON; None if missing_ok and it does not exist."""
        args = ["get", kind] + ([name] if name else []) + (["-n", namespace] if namespace else []) + ["-o", "json"]
        p = self.kubectl(*args, check=False)
        if p.returncode != 0:
            if missing_ok and "NotFound" in p.stderr:
                return None
            raise AssertionError(f"kubectl {' '.join(args)}: {p.stderr}")
        return json.loads(p.stdout)

    @property
    def api(self):
        """A kubernetes.client.ApiClient for typed calls (CoreV1Api(kube.api), ...)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=self.kubeconfig)
        return self._api

    def namespace(self, name):
        self.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
        # Pods are refused until the ServiceAccount controller made the default account.
        self.wait_for(
            lambda: self.get("serviceaccount", "default", name, missing_ok=True),
            30,
            what=f"ServiceAccount default in {name}",
        )
        return name

    # --- waiting -----------------------------------------------------------------
    def wait_for(self, cond, timeout, what, interval=0.25):
        """clients.wait_for, ending at once on an AssertionError (a failed kubectl) and
        adding the cluster's diagnostics to a timeout."""
        from harness.clients import wait_for

        return wait_for(cond, timeout, interval=interval, what=what, fatal=AssertionError, details=self.diagnostics)

    def wait_pod_ready(self, namespace, name, timeout=120, not_uid=None):
        """The pod once its Ready condition is True (a pod other than uid not_uid)."""

        def ready():
            pod = self.get("pod", name, namespace, missing_ok=True)
            if pod is None or pod["metadata"]["uid"] == not_uid or pod["metadata"].get("deletionTimestamp"):
                return None
            conds = pod.get("status", {}).get("conditions", [])
            return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else None

        return self.wait_for(ready, timeout, what=f"pod {namespace}/{name} Ready")

    def pod_dir(self, namespace, name):
        return self.agent_state / "pods" / namespace / name

    # --- the operator ------------------------------------------------------------
    def helm_install_operator(self, *args, timeout=240):
        """`helm install fjord charts/fjord-operator` in fjord-system (image tag dev, text logs)
        with extra helm args (`--set k=v`); waits until the Deployment is ready and returns it."""
        binary = self.images.get("fjord/operator")
        if not binary or not os.access(binary, os.X_OK):
            raise AssertionError(
                f"operator binary missing: {binary} (cargo build --release -p fjord-operator, "
                "or set FJORD_OPERATOR_BIN; the module needs KUBE_IMAGES = "
                "{'fjord/operator': kube.operator_bin()})"
            )
        p = subprocess.run(
            [
                str(self.bin / "helm"),
                "--kubeconfig",
                self.kubeconfig,
                "install",
                OPERATOR_RELEASE,
                str(REPO / "charts" / "fjord-operator"),
                "--namespace",
                OPERATOR_NS,
                "--create-namespace",
                "--set",
                "image.tag=dev",
                "--set",
                "operator.logFormat=text",
                *map(str, args),
                "--wait",
                "--timeout",
                f"{timeout - 30}s",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert p.returncode == 0, f"helm install failed:\n{p.stdout}{p.stderr}\n{self.diagnostics()}"
        dep = self.get("deployment", OPERATOR_DEPLOYMENT, OPERATOR_NS)
        assert dep["status"].get("readyReplicas") == 1, dep["status"]
        return dep

    def operator_pod(self):
        """The operator's pod (of the Deployment helm_install_operator made)."""
        return next(
            p
            for p in self.get("pods", namespace=OPERATOR_NS)["items"]
            if p["metadata"]["name"].startswith(OPERATOR_DEPLOYMENT)
        )

    def operator_metrics(self, raw=False):
        """The operator pod's /metrics: [(name, labels, value)], or the text with raw=True."""
        from harness.clients import http_get, parse_prometheus

        pod = self.operator_pod()
        text = http_get(f"http://{pod['status']['podIP']}:8080/metrics")[1]
        return text if raw else parse_prometheus(text)

    # --- a Fjord Cluster resource ------------------------------------------------
    def broker_pods(self, namespace, cluster="events"):
        """The pods of a Cluster (named CLUSTER-i by its StatefulSet), sorted by name."""
        return sorted(
            (
                p
                for p in self.get("pods", namespace=namespace)["items"]
                if p["metadata"]["name"].startswith(f"{cluster}-")
            ),
            key=lambda p: p["metadata"]["name"],
        )

    def bootstrap(self, namespace, cluster="events", ready_only=False, port=9092):
        """The broker pods' addresses as a client bootstrap (there is no cluster DNS here, so
        clients use the pods' IPs). ready_only: only pods that are Ready and not being deleted."""
        return ",".join(
            f"{p['status']['podIP']}:{port}"
            for p in self.broker_pods(namespace, cluster)
            if p["status"].get("podIP")
            and (not ready_only or (not p["metadata"].get("deletionTimestamp") and _pod_ready(p)))
        )

    def cluster_ready(self, namespace, cluster="events", brokers=None, observed=False):
        """The Cluster resource if its Ready condition is True (and, with brokers, status.readyBrokers
        is that; with observed, status.observedGeneration is the current generation), else None."""
        c = self.get("cluster", cluster, namespace)
        ok = (
            is_true(c, "Ready")
            and (brokers is None or c["status"].get("readyBrokers") == brokers)
            and (not observed or c["status"].get("observedGeneration") == c["metadata"]["generation"])
        )
        return c if ok else None

    def wait_cluster_ready(self, namespace, cluster="events", brokers=None, observed=False, timeout=300, interval=0.25):
        """Wait for cluster_ready(...); returns the Cluster resource."""
        what = f"Cluster {cluster} Ready" + (f" with {brokers} broker{'s' if brokers != 1 else ''}" if brokers else "")
        return self.wait_for(
            lambda: self.cluster_ready(namespace, cluster, brokers, observed), timeout, what, interval=interval
        )


@pytest.fixture(scope="module")
def kube_cluster(e2e_tmp, request):
    """A control plane + node agent shared by the tests of a module (KUBE_NODES nodes, default 3)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=f"kube-{request.module.__name__}-", dir=e2e_tmp))
    kc = KubeCluster(
        root, nodes=getattr(request.module, "KUBE_NODES", 3), images=getattr(request.module, "KUBE_IMAGES", None)
    )
    try:
        kc.start()
        yield kc
    finally:
        kc.stop()
