"""Retention (time and size), DeleteRecords, and auto.offset.reset for an offset that fell
out of the log."""

import json
import os
import time
from pathlib import Path

import pytest
from conftest import TARGET

from harness.clients import (
    AdminClient,
    Consumer,
    TopicPartition,
    create_topic,
    produce,
    read_partition,
    unique,
    wait_for,
    watermarks,
)

# Kafka 4.x rejects log.segment.bytes below 1 MiB (KIP-1030); Fjord is tested with 100 kB.
SEGMENT_BYTES = 1048576 if TARGET == "kafka" else 100_000
VALUE_BYTES = 1000
PER_SEGMENT = SEGMENT_BYTES // VALUE_BYTES  # ~records per segment (values only)
# Batches much smaller than a segment (librdkafka's default batch.size is 1 MB, which would put
# a whole test's data in one batch and so in one segment).
SMALL_BATCHES = {"batch.size": SEGMENT_BYTES // 10, "linger.ms": 1}

OVERRIDES = {
    "log.segment.bytes": str(SEGMENT_BYTES),
    "log.retention.check.interval.ms": "1000",
    "group.initial.rebalance.delay.ms": "0",
}
if TARGET == "kafka":
    # Kafka renames deleted segments to *.deleted and removes them 60 s later by default.
    OVERRIDES["log.segment.delete.delay.ms"] = "500"


@pytest.fixture(scope="module")
def rbroker(module_broker_factory):
    return module_broker_factory.start(OVERRIDES)


def _values(n, tag):
    return [f"{tag}-{i:08d}-".ljust(VALUE_BYTES, "x") for i in range(n)]


def _disk_bytes(data_dir, topic):
    """Allocated bytes of the topic's files (paths containing the topic name), falling back
    to the whole data dir if no path names the topic. Pending-deletion files don't count."""
    total_topic, total_all = 0, 0
    for root, _dirs, files in os.walk(data_dir):
        for f in files:
            if f.endswith(".deleted"):
                continue
            p = Path(root) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            size = st.st_blocks * 512
            total_all += size
            if topic in str(p.relative_to(data_dir)):
                total_topic += size
    return total_topic if total_topic else total_all


def _files(data_dir, topic):
    """'name:size' of the files whose path names the topic (for failure messages)."""
    out = []
    for root, _dirs, files in os.walk(data_dir):
        for f in sorted(files):
            p = Path(root) / f
            rel = str(p.relative_to(data_dir))
            if topic in rel:
                try:
                    out.append(f"{rel}:{p.stat().st_size}")
                except FileNotFoundError:
                    pass
    return out


def _wait_log_start(broker, topic, ok, timeout, what):
    """Poll the watermarks until ok(low, high); on timeout fail with the last watermarks and
    the partition's files on disk."""
    last = {}

    def cond():
        low, high = watermarks(broker.bootstrap, topic, 0)
        last["wm"] = (low, high)
        return ok(low, high) and (low, high)

    try:
        return wait_for(cond, timeout, interval=0.5, what=what)
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nlast watermarks (low, high): {last.get('wm')}\nfiles: {_files(broker.data_dir, topic)}"
        ) from None


def _first_offset(bootstrap, topic, partition=0, timeout=30):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("first"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition(topic, partition, -2)])  # OFFSET_BEGINNING
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                return m.offset()
        raise AssertionError(f"no record from {topic}[{partition}] within {timeout}s")
    finally:
        c.close()


