"""Compressed batches (gzip, snappy, lz4, zstd) from librdkafka and from the Java client
are accepted, stored as received and served back intact, to both clients."""

import pytest

from harness.clients import create_topic, produce, read_partition, unique, watermarks

CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_round_trip(broker, codec):
    topic = create_topic(broker.bootstrap, unique(f"comp-{codec}"), 1)
    values = [f"{codec}-record-{i:05d}-" + "x" * (i % 200) for i in range(3000)]
    produce(broker.bootstrap, topic, values, partition=0, conf={"compression.type": codec, "linger.ms": 20})
    got = read_partition(broker.bootstrap, topic, 0, 0, len(values))
    assert [v.decode() for _, v in got] == values
    assert [o for o, _ in got] == list(range(len(values)))


@pytest.mark.parametrize("codec", CODECS)
def test_java_producer_batches_read_by_librdkafka(broker, tools, codec):
    topic = create_topic(broker.bootstrap, unique(f"jcomp-{codec}"), 1)
    n = 20000
    r = tools.run_class(
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(n),
        "--record-size",
        "200",
        "--throughput",
        "-1",
        "--command-property",
        f"bootstrap.servers={broker.bootstrap}",
        f"compression.type={codec}",
        timeout=180,
    )
    assert f"{n} records sent" in r.stdout, r.stdout + r.stderr
    assert watermarks(broker.bootstrap, topic, 0) == (0, n)
    got = read_partition(broker.bootstrap, topic, 0, 0, n)
    assert len(got) == n and got[-1][0] == n - 1
