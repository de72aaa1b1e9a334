"""read_committed consumers see every record: with no transactions the last stable offset
is the high watermark."""

from harness.clients import create_topic, produce, read_partition, unique, watermarks


def test_read_committed_reads_everything(broker):
    topic = create_topic(broker.bootstrap, unique("rc"), 1)
    values = [f"v{i}" for i in range(500)]
    produce(broker.bootstrap, topic, values, partition=0)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 500)
    got = read_partition(broker.bootstrap, topic, 0, 0, 500, conf={"isolation.level": "read_committed"})
    assert [v.decode() for _, v in got] == values
