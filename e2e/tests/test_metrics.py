"""Fjord's HTTP endpoints: /health, /ready, and /metrics in valid Prometheus text format
(checked by promtool) after real traffic."""
import subprocess
import time

import pytest

from kclients import Consumer, create_topic, http_get, parse_prometheus, produce, unique

pytestmark = pytest.mark.fjord_only


def _traffic(broker):
    topic = create_topic(broker.bootstrap, unique("metrics"), 2)
    produce(broker.bootstrap, topic, [f"m{i}" for i in range(500)], keys=[f"k{i}" for i in range(500)])
    group = unique("metrics-group")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    n = 0
    deadline = time.monotonic() + 60
    while n < 300 and time.monotonic() < deadline:
        n += sum(1 for m in c.consume(300 - n, timeout=0.5) if not m.error())
    assert n == 300, f"consumed {n} of 300"
    c.commit(asynchronous=False)
    c.close()
    return topic, group


def test_health_and_ready(broker):
    for path in ("/health", "/ready"):
        status, body = http_get(broker.http_base + path)
        assert status == 200, f"GET {path}: {status} {body[:500]}"


def test_metrics_pass_promtool_after_traffic(broker, tools):
    promtool = tools.promtool
    topic, group = _traffic(broker)
    status, body = http_get(broker.metrics_url)
    assert status == 200, f"GET /metrics: {status} {body[:500]}"
    samples = parse_prometheus(body)
    names = {name for name, _, _ in samples}
    assert any(n.startswith("fjord_") for n in names), f"no fjord_* metrics in /metrics:\n{body[:2000]}"
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    rc = p.returncode
    assert rc == 0, (f"promtool check metrics exit {rc}\n--- promtool output ---\n{p.stdout[-4000:]}"
                     f"{p.stderr[-4000:]}\n--- /metrics (first 1500 chars) ---\n{body[:1500]}")
    # The traffic is visible: the group's lag series exists for the topic.
    lag = [(lab, v) for n, lab, v in samples if n == "fjord_consumer_group_lag_records"
           and lab.get("group") == group and lab.get("topic") == topic]
    assert lag, (f"no fjord_consumer_group_lag_records for group {group} topic {topic}; "
                 f"lag lines: {[line for line in body.splitlines() if 'lag' in line][:10]}")
