"""ListOffsets: earliest, latest and by timestamp (offsetsForTimes), exact to the record
for uncompressed batches."""

from harness.clients import Consumer, Producer, TopicPartition, create_topic, unique, watermarks


def test_offsets_for_times(broker):
    topic = create_topic(broker.bootstrap, unique("lo"), 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    for i in range(1000):
        p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0
    assert watermarks(broker.bootstrap, topic, 0) == (0, 1000)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("lo")})
    try:
        for ts, want in [
            (1_700_000_000_000, 0),
            (1_700_000_000_500, 500),
            (1_700_000_000_999, 999),
            (1_800_000_000_000, -1),
        ]:
            got = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0]
            assert got.error is None, got.error
            assert got.offset == want, f"timestamp {ts}: offset {got.offset}, want {want}"
    finally:
        c.close()
