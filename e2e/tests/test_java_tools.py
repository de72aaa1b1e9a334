"""Apache Kafka's own command-line tools (run through e2e/kafka/run-class) against the broker."""

import json
import re
import time
from collections import defaultdict

import pytest

from harness.clients import (
    Consumer,
    TopicPartition,
    create_topic,
    http_get,
    parse_prometheus,
    produce,
    unique,
    wait_for,
    watermarks,
)

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
ACL_COMMAND = "org.apache.kafka.tools.AclCommand"  # kafka-acls.sh
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
VERIFIABLE_PRODUCER = "org.apache.kafka.tools.VerifiableProducer"
VERIFIABLE_CONSUMER = "org.apache.kafka.tools.VerifiableConsumer"

ERROR_LINE = re.compile(r"\bERROR\b|Exception|\bFATAL\b")


def _describe_partitions(tools, bootstrap, topic):
    r = tools.run_class(TOPIC_COMMAND, "--bootstrap-server", bootstrap, "--describe", "--topic", topic, timeout=90)
    rows = {}
    for line in r.stdout.splitlines():
        m = re.search(
            r"Topic:\s*(\S+)\s+Partition:\s*(\d+)\s+Leader:\s*(-?\d+|none)\s+Replicas:\s*([\d,]*)"
            r"\s+Isr:\s*([\d,]*)",
            line,
        )
        if m and m.group(1) == topic:
            rows[int(m.group(2))] = {"leader": m.group(3), "replicas": m.group(4), "isr": m.group(5)}
    count = re.search(r"PartitionCount:\s*(\d+)", r.stdout)
    return rows, int(count.group(1)) if count else None, r


def test_topic_command_create_describe_alter(broker, tools):
    topic = unique("tc")
    r = tools.run_class(
        TOPIC_COMMAND,
        "--bootstrap-server",
        broker.bootstrap,
        "--create",
        "--topic",
        topic,
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        timeout=90,
    )
    assert f"Created topic {topic}." in r.stdout, r.describe()

    rows, count, r = _describe_partitions(tools, broker.bootstrap, topic)
    assert count == 3, f"PartitionCount\n{r.describe()}"
    assert sorted(rows) == [0, 1, 2], r.describe()
    for p, row in rows.items():
        assert row["leader"] == "1" and row["replicas"] == "1" and row["isr"] == "1", (p, row, r.stdout)

    r = tools.run_class(
        TOPIC_COMMAND,
        "--bootstrap-server",
        broker.bootstrap,
        "--alter",
        "--topic",
        topic,
        "--partitions",
        "5",
        timeout=90,
    )
    assert not ERROR_LINE.search(r.stdout + r.stderr), r.describe()

    def five():
        rows, count, r = _describe_partitions(tools, broker.bootstrap, topic)
        return (
            count == 5 and sorted(rows) == [0, 1, 2, 3, 4] and all(row["leader"] == "1" for row in rows.values())
        ) and r

    r = wait_for(five, 60, interval=1, what="describe to show 5 partitions after --alter")

    r = tools.run_class(TOPIC_COMMAND, "--bootstrap-server", broker.bootstrap, "--list", timeout=90)
    assert topic in r.stdout.split(), r.describe()


def test_acl_command_says_security_is_disabled_without_an_authorizer(broker, tools):
    """Without an authorizer, Kafka answers the ACL APIs SECURITY_DISABLED; so does Fjord, which
    has none yet, rather than storing rules nothing would enforce."""
    for args in (
        ["--list"],
        ["--add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "orders"],
        ["--remove", "--force", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "orders"],
    ):
        r = tools.run_class(ACL_COMMAND, "--bootstrap-server", broker.bootstrap, *args, check=False, timeout=60)
        out = r.stdout + r.stderr
        assert "SecurityDisabledException" in out, f"kafka-acls {' '.join(args)}\n{r.describe()}"


def test_console_producer_consumer_round_trip(broker, tools):
    topic = create_topic(broker.bootstrap, unique("console"), 1)
    lines = [f"console message {i}" for i in range(50)]
    tools.run_class(
        CONSOLE_PRODUCER,
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        input="\n".join(lines) + "\n",
        timeout=90,
    )
    r = tools.run_class(
        CONSOLE_CONSUMER,
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        str(len(lines)),
        "--timeout-ms",
        "60000",
        timeout=120,
    )
    assert r.stdout.splitlines() == lines, r.describe()
    assert f"Processed a total of {len(lines)} messages" in r.stderr, r.describe()


@pytest.fixture(scope="module")
def lagging_group(broker):
    """A group that consumed and committed part of a 2-partition topic, then went away.
    Returns (group, topic, {partition: expected lag})."""
    topic = create_topic(broker.bootstrap, unique("lag"), 2)
    for p in range(2):
        produce(broker.bootstrap, topic, [f"{p}-{i}" for i in range(50)], partition=p)
    group = unique("lag-group")
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    consumed = []
    deadline = time.monotonic() + 60
    while len(consumed) < 60:
        assert time.monotonic() < deadline, f"consumed only {len(consumed)} of 60 records in 60s"
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        consumed.append((m.partition(), m.offset()))
    next_off = {p: 0 for p in range(2)}
    for p, o in consumed:
        next_off[p] = max(next_off[p], o + 1)
    res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in next_off.items()], asynchronous=False)
    assert all(tp.error is None for tp in res), res
    c.close()
    return group, topic, {p: 50 - o for p, o in next_off.items()}


