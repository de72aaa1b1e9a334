"""Metric names are an API: docs/metrics.md lists exactly what the broker exports after
real traffic, and the dashboards and alert rules use only those names."""

import re
import time
from pathlib import Path

import pytest

from harness import kproto
from harness.broker import EXTRA_LISTENERS
from harness.clients import Consumer, Producer, create_topic, http_get, parse_prometheus, produce, unique

pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def documented(table="metrics"):
    """Names in a table of docs/metrics.md: `metrics` (the broker's) or `operator-metrics`."""
    text = (REPO / "docs" / "metrics.md").read_text()
    block = text.split(f"<!-- {table}:begin -->")[1].split(f"<!-- {table}:end -->")[0]
    names = re.findall(r"^\| `((?:fjord|process)_[a-z0-9_]+)` \|", block, re.M)
    assert names, f"no metric rows found between the {table} markers of docs/metrics.md"
    return set(names)


def documented_histograms():
    text = (REPO / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `((?:fjord|process)_[a-z0-9_]+)` \| histogram \|", text, re.M))


def family(name, histograms):
    for s in SUFFIXES:
        if name.endswith(s) and name[: -len(s)] in histograms:
            return name[: -len(s)]
    return name


@pytest.fixture(scope="module")
def exported(module_broker_factory):
    """Sample names after traffic that touches every metric: produce, consume, commit, an
    open transaction, a SASL login; at partition granularity, so the opt-in per-partition
    series are there too."""
    broker = module_broker_factory.start(
        {
            "group.initial.rebalance.delay.ms": "0",
            "fjord.metrics.granularity": "partition",
            EXTRA_LISTENERS: "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
            ),
        }
    )
    host, port = broker.listeners["SASL_PLAINTEXT"].rsplit(":", 1)
    with kproto.RawConn(host, int(port)) as sasl:
        _, err, _ = kproto.parse_sasl_handshake_response(sasl.request(kproto.sasl_handshake_request(1, "PLAIN")))
        token = kproto.plain_token("alice", "alice-secret")
        _, auth_err, *_ = kproto.parse_sasl_authenticate_response(
            sasl.request(kproto.sasl_authenticate_request(2, token)), 2
        )
        assert (err, auth_err) == (0, 0), (err, auth_err)
    topic = create_topic(broker.bootstrap, unique("contract"), 2)
    produce(broker.bootstrap, topic, [f"v{i}" for i in range(200)], keys=[f"k{i}" for i in range(200)])
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique("contract-group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    n, deadline = 0, time.monotonic() + 60
    while n < 100 and time.monotonic() < deadline:
        n += sum(1 for m in c.consume(100 - n, timeout=0.5) if not m.error())
    c.commit(asynchronous=False)
    c.close()
    # A transaction left open: the last stable offset lags the high watermark.
    txn = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique("contract-txn")})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce(topic, b"open", partition=0)
    assert txn.flush(30) == 0
    status, body = http_get(broker.metrics_url)
    assert status == 200, body[:500]
    hist = set(re.findall(r"^# TYPE (fjord_[a-z0-9_]+) histogram", body, re.M))
    return {family(n, hist) for n, _, _ in parse_prometheus(body) if n.startswith(("fjord_", "process_"))}, body


def test_docs_list_exactly_what_is_exported(exported):
    names, body = exported
    docs = documented()
    missing_from_docs = names - docs
    not_exported = docs - names
    assert not missing_from_docs, f"exported but not in docs/metrics.md: {sorted(missing_from_docs)}"
    assert not not_exported, f"in docs/metrics.md but not exported: {sorted(not_exported)}\n{body[:3000]}"


def test_dashboards_and_alerts_use_only_documented_names(exported):
    # The operator's alerts use its own series (test_operator.py checks those are exported).
    docs = documented() | documented("operator-metrics")
    files = sorted((REPO / "dashboards").glob("*.json")) + sorted((REPO / "dashboards").glob("*.yaml"))
    files += sorted((REPO / "charts").rglob("*.json")) + sorted(
        (REPO / "charts" / "fjord-operator" / "files").rglob("*.yaml")
    )
    assert files, "no dashboards or alert rules found"
    used = {}
    for f in files:
        for n in re.findall(r"\b(?:fjord|process)_[a-z0-9_]+", f.read_text()):
            used.setdefault(family(n, documented_histograms()), set()).add(f.name)
    unknown = {n: sorted(fs) for n, fs in used.items() if n not in docs}
    assert not unknown, f"dashboards/alerts use names the broker does not export: {unknown}"
    assert len(used) >= 8, f"dashboards use suspiciously few metrics: {sorted(used)}"
