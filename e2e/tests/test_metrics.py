"""Fjord's HTTP endpoints: /health, /ready, and /metrics in valid Prometheus text format
(checked by promtool) after real traffic; the broker, process and disk series; request
phases; granularity with its patterns and cap; OpenMetrics with trace exemplars."""

import re
import subprocess
import time

import pytest

from harness.clients import Consumer, create_topic, http_get, parse_prometheus, produce, unique, wait_for
from harness.otlp import OtlpSink

pytestmark = pytest.mark.fjord_only


def _traffic(broker):
    topic = create_topic(broker.bootstrap, unique("metrics"), 2)
    produce(broker.bootstrap, topic, [f"m{i}" for i in range(500)], keys=[f"k{i}" for i in range(500)])
    group = unique("metrics-group")
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
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
    assert rc == 0, (
        f"promtool check metrics exit {rc}\n--- promtool output ---\n{p.stdout[-4000:]}"
        f"{p.stderr[-4000:]}\n--- /metrics (first 1500 chars) ---\n{body[:1500]}"
    )
    # The traffic is visible: the group's lag series exists for the topic.
    lag = [
        (lab, v)
        for n, lab, v in samples
        if n == "fjord_consumer_group_lag_records" and lab.get("group") == group and lab.get("topic") == topic
    ]
    assert lag, (
        f"no fjord_consumer_group_lag_records for group {group} topic {topic}; "
        f"lag lines: {[line for line in body.splitlines() if 'lag' in line][:10]}"
    )


def _samples(broker, accept=None):
    status, body = http_get(broker.metrics_url, headers={"Accept": accept} if accept else None)
    assert status == 200, body[:500]
    return parse_prometheus(body), body


def _one(samples, name, **labels):
    got = [(lab, v) for n, lab, v in samples if n == name and all(lab.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, f"{name}{labels}: {got}"
    return got[0]


def test_broker_process_and_disk_series(broker):
    _traffic(broker)
    samples, _ = _samples(broker)
    info, v = _one(samples, "fjord_broker_info")
    assert v == 1 and info["node_id"] == "1" and info["cluster_id"] and info["version"] and "broker" in info["roles"], (
        info
    )
    assert _one(samples, "fjord_active_brokers")[1] == 1 and _one(samples, "fjord_fenced_brokers")[1] == 0
    assert _one(samples, "process_cpu_seconds_total")[1] > 0
    assert _one(samples, "process_resident_memory_bytes")[1] > 1 << 20
    assert 0 < _one(samples, "process_open_fds")[1] < _one(samples, "process_max_fds")[1]
    ((lab, free),) = [(lab, v) for n, lab, v in samples if n == "fjord_log_dir_free_bytes"]
    assert lab["dir"] == str(broker.data_dir)
    assert 0 < free <= _one(samples, "fjord_log_dir_capacity_bytes", dir=lab["dir"])[1]
    assert _one(samples, "fjord_connections_active", listener="PLAINTEXT")[1] >= 0
    assert _one(samples, "fjord_connections_accepted_total", listener="PLAINTEXT")[1] >= 1
    assert _one(samples, "fjord_requests_in_flight")[1] >= 0
    for side in ("leader", "follower"):
        assert _one(samples, "fjord_replication_throttled_seconds_total", side=side)[1] == 0


def test_request_phases_show_the_long_poll_as_remote(broker):
    topic = create_topic(broker.bootstrap, unique("phases"), 1)
    before = {
        lab["phase"]: v
        for n, lab, v in _samples(broker)[0]
        if n == "fjord_request_phase_seconds_sum" and lab.get("api") == "fetch"
    }
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique("phases"),
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 500,
        }
    )
    c.subscribe([topic])
    c.consume(1, timeout=4)  # nothing to read: every fetch waits out its 500 ms
    c.close()
    after = {
        lab["phase"]: v
        for n, lab, v in _samples(broker)[0]
        if n == "fjord_request_phase_seconds_sum" and lab.get("api") == "fetch"
    }
    waited = after["remote"] - before.get("remote", 0)
    worked = after["local"] - before.get("local", 0)
    assert waited > 0.9, f"long-poll time should count as remote: {before} -> {after}"
    assert worked < waited / 10, f"local time should not include the wait: {before} -> {after}"
    assert set(after) == {"queue", "local", "remote", "send"}


