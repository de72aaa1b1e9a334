"""Monitoring wiring of the operator and its chart on a real control plane (kube.py): with the
Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs installed (from
$FJORD_PROM_OPERATOR_CRDS, the CRDs of the Prometheus Operator's own Go module), the chart
creates its ServiceMonitor, PrometheusRule and dashboards ConfigMap with the user's labels,
and the operator creates the same three for a Cluster: labelled with `spec.metrics.labels`
(so kube-prometheus-stack's selectors find them), owned by the Cluster, the rules exactly
dashboards/alerts.yaml, the dashboards exactly dashboards/*.json, broker series labelled
with `cluster`. `spec.metrics.granularity` reaches the brokers as `fjord.metrics.granularity`;
`fjord_operator_resources` is labelled with the Cluster (and its series go with it); with
metrics off the objects go.

Order matters: the operator looks the CRDs up by API discovery in each reconcile (cached for
a minute), so they are installed and Established before the operator starts; the chart's
ServiceMonitor and PrometheusRule need them to install at all. The tests run in order and
build on each other."""

import json
import time
from pathlib import Path

import pytest
import yaml

from harness import kube
from harness.clients import http_get, parse_prometheus
from harness.dashboards import load_alert_groups
from harness.kube import condition

KUBE_NODES = 1
KUBE_IMAGES = {"fjord/operator": kube.operator_bin()}
pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
NS = "observed"
CRDS = ("servicemonitors", "podmonitors", "prometheusrules")
USER_LABELS = {"release": "kube-prometheus-stack", "team": "streaming"}
CLUSTER = {
    "apiVersion": "fjord.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "events"},
    "spec": {
        "image": "fjord/broker:dev",
        "replicas": 1,
        "storage": {"size": "1Gi"},
        "advertise": "PodIp",
        "metrics": {"labels": USER_LABELS, "dashboards": True, "granularity": "partition"},
    },
}
TOPIC = {
    "apiVersion": "fjord.dev/v1alpha1",
    "kind": "Topic",
    "metadata": {"name": "orders"},
    "spec": {"cluster": "events", "partitions": 2, "replicationFactor": 1},
}


def dashboards():
    return {p.name: p.read_text() for p in sorted((REPO / "dashboards").glob("*.json"))}


def has_labels(obj, labels):
    have = obj["metadata"].get("labels", {})
    return {k: have.get(k) for k in labels} == labels


@pytest.fixture(scope="module")
def kc(kube_cluster, tools):
    crds = tools.prom_operator_crds
    files = [crds / f"monitoring.coreos.com_{c}.yaml" for c in CRDS]
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"Prometheus Operator CRDs missing: {missing} (provision: bash e2e/provision/all prometheus)"
    # Server-side: the CRDs are too big for kubectl's last-applied annotation.
    kube_cluster.kubectl("apply", "--server-side", *[a for f in files for a in ("-f", f)])
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{c}.monitoring.coreos.com" for c in CRDS]
    )
    kube_cluster.namespace(NS)
    return kube_cluster


def test_chart_installs_its_monitoring_objects_with_user_labels(kc):
    sets = ["--set", "operator.driftCheckInterval=2s"]  # also how often Topics are counted
    for key in ("metrics.serviceMonitor", "prometheusRule", "dashboards"):
        sets += ["--set", f"{key}.enabled=true"]
        sets += [a for k, v in USER_LABELS.items() for a in ("--set", f"{key}.labels.{k}={v}")]
    kc.helm_install_operator(*sets)
    name, ns = kube.OPERATOR_DEPLOYMENT, kube.OPERATOR_NS
    sm = kc.get("servicemonitor", name, ns)
    assert has_labels(sm, USER_LABELS), sm["metadata"]
    assert sm["spec"]["endpoints"][0]["port"] == "http", sm["spec"]
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fjord-operator", sm["spec"]
    rule = kc.get("prometheusrule", name, ns)
    assert has_labels(rule, USER_LABELS), rule["metadata"]
    assert rule["spec"]["groups"] == load_alert_groups()
    cm = kc.get("configmap", f"{name}-dashboards", ns)
    assert has_labels(cm, {**USER_LABELS, "grafana_dashboard": "1"}), cm["metadata"]
    # The template's block scalar drops the files' final newline: compare the JSON.
    assert {k: json.loads(v) for k, v in cm["data"].items()} == {k: json.loads(v) for k, v in dashboards().items()}


