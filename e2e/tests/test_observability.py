"""Observability, end to end: a real Prometheus (built from its Go module) scrapes a three-node
`fjord dev` cluster under produce and consume load, with one group keeping up and one lagging.
Then:
- every query of every broker dashboard panel parses and returns data;
- every alert expression parses, and every series it reads exists;
- the consumer-lag alert fires for the lagging group, and only for it;
- every dashboard renders to a picture with data in every panel (into docs/dashboards/ when
  FJORD_DASHBOARD_PNGS names that folder: e2e/dashboards/render);
- the under-replicated-partitions alert (and broker-down) fire when a broker is killed -9.

The rules are dashboards/alerts.yaml with every `for:` cut to a few seconds, so the test does
not wait out durations meant for production; `promtool test rules` checks the real ones. The
lagging group reads records that were produced with timestamps 15 minutes old (a replay), so
its lag in seconds is over the alert's 300 s threshold from the start, as the real rule wants.

The operator's dashboard and alerts are checked against a running operator in
test_operator_monitoring.py."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from harness.clients import create_topic, wait_for
from harness.dashboards import load_alert_groups, load_dashboards, queries_without_data, render
from harness.devcluster import DevCluster
from harness.prometheus import Prometheus, fast_rules, selectors_without_series

pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
LABELS = {"namespace": "fjord-e2e", "cluster": "dev"}
LAGGING, KEEPING_UP = "audit-archiver", "billing"
OPERATOR_GROUP = "fjord-operator"
# Alerts on series a broker exports only once it has SASL listeners, which the dev cluster has
# not: test_metrics_contract.py checks their names are exported after a SASL login, and
# dashboards/tests/alerts.test.yaml that they fire; here their expressions must parse.
SASL_ONLY = {"FjordAuthenticationFailures"}


class Load:
    """Producers on `orders` and `audit`, the `billing` group reading both and keeping up,
    and the `audit-archiver` group reading `audit` at one record every two seconds."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._produce, self._keep_up, self._lag)]

    def start(self):
        old = time.time() * 1000 - 15 * 60 * 1000
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(300):
            p.produce("audit", value=b"replayed %d" % i, key=b"k%d" % i, timestamp=int(old + i * 100))
        assert p.flush(60) == 0
        for t in self.threads:
            t.start()

    def _produce(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        i = 0
        while not self.stop.is_set():
            for topic in ("orders", "audit"):
                p.produce(
                    topic,
                    value=b"x" * 512,
                    key=b"k%d" % i,
                    on_delivery=lambda err, msg: err and self.errors.append(str(err)),
                )
            i += 1
            p.poll(0)
            time.sleep(0.005)
        p.flush(30)

    def _consumer(self, group, topics, **conf):
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "auto.commit.interval.ms": 1000,
                **conf,
            }
        )
        c.subscribe(topics)
        return c

    def _keep_up(self):
        c = self._consumer(KEEPING_UP, ["orders", "audit"])
        while not self.stop.is_set():
            c.consume(500, timeout=0.2)
        c.close()

    def _lag(self):
        c = self._consumer(LAGGING, ["audit"], **{"enable.auto.commit": False})
        while not self.stop.is_set():
            for m in c.consume(1, timeout=0.5):
                if not m.error():
                    try:
                        c.commit(m, asynchronous=False)
                    except KafkaException:
                        pass  # refused during a rebalance (a broker was killed): commit the next one
            self.stop.wait(2)
        c.close()

    def close(self):
        self.stop.set()
        for t in self.threads:
            if t.is_alive():
                t.join(30)


