"""Operator benchmark (issue 4's speed points), on the same real control plane and node agent
as e2e/tests/test_operator.py:

  topic-ready        apply one Topic at a time, time from `kubectl apply` returning to its
                     Ready condition turning True (seen through a watch); p50 / p95 / max
  topics-1000        apply N Topics in one `kubectl apply`, time until all are Ready; the
                     operator's peak resident memory (VmHWM) over the whole run
  idle-writes        wait over two drift-check intervals with nothing changing: Kubernetes
                     API writes and broker admin writes counted by the operator's metrics

    e2e/bench/operator [--topics 1000] [--single 20] [--drift 30s] [--out target/bench/operator.json]

Needs the provisioned control plane (e2e/provision/kube) and release builds of fjord and
fjord-operator. Prints a table and writes JSON; asserts nothing (that is the tests' job).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import kube
from harness.clients import http_get, parse_prometheus
from harness.paths import REPO as ROOT

NS = "bench"
CLUSTER = """
apiVersion: fjord.dev/v1alpha1
kind: Cluster
metadata: {name: bench}
spec:
  image: fjord/broker:dev
  replicas: 3
  storage: {size: 1Gi}
  advertise: PodIp
  config: {default.replication.factor: "3", min.insync.replicas: "2"}
"""


def log(msg):
    print(f"[operator-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def topic(name, partitions=1):
    return {
        "apiVersion": "fjord.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"cluster": "bench", "partitions": partitions, "replicationFactor": 3},
    }


class ReadyWatch:
    """Watches Topics and records when each one's Ready condition first turns True."""

    def __init__(self, kc):
        from kubernetes import client, watch

        self.api = client.CustomObjectsApi(kc.api)
        self.watch = watch.Watch()
        self.ready = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                for ev in self.watch.stream(
                    self.api.list_namespaced_custom_object, "fjord.dev", "v1alpha1", NS, "topics", timeout_seconds=300
                ):
                    obj = ev["object"]
                    conds = (obj.get("status") or {}).get("conditions") or []
                    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                        with self.lock:
                            self.ready.setdefault(obj["metadata"]["name"], time.monotonic())
            except Exception as e:  # noqa: BLE001 - reconnect
                log(f"watch restarted: {e}")
                time.sleep(0.2)

    def when(self, name):
        with self.lock:
            return self.ready.get(name)

    def count(self, names):
        with self.lock:
            return sum(1 for n in names if n in self.ready)


def operator_pid():
    """The operator process, by its executable's name: its path also appears in the node
    agent's command line (--image-binary), which a command-line match would find first."""
    out = subprocess.run(["pgrep", "-x", "fjord-operator"], capture_output=True, text=True).stdout.split()
    if len(out) != 1:
        sys.exit(f"expected one fjord-operator process, found {out}")
    return int(out[0])