def _consumer_group_describe(tools, bootstrap, group):
    r = tools.run_class(
        CONSUMER_GROUP_COMMAND, "--bootstrap-server", bootstrap, "--describe", "--group", group, timeout=90
    )
    lines = r.stdout.splitlines()
    hdr_i = next((i for i, line in enumerate(lines) if "LAG" in line.split()), None)
    assert hdr_i is not None, f"no LAG column\n{r.describe()}"
    header = lines[hdr_i].split()
    rows = []
    for line in lines[hdr_i + 1 :]:
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group:
            rows.append(dict(zip(header, cols, strict=False)))
    return rows, r


def test_consumer_group_command_shows_lag(broker, tools, lagging_group):
    group, topic, expected = lagging_group
    rows, r = _consumer_group_describe(tools, broker.bootstrap, group)
    lag = {int(row["PARTITION"]): row for row in rows if row["TOPIC"] == topic}
    assert sorted(lag) == [0, 1], r.describe()
    for p, row in lag.items():
        assert row["LOG-END-OFFSET"] == "50", (p, row, r.stdout)
        assert row["CURRENT-OFFSET"] == str(50 - expected[p]), (p, row, r.stdout)
        assert row["LAG"] == str(expected[p]), (p, row, r.stdout)


@pytest.mark.fjord_only
def test_consumer_group_lag_metric_matches_tool(broker, tools, lagging_group):
    group, topic, expected = lagging_group
    rows, r = _consumer_group_describe(tools, broker.bootstrap, group)
    tool_lag = {int(row["PARTITION"]): float(row["LAG"]) for row in rows if row["TOPIC"] == topic}
    assert tool_lag == {p: float(v) for p, v in expected.items()}, r.describe()

    last = {}

    def metric_matches():
        status, body = http_get(broker.metrics_url)
        assert status == 200, f"/metrics returned {status}"
        samples = [
            (lab, v)
            for name, lab, v in parse_prometheus(body)
            if name == "fjord_consumer_group_lag_records" and lab.get("group") == group and lab.get("topic") == topic
        ]
        last["samples"] = samples
        last["body_lines"] = [line for line in body.splitlines() if "consumer_group_lag" in line][:20]
        # Topic granularity (the default): one series per (group, topic), the sum over
        # partitions. test_consumer_lag.py checks the per-partition series.
        return len(samples) == 1 and "partition" not in samples[0][0] and samples[0][1] == sum(tool_lag.values())

    try:
        wait_for(metric_matches, 30, interval=1, what="fjord_consumer_group_lag_records to match the tool")
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nConsumerGroupCommand lag: {tool_lag}\nmetric samples: {last.get('samples')}\n"
            f"lag lines in /metrics: {last.get('body_lines')}"
        ) from None


def test_producer_performance_one_million(broker, tools):
    topic = create_topic(broker.bootstrap, unique("perf"), 3)
    r = tools.run_class(
        PRODUCER_PERFORMANCE,
        "--topic",
        topic,
        "--num-records",
        "1000000",
        "--record-size",
        "100",
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={broker.bootstrap}",
        timeout=400,
    )
    errors = [line for line in (r.stdout + r.stderr).splitlines() if ERROR_LINE.search(line)]
    assert not errors, f"error lines: {errors[:20]}\n{r.describe()}"
    final = re.search(r"^1000000 records sent, ([\d.]+) records/sec .*$", r.stdout, re.M)
    assert final, f"no final '1000000 records sent' line\n{r.describe()}"
    print(final.group(0))
    total = sum(h - lo for lo, h in (watermarks(broker.bootstrap, topic, p) for p in range(3)))
    assert total == 1_000_000, f"the broker holds {total} records, expected 1000000"


def test_verifiable_producer_and_consumer_lose_nothing(broker, tools):
    topic = create_topic(broker.bootstrap, unique("verifiable"), 3)
    n = 10_000
    r = tools.run_class(
        VERIFIABLE_PRODUCER,
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        "--max-messages",
        str(n),
        "--acks",
        "-1",
        timeout=180,
    )
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    acked = {(e["partition"], e["offset"]): e["value"] for e in events if e.get("name") == "producer_send_success"}
    send_errors = [e for e in events if e.get("name") == "producer_send_error"]
    assert len(acked) == n, f"{len(acked)} of {n} acked; errors {send_errors[:5]}\n{r.describe(3000)}"
    assert not send_errors, send_errors[:10]
    assert sorted(int(v) for v in acked.values()) == list(range(n))

    group = unique("verifiable-group")
    r = tools.run_class(
        VERIFIABLE_CONSUMER,
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        "--group-id",
        group,
        "--max-messages",
        str(n),
        "--verbose",
        "--reset-policy",
        "earliest",
        timeout=180,
    )
    cev = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    names = defaultdict(int)
    for e in cev:
        names[e.get("name")] += 1
    consumed = defaultdict(list)
    for e in cev:
        if e.get("name") == "record_data":
            consumed[(e["partition"], e["offset"])].append(e["value"])
    missing = [k for k in acked if k not in consumed]
    assert not missing, (
        f"{len(missing)} acked records not consumed, e.g. {sorted(missing)[:10]}; "
        f"events {dict(names)}\n{r.describe(3000)}"
    )
    wrong = [(k, acked[k], consumed[k]) for k in acked if consumed[k][0] != acked[k]]
    assert not wrong, f"consumed values differ: {wrong[:10]}"
    dups = {k: v for k, v in consumed.items() if len(v) > 1}
    assert not dups, f"records consumed twice by a single-member group: {list(dups.items())[:10]}"
    assert names["partitions_assigned"] >= 1 and names["offsets_committed"] >= 1, dict(names)
    commits = [e for e in cev if e.get("name") == "offsets_committed"]
    failed = [e for e in commits if not e.get("success", True)]
    assert not failed, f"VerifiableConsumer commit failures: {failed[:5]}"