@pytest.fixture(scope="module")
def observed(tools, e2e_tmp):
    root = Path(e2e_tmp) / "observability"
    root.mkdir(parents=True, exist_ok=True)
    dev = DevCluster(os.environ["FJORD_BIN"], root)
    load = prom = None
    try:
        dev.wait_ready()
        create_topic(dev.bootstrap, "orders", 6, replication_factor=3)
        create_topic(dev.bootstrap, "audit", 3, replication_factor=3)
        targets = [{"address": a, "labels": {**LABELS, "pod": f"fjord-dev-{i + 1}"}} for i, a in enumerate(dev.http)]
        prom = Prometheus(
            tools.prometheus,
            root / "prometheus",
            targets=targets,
            scrape_interval="1s",
            rule_files=[fast_rules(REPO / "dashboards" / "alerts.yaml", root / "alerts-fast.yaml")],
        )
        prom.start()
        prom.targets_up()
        load = Load(dev.bootstrap)
        load.start()
        started = time.time()
        # Rates need a few scrapes, the lag gauges a first commit of each group.
        wait_for(
            lambda: (
                prom.query(f'fjord_consumer_group_lag_seconds{{group="{LAGGING}"}}')
                and prom.query(f'fjord_consumer_group_commits_total{{group="{KEEPING_UP}"}}')
            ),
            90,
            interval=1,
            what="both groups' series in Prometheus",
        )
        # Long enough for rates and predictions; e2e/dashboards/render asks for more history.
        time.sleep(max(0, float(os.environ.get("FJORD_OBSERVE_SECONDS", "25")) - (time.time() - started)))
        yield dev, load, prom, started
    finally:
        try:
            if load:
                load.close()
        finally:
            try:
                if prom:
                    prom.stop()
            finally:
                dev.close()


def _broker_dashboards():
    return [(p, d) for p, d in load_dashboards() if "fjord_operator_" not in p.read_text()]


def test_every_dashboard_query_returns_data(observed):
    _, load, prom, _ = observed
    dashboards = _broker_dashboards()
    assert len(dashboards) >= 3, [p.name for p, _ in dashboards]
    empty, checked = [], 0
    for path, dash in dashboards:
        e, n = queries_without_data(prom, dash, prefix=f"{path.name} / ")
        empty += e
        checked += n
    assert not empty, f"{len(empty)} of {checked} panel queries returned no data:\n" + "\n".join(empty)
    assert not load.errors, load.errors[:5]


def test_every_alert_expression_parses_and_reads_existing_series(observed):
    _, _, prom, _ = observed
    # operator series: test_operator_monitoring.py
    groups = [g for g in load_alert_groups() if g["name"] != OPERATOR_GROUP]
    sasl_only = [r for g in groups for r in g["rules"] if r["alert"] in SASL_ONLY]
    assert {r["alert"] for r in sasl_only} == SASL_ONLY, sasl_only
    for rule in sasl_only:
        prom.query(rule["expr"])  # PromQueryError if it does not parse
    groups = [{**g, "rules": [r for r in g["rules"] if r["alert"] not in SASL_ONLY]} for g in groups]
    # parse: each expression is queried too (PromQueryError if it does not parse)
    missing, checked = selectors_without_series(prom, groups, parse=True)
    assert checked >= 15, checked
    assert not missing, "alert expressions read series that do not exist:\n" + "\n".join(missing)
    rule_health = [
        (r["name"], r.get("lastError")) for g in prom.rules() for r in g["rules"] if r.get("health") == "err"
    ]
    assert not rule_health, rule_health


def test_lag_alert_fires_for_the_lagging_group(observed):
    _, _, prom, _ = observed
    alert = prom.wait_for_alert(
        "FjordConsumerLagHigh", labels={"group": LAGGING, "topic": "audit", **LABELS}, timeout=90
    )
    assert float(alert["value"]) > 300, alert
    assert not [a for a in prom.alerts() if a["labels"].get("group") == KEEPING_UP], prom.alerts()
    # The lagging group moves while its lag grows: Burrow's warn, not stall.
    status = prom.query(f'max(fjord_consumer_group_status{{group="{LAGGING}"}})')
    assert status and float(status[0]["value"][1]) == 1, status


def test_dashboards_render_with_data_in_every_panel(observed, tmp_path):
    _, _, prom, started = observed
    out = Path(os.environ.get("FJORD_DASHBOARD_PNGS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    end = time.time()
    for _, dash in _broker_dashboards():
        png = out / f"{dash['uid']}.png"
        counts = render(dash, prom, started, end, png)
        assert png.stat().st_size > 10_000, png
        assert all(counts.values()), f"{dash['uid']}: panels without data: {[t for t, n in counts.items() if not n]}"


def test_under_replicated_alert_fires_when_a_broker_is_killed(observed):
    dev, _, prom, _ = observed
    os.kill(dev.node_pid(3), signal.SIGKILL)
    prom.wait_for_alert("FjordUnderReplicatedPartitions", labels=LABELS, timeout=90)
    prom.wait_for_alert("FjordBrokerDown", labels=LABELS, timeout=60)