def test_topic_granularity_by_default(broker):
    topic, group = _traffic(broker)
    samples, _ = _samples(broker)
    assert not [s for s in samples if s[0].startswith("fjord_partition_")], "per-partition series are opt-in"
    lab, v = _one(samples, "fjord_consumer_group_lag_records", group=group, topic=topic)
    assert "partition" not in lab and v == 200
    lab, _ = _one(samples, "fjord_log_size_bytes", topic=topic)
    assert "partition" not in lab
    assert _one(samples, "fjord_topic_partitions", topic=topic)[1] == 2


def test_partition_granularity_patterns_and_cap(broker_factory):
    b = broker_factory.start(
        {
            "group.initial.rebalance.delay.ms": "0",
            "fjord.metrics.granularity": "partition",
            "fjord.metrics.partition.allow": "fine-.*",
            "fjord.metrics.partition.deny": "fine-denied-.*",
            "fjord.metrics.max.partition.series": "8",
        }
    )
    fine = create_topic(b.bootstrap, unique("fine"), 2)  # 2 partitions x 3 series: fits in 8
    denied = create_topic(b.bootstrap, unique("fine-denied"), 2)
    coarse = create_topic(b.bootstrap, unique("coarse"), 2)
    over = create_topic(b.bootstrap, unique("fine-zz"), 2)  # would need 6 more: over the cap
    samples, _ = _samples(b)
    assert {
        lab["partition"] for n, lab, _ in samples if n == "fjord_partition_high_watermark" and lab["topic"] == fine
    } == {"0", "1"}
    for t in (denied, coarse, over):
        lab, _ = _one(samples, "fjord_log_size_bytes", topic=t)
        assert "partition" not in lab, (t, lab)
        assert not [s for s in samples if s[0] == "fjord_partition_high_watermark" and s[1]["topic"] == t]
    assert _one(samples, "fjord_metrics_series_dropped_total")[1] >= 0
    samples, _ = _samples(b)
    assert _one(samples, "fjord_metrics_series_dropped_total")[1] >= 6, "the capped topic's series are counted"


def test_openmetrics_by_accept_with_trace_exemplars(broker_factory, tools):
    sink = OtlpSink()
    try:
        b = broker_factory.start({"fjord.tracing.otlp.endpoint": sink.url, "fjord.tracing.sample.ratio": "1.0"})
        topic = create_topic(b.bootstrap, unique("traced"), 1)
        produce(b.bootstrap, topic, [f"t{i}" for i in range(20)])
        status, om = http_get(b.metrics_url, headers={"Accept": "application/openmetrics-text;version=1.0.0"})
        assert status == 200 and om.endswith("# EOF\n"), om[-200:]
        ids = re.findall(
            r'^fjord_request_duration_seconds_bucket\{[^}]*api="produce"[^}]*\} \d+ # \{trace_id="([0-9a-f]{32})"\}',
            om,
            re.M,
        )
        assert ids, (
            "no exemplar on the produce latency buckets:\n"
            + "\n".join(line for line in om.splitlines() if "request_duration" in line)[:3000]
        )
        status, text = http_get(b.metrics_url)
        assert "trace_id" not in text and "# EOF" not in text, "Prometheus text 0.0.4 carries no exemplars"
        p = subprocess.run([tools.promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        # The exemplar's trace was exported: its id is in a body the collector received.
        wanted = {bytes.fromhex(i) for i in ids}
        wait_for(
            lambda: any(any(w in body for w in wanted) for body in sink.traces()),
            20,
            interval=0.5,
            what="the exemplar's trace to reach the OTLP receiver",
        )
    finally:
        sink.close()