def test_operator_creates_monitoring_objects_owned_by_the_cluster(kc):
    kc.apply(json.dumps(CLUSTER), NS)

    def created():
        objs = [
            kc.get(kind, name, NS, missing_ok=True)
            for kind, name in (
                ("servicemonitor", "events"),
                ("prometheusrule", "events"),
                ("configmap", "events-dashboards"),
            )
        ]
        return None if None in objs else objs

    sm, rule, cm = kc.wait_for(created, 60, "ServiceMonitor, PrometheusRule and dashboards ConfigMap of events")
    uid = kc.get("cluster", "events", NS)["metadata"]["uid"]
    for obj in (sm, rule, cm):
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        assert has_labels(
            obj,
            {**USER_LABELS, "app.kubernetes.io/instance": "events", "app.kubernetes.io/managed-by": "fjord-operator"},
        ), (what, obj["metadata"])
        owners = obj["metadata"].get("ownerReferences", [])
        assert [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in owners] == [
            ("Cluster", "events", uid, True)
        ], (what, owners)
    ep = sm["spec"]["endpoints"]
    assert len(ep) == 1 and ep[0]["port"] == "http" and ep[0]["path"] == "/metrics", ep
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "cluster",
    } in ep[0]["relabelings"], ep
    assert "metricRelabelings" not in ep[0], "series are not dropped by the ServiceMonitor"
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "events", sm["spec"]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}, sm["spec"]
    assert rule["spec"]["groups"] == load_alert_groups()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]
    assert cm["data"] == dashboards()
    # The pods carry the label the ServiceMonitor turns into `cluster`.
    sts = kc.get("statefulset", "events", NS)
    assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "events"


def test_granularity_reaches_the_brokers(kc):
    props = kc.get("configmap", "events-config", NS)["data"]["server.properties"]
    assert "\nfjord.metrics.granularity=partition\n" in props, props
    kc.wait_for(
        lambda: (condition(kc.get("cluster", "events", NS), "Ready") or {}).get("status") == "True",
        300,
        "Cluster events Ready",
    )
    kc.apply(json.dumps(TOPIC), NS)
    kc.wait_for(
        lambda: (condition(kc.get("topic", "orders", NS), "Ready") or {}).get("status") == "True",
        60,
        "Topic orders Ready",
    )
    ip = kc.get("pod", "events-0", NS)["status"]["podIP"]

    def partition_series():
        samples = parse_prometheus(http_get(f"http://{ip}:9644/metrics")[1])
        return sorted(
            s[1]["partition"]
            for s in samples
            if s[0] == "fjord_partition_high_watermark" and s[1].get("topic") == "orders"
        )

    assert kc.wait_for(partition_series, 30, "per-partition series of orders") == ["0", "1"]


def test_operator_resources_are_labelled_with_the_cluster(kc):
    def resources():
        got = {
            (s[1]["kind"], s[1].get("cluster"), s[1]["ready"]): s[2]
            for s in kc.operator_metrics()
            if s[0] == "fjord_operator_resources"
        }
        want = {("Cluster", "events", "true"): 1, ("Topic", "events", "true"): 1}
        return got if all(got.get(k) == v for k, v in want.items()) else None

    got = kc.wait_for(resources, 30, 'fjord_operator_resources{cluster="events"} ready')
    assert {c for _, c, _ in got} == {"events"}, got