def test_time_retention_removes_old_segments(rbroker):
    topic = create_topic(rbroker.bootstrap, unique("ret-ms"), 1, config={"retention.ms": "4000"})
    n = 6 * PER_SEGMENT
    produce(rbroker.bootstrap, topic, _values(n, "old"), partition=0, conf=SMALL_BATCHES)
    low0, high0 = watermarks(rbroker.bootstrap, topic, 0)
    assert high0 == n
    disk0 = _disk_bytes(rbroker.data_dir, topic)

    # Everything is older than retention.ms after 4 s: all closed segments must go (the active
    # segment may stay), so the log start moves to within the last ~2 segments.
    _wait_log_start(
        rbroker,
        topic,
        lambda lo, hi: lo >= n - 2 * PER_SEGMENT,
        60,
        f"retention.ms=4000 to move the log start past {n - 2 * PER_SEGMENT} "
        f"(after producing {n} x {VALUE_BYTES} B with segment.bytes={SEGMENT_BYTES}; "
        f"watermarks were {(low0, high0)})",
    )
    low, high = watermarks(rbroker.bootstrap, topic, 0)
    assert high == n, f"high watermark moved from {n} to {high}"
    assert 0 < low <= high
    if low < high:
        assert _first_offset(rbroker.bootstrap, topic) == low, "a consumer from the beginning starts at the log start"

    # The bytes went away on disk too.
    goal = disk0 - (n - 2 * PER_SEGMENT) * VALUE_BYTES // 2
    try:
        wait_for(
            lambda: _disk_bytes(rbroker.data_dir, topic) <= goal,
            30,
            interval=0.5,
            what=f"the topic's files on disk to shrink from {disk0} to <= {goal} bytes",
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\nfiles: {_files(rbroker.data_dir, topic)}") from None

    # The partition keeps working after the deletion.
    produce(rbroker.bootstrap, topic, _values(5, "new"), partition=0)
    low2, high2 = watermarks(rbroker.bootstrap, topic, 0)
    assert high2 == n + 5
    got = read_partition(rbroker.bootstrap, topic, 0, n, n + 5)
    assert [v.decode() for _, v in got] == _values(5, "new")


def test_size_retention_keeps_the_partition_near_retention_bytes(rbroker):
    retention = 3 * SEGMENT_BYTES
    topic = create_topic(rbroker.bootstrap, unique("ret-bytes"), 1, config={"retention.bytes": str(retention)})
    n = 10 * PER_SEGMENT
    produce(rbroker.bootstrap, topic, _values(n, "b"), partition=0, conf=SMALL_BATCHES)

    low, high = _wait_log_start(
        rbroker,
        topic,
        lambda lo, hi: lo > 0 and (hi - lo) * VALUE_BYTES <= retention + SEGMENT_BYTES,
        60,
        f"retention.bytes={retention} to trim the log (produced {n} x {VALUE_BYTES} B, segment.bytes={SEGMENT_BYTES})",
    )
    assert high == n
    kept = (high - low) * VALUE_BYTES
    assert kept >= retention - 2 * SEGMENT_BYTES, (
        f"retention.bytes deleted too much: kept {high - low} records (~{kept} bytes) of retention {retention}"
    )
    assert _first_offset(rbroker.bootstrap, topic) == low


def test_delete_records_moves_log_start(rbroker, tools):
    topic = create_topic(rbroker.bootstrap, unique("delrec"), 1)
    produce(rbroker.bootstrap, topic, [f"r{i}" for i in range(100)], partition=0)
    a = AdminClient({"bootstrap.servers": rbroker.bootstrap})
    futs = a.delete_records([TopicPartition(topic, 0, 40)], operation_timeout=30)
    res = list(futs.values())[0].result(30)
    assert res.low_watermark == 40, f"DeleteRecords low watermark {res.low_watermark}"
    assert watermarks(rbroker.bootstrap, topic, 0) == (40, 100)
    assert _first_offset(rbroker.bootstrap, topic) == 40

    # Kafka's own tool, further up to 60.
    spec = {"version": 1, "partitions": [{"topic": topic, "partition": 0, "offset": 60}]}
    spec_file = rbroker.root / f"{topic}-delete.json"
    spec_file.write_text(json.dumps(spec))
    r = tools.run_class(
        "org.apache.kafka.tools.DeleteRecordsCommand",
        "--bootstrap-server",
        rbroker.bootstrap,
        "--offset-json-file",
        spec_file,
        timeout=90,
    )
    assert "low_watermark: 60" in r.stdout, r.describe()
    assert watermarks(rbroker.bootstrap, topic, 0) == (60, 100)
    got = read_partition(rbroker.bootstrap, topic, 0, 60, 100)
    assert [v.decode() for _, v in got] == [f"r{i}" for i in range(60, 100)]


def _commit_offset(bootstrap, group, topic, offset):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        res = c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        assert all(tp.error is None for tp in res), res
        got = c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset
        assert got == offset, f"committed {got} != {offset}"
    finally:
        c.close()


def _out_of_range_setup(rbroker, tag):
    topic = create_topic(rbroker.bootstrap, unique(tag), 1)
    produce(rbroker.bootstrap, topic, [f"v{i}" for i in range(100)], partition=0)
    group = unique(f"{tag}-group")
    _commit_offset(rbroker.bootstrap, group, topic, 10)
    a = AdminClient({"bootstrap.servers": rbroker.bootstrap})
    list(a.delete_records([TopicPartition(topic, 0, 50)], operation_timeout=30).values())[0].result(30)
    assert watermarks(rbroker.bootstrap, topic, 0) == (50, 100)
    return topic, group


def test_out_of_range_committed_offset_reset_earliest(rbroker):
    topic, group = _out_of_range_setup(rbroker, "oor-earliest")
    c = Consumer(
        {
            "bootstrap.servers": rbroker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < 50:
            assert time.monotonic() < deadline, f"got {len(got)} records: {got[:5]}"
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append((m.offset(), m.value().decode()))
    finally:
        c.close()
    assert got == [(o, f"v{o}") for o in range(50, 100)], (
        f"with committed offset 10 < log start 50 and auto.offset.reset=earliest the consumer "
        f"must start at 50; got offsets {[o for o, _ in got][:10]}..."
    )


def test_out_of_range_committed_offset_reset_latest(rbroker):
    topic, group = _out_of_range_setup(rbroker, "oor-latest")
    stats = {}

    def on_stats(s):
        p = json.loads(s).get("topics", {}).get(topic, {}).get("partitions", {}).get("0")
        if p:
            stats.update(fetch_state=p.get("fetch_state"), next_offset=p.get("next_offset"))

    c = Consumer(
        {
            "bootstrap.servers": rbroker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "statistics.interval.ms": 200,
            "stats_cb": on_stats,
        }
    )
    c.subscribe([topic])
    early = []
    try:
        deadline = time.monotonic() + 60
        # Wait until the consumer has reset to the end of the log and is fetching there.
        while not (stats.get("fetch_state") == "active" and (stats.get("next_offset") or -1) >= 100):
            assert time.monotonic() < deadline, f"consumer never reset to latest; stats {stats}"
            m = c.poll(0.2)
            if m is not None and not m.error():
                early.append(m.offset())
        assert not early, f"auto.offset.reset=latest must not deliver old records, got offsets {early[:10]}"
        produce(rbroker.bootstrap, topic, [f"new{i}" for i in range(5)], partition=0)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 5:
            assert time.monotonic() < deadline, f"got {got}"
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append((m.offset(), m.value().decode()))
    finally:
        c.close()
    assert got == [(100 + i, f"new{i}") for i in range(5)], got