def rss_mib(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def operator_writes(kc):
    pod = next(
        p
        for p in kc.get("pods", namespace="fjord-system")["items"]
        if p["metadata"]["name"].startswith("fjord-fjord-operator")
    )
    samples = parse_prometheus(http_get(f"http://{pod['status']['podIP']}:8080/metrics")[1])

    def total(name):
        return sum(v for n, _, v in samples if n == name)

    out = {k: total(f"fjord_operator_{k}_total") for k in ("api_writes", "kafka_admin_writes", "reconciles")}
    for n, labels, v in samples:
        if n == "fjord_operator_api_writes_total":
            key = f"api_writes[{labels.get('controller')}/{labels.get('kind')}]"
            out[key] = out.get(key, 0) + v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--single", type=int, default=20, help="Topics applied one at a time for topic-ready")
    ap.add_argument("--drift", default="30s", help="the operator's --drift-check-interval (the chart's default)")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "operator.json"))
    a = ap.parse_args()
    op_bin = ROOT / "target" / "release" / "fjord-operator"
    if not os.access(op_bin, os.X_OK):
        sys.exit(f"{op_bin} missing: cargo build --release -p fjord-operator")
    root = Path(tempfile.mkdtemp(prefix="fjord-operator-bench-"))
    kc = kube.KubeCluster(root, nodes=3, images={"fjord/operator": str(op_bin)})
    results = {}
    try:
        kc.start()
        kc.namespace(NS)
        subprocess.run(
            [
                str(kc.bin / "helm"),
                "--kubeconfig",
                kc.kubeconfig,
                "install",
                "fjord",
                str(ROOT / "charts" / "fjord-operator"),
                "--namespace",
                "fjord-system",
                "--create-namespace",
                "--set",
                "image.tag=dev",
                "--set",
                f"operator.driftCheckInterval={a.drift}",
                "--set",
                "operator.logLevel=warn",
                "--wait",
                "--timeout",
                "3m",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        pid = operator_pid()
        log(f"operator running (pid {pid}, RSS {rss_mib(pid):.1f} MiB)")
        kc.apply(CLUSTER, NS)
        t0 = time.monotonic()
        kc.wait_for(
            lambda: any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (kc.get("cluster", "bench", NS).get("status") or {}).get("conditions", [])
            ),
            300,
            "Cluster bench Ready",
        )
        results["cluster_ready_s"] = round(time.monotonic() - t0, 2)
        log(f"Cluster Ready after {results['cluster_ready_s']} s")
        watch = ReadyWatch(kc)

        lat = []
        for i in range(a.single):
            name = f"single-{i:03d}"
            t = time.monotonic()
            kc.apply(json.dumps(topic(name)), NS)
            applied = time.monotonic()
            kc.wait_for(lambda n=name: watch.when(n), 60, f"Topic {name} Ready", interval=0.01)
            lat.append((watch.when(name) - applied) * 1000)
            log(
                f"{name}: Ready {lat[-1]:.0f} ms after apply returned (apply itself took {(applied - t) * 1000:.0f} ms)"
            )
        results["topic_ready_ms"] = {
            "p50": round(statistics.median(lat), 1),
            "p95": round(sorted(lat)[max(0, int(len(lat) * 0.95) - 1)], 1),
            "max": round(max(lat), 1),
            "n": len(lat),
        }

        names = [f"bulk-{i:04d}" for i in range(a.topics)]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": [topic(n) for n in names]})
        t = time.monotonic()
        kc.kubectl("apply", "-n", NS, "-f", "-", input=manifest, timeout=600)
        applied = time.monotonic()
        kc.wait_for(lambda: watch.count(names) == len(names), 600, f"{len(names)} Topics Ready", interval=0.5)
        done = max(watch.when(n) for n in names)
        results["topics_bulk"] = {
            "topics": len(names),
            "apply_s": round(applied - t, 2),
            "all_ready_after_apply_s": round(done - applied, 2),
            "all_ready_from_start_s": round(done - t, 2),
        }
        log(f"{len(names)} Topics: kubectl apply {applied - t:.1f} s, all Ready {done - applied:.1f} s later")

        interval = float(a.drift.rstrip("s"))
        # Let the new Topics settle first: their first status with sizes and readers comes
        # with the first statistics refresh (every two drift intervals).
        log(f"settling for {2 * interval + 5:.0f} s ...")
        time.sleep(2 * interval + 5)
        before = operator_writes(kc)
        wait = 2 * interval + 5
        log(f"idle for {wait:.0f} s (two drift checks of every Topic) ...")
        time.sleep(wait)
        after = operator_writes(kc)
        results["idle"] = {"seconds": wait, **{k: after[k] - before.get(k, 0) for k in after}}
        log(f"idle deltas: {results['idle']}")
        results["operator_rss_mib"] = round(rss_mib(pid), 1)
        results["operator_peak_rss_mib"] = round(rss_mib(pid, "VmHWM"), 1)
    finally:
        kc.stop()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    tr = results.get("topic_ready_ms", {})
    bulk = results.get("topics_bulk", {})
    idle = results.get("idle", {})
    print("\nFjord operator benchmark (3 brokers, node agent, real control plane)")
    print(f"  Cluster applied -> Ready             {results.get('cluster_ready_s')} s")
    print(
        f"  Topic applied -> Ready (n={tr.get('n')})     p50 {tr.get('p50')} ms, p95 {tr.get('p95')} ms, max {tr.get('max')} ms"
    )
    print(
        f"  {bulk.get('topics')} Topics applied -> all Ready    {bulk.get('all_ready_after_apply_s')} s "
        f"(kubectl apply took {bulk.get('apply_s')} s)"
    )
    print(
        f"  operator memory                      {results.get('operator_rss_mib')} MiB resident, "
        f"peak {results.get('operator_peak_rss_mib')} MiB"
    )
    print(
        f"  idle {idle.get('seconds')} s: API writes {idle.get('api_writes')}, broker admin writes "
        f"{idle.get('kafka_admin_writes')}, reconciles {idle.get('reconciles')}"
    )
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
