"""Topic configs through the Admin API (librdkafka): describe shows Kafka's keys and their
sources, alter and incremental alter change them, and a LogAppendTime topic stamps records
with the broker's clock."""

import time

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from harness.clients import Consumer, Producer, admin, create_topic, unique


def describe(bootstrap, topic):
    r = ConfigResource(ResourceType.TOPIC, topic)
    a = admin(bootstrap)  # keep the client alive until the future resolves
    return a.describe_configs([r])[r].result(30)


def test_describe_and_alter_topic_configs(broker):
    topic = create_topic(broker.bootstrap, unique("cfg"), 1, config={"retention.ms": "3600000"})
    cfg = describe(broker.bootstrap, topic)
    for key in (
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "cleanup.policy",
        "min.insync.replicas",
        "max.message.bytes",
        "message.timestamp.type",
    ):
        assert key in cfg, f"{key} missing from DescribeConfigs: {sorted(cfg)}"
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == 1, "an override reports as a topic config"  # TOPIC_CONFIG
    assert cfg["cleanup.policy"].value == "delete"

    a = admin(broker.bootstrap)
    r = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    a.incremental_alter_configs([r])[r].result(30)
    cfg = describe(broker.bootstrap, topic)
    assert cfg["retention.bytes"].value == "1048576"
    assert cfg["retention.ms"].value == str(7 * 24 * 3600 * 1000), "deleting an override restores the default"

    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)],
    )
    try:
        a.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("an invalid value was accepted")
    except Exception as e:  # KafkaException with INVALID_CONFIG
        assert "INVALID_CONFIG" in str(e) or "Invalid value" in str(e), e


def test_log_append_time_topic(broker):
    topic = create_topic(broker.bootstrap, unique("lat"), 1, config={"message.timestamp.type": "LogAppendTime"})
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, value=b"old", timestamp=1000)
    assert p.flush(30) == 0
    before = int(time.time() * 1000)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("lat"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.monotonic() + 30
    msg = None
    while msg is None and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            msg = m
    c.close()
    assert msg is not None, "no record consumed"
    ts_type, ts = msg.timestamp()
    assert ts_type == TIMESTAMP_LOG_APPEND_TIME, msg.timestamp()
    assert abs(ts - before) < 60_000, f"append time {ts} is not the broker's clock (~{before})"