def test_operator_dashboard_and_alerts_against_prometheus(kc, tools, tmp_path):
    """A real Prometheus scrapes the operator pod and the broker: every query of the Operator
    dashboard returns data, every operator alert expression reads existing series, and a Topic
    naming a cluster that does not exist fires FjordOperatorReconcileErrors. The dashboard is
    rendered (into docs/dashboards/ when FJORD_DASHBOARD_PNGS names it)."""
    import os

    from harness.dashboards import load_dashboards, queries_without_data, render
    from harness.prometheus import Prometheus, fast_rules, selectors_without_series

    ghost = {**TOPIC, "metadata": {"name": "stray"}, "spec": {**TOPIC["spec"], "cluster": "ghost"}}
    kc.apply(json.dumps(ghost), NS)
    op = kc.operator_pod()
    broker = kc.get("pod", "events-0", NS)
    targets = [
        {
            "address": f"{op['status']['podIP']}:8080",
            "job": "fjord-operator",
            "labels": {"namespace": kube.OPERATOR_NS, "pod": op["metadata"]["name"]},
        },
        {
            "address": f"{broker['status']['podIP']}:9644",
            "labels": {"namespace": NS, "cluster": "events", "pod": "events-0"},
        },
    ]
    operator_rules = {"groups": [g for g in load_alert_groups() if g["name"] == "fjord-operator"]}
    assert operator_rules["groups"], "no fjord-operator rule group in dashboards/alerts.yaml"
    (tmp_path / "operator-rules.yaml").write_text(yaml.safe_dump(operator_rules))
    rules = fast_rules(tmp_path / "operator-rules.yaml", tmp_path / "operator-rules-fast.yaml")
    with Prometheus(tools.prometheus, tmp_path / "prometheus", targets=targets, rule_files=[rules]) as prom:
        prom.targets_up()
        started = time.time()
        prom.wait_for_alert("FjordOperatorReconcileErrors", labels={"controller": "topic"}, timeout=120)
        time.sleep(max(0, float(os.environ.get("FJORD_OBSERVE_SECONDS", "20")) - (time.time() - started)))
        dash = next(d for p, d in load_dashboards() if d["uid"] == "fjord-operator")
        empty, _ = queries_without_data(prom, dash)
        assert not empty, "Operator dashboard queries without data:\n" + "\n".join(empty)
        missing, _ = selectors_without_series(prom, operator_rules["groups"])
        assert not missing, "operator alert expressions read series that do not exist:\n" + "\n".join(missing)
        out = Path(os.environ.get("FJORD_DASHBOARD_PNGS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        counts = render(dash, prom, started, time.time(), out / "fjord-operator.png")
        assert all(counts.values()), f"panels without data: {[t for t, n in counts.items() if not n]}"
    kc.kubectl("delete", "topic", "stray", "-n", NS, "--wait=true", timeout=90)


def test_metrics_disabled_removes_the_monitoring_objects(kc):
    kc.kubectl(
        "patch",
        "cluster",
        "events",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"metrics": {"enabled": False}}}),
    )
    kinds = (("servicemonitor", "events"), ("prometheusrule", "events"), ("configmap", "events-dashboards"))
    t0 = time.monotonic()
    kc.wait_for(
        lambda: all(kc.get(k, n, NS, missing_ok=True) is None for k, n in kinds),
        60,
        "the monitoring objects of events deleted",
    )
    print(f"monitoring objects deleted {time.monotonic() - t0:.1f}s after metrics.enabled=false")
    assert kc.get("statefulset", "events", NS, missing_ok=True) is not None


def test_deleted_cluster_leaves_no_resource_series(kc):
    kc.kubectl("delete", "topic", "orders", "-n", NS, "--wait=true", timeout=90)
    kc.kubectl("delete", "cluster", "events", "-n", NS, "--wait=true", timeout=90)
    kc.wait_for(
        lambda: (
            not [
                s
                for s in kc.operator_metrics()
                if s[0] == "fjord_operator_resources" and s[1].get("cluster") == "events"
            ]
        ),
        30,
        "no fjord_operator_resources series of the deleted cluster",
    )
