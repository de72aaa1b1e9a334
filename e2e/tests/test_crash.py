"""Crash safety: SIGKILL the broker mid-stream, restart it on the same data, check that
every acknowledged record and every committed offset survived."""

import subprocess
import time
from collections import defaultdict
from pathlib import Path

from conftest import DEFAULT_OVERRIDES

from harness.clients import (
    AdminClient,
    Consumer,
    KafkaException,
    TopicPartition,
    create_topic,
    produce,
    read_partition,
    unique,
    wait_for,
    watermarks,
)

PY_DIR = Path(__file__).resolve().parent / "py"
PARTITIONS = 3
RATE = 15000  # messages/s offered by the producer
BEFORE_KILL = 10000  # acks seen before the SIGKILL
AFTER_RESTART = 10000  # further acks required after the restart


class AckLog:
    """Incrementally parses the crash producer's output file."""

    def __init__(self, path):
        self.path, self.pos, self.buf = Path(path), 0, b""
        self.acks = defaultdict(dict)  # partition -> {offset: value}
        self.ack_order = defaultdict(list)  # partition -> [value] in delivery order
        self.errors, self.fatal, self.done = [], [], None
        self.n_acks = 0

    def update(self):
        if not self.path.exists():
            return self.n_acks
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith("ACK "):
                _, p, o, v = line.split(" ", 3)
                p, o, v = int(p), int(o), int(v)
                if o in self.acks[p]:
                    self.errors.append(f"offset {o} of partition {p} acknowledged twice")
                self.acks[p][o] = v
                self.ack_order[p].append(v)
                self.n_acks += 1
            elif line.startswith("ERR "):
                self.errors.append(line)
            elif line.startswith("FATAL "):
                self.fatal.append(line)
            elif line.startswith("DONE "):
                self.done = int(line.split()[1])
        return self.n_acks


def test_acked_records_survive_kill9_during_idempotent_produce(broker_factory, tools, tmp_path):
    broker = broker_factory.start(DEFAULT_OVERRIDES)
    topic = create_topic(broker.bootstrap, unique("crash"), PARTITIONS)
    out, stop = tmp_path / "producer.out", tmp_path / "stop"
    err_path = tmp_path / "producer.err"
    log = AckLog(out)
    proc = subprocess.Popen(
        [tools.py, PY_DIR / "crash_producer.py", broker.bootstrap, topic, str(PARTITIONS), out, stop, str(RATE)],
        stdout=subprocess.DEVNULL,
        stderr=open(err_path, "w"),
    )
    timeline = []
    try:

        def acks_at_least(n):
            def cond():
                if proc.poll() is not None:
                    raise AssertionError(f"producer exited early: {err_path.read_text()[-3000:]}")
                return log.update() >= n

            return cond

        wait_for(acks_at_least(BEFORE_KILL), 90, what=f"{BEFORE_KILL} acks before the kill")
        timeline.append(("acked before kill", log.update()))
        broker.kill9()
        time.sleep(0.5)
        at_kill = log.update()
        timeline.append(("acked when the broker was dead", at_kill))
        time.sleep(1.0)
        t0 = time.monotonic()
        broker.restart()
        timeline.append(("restart took s", round(time.monotonic() - t0, 1)))
        wait_for(acks_at_least(at_kill + AFTER_RESTART), 150, what=f"{AFTER_RESTART} more acks after the restart")
        timeline.append(("acked after restart", log.update()))
    finally:
        stop.touch()
        try:
            proc.wait(200)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log.update()
    assert log.done is not None, f"producer did not finish cleanly: {err_path.read_text()[-3000:]}"

    # Read every partition back and compare with what was acknowledged.
    summary = []
    for p in range(PARTITIONS):
        low, high = watermarks(broker.bootstrap, topic, p)
        assert low == 0, f"partition {p}: log start offset {low} (nothing should be deleted)"
        records = read_partition(broker.bootstrap, topic, p, 0, high, timeout=120)
        offsets = [o for o, _ in records]
        assert offsets == list(range(high)), f"partition {p}: offsets are not 0..{high - 1}"
        values = [int(v) for _, v in records]
        dups = len(values) - len(set(values))
        assert dups == 0, f"partition {p}: {dups} duplicate values in the log (idempotence broken)"
        disorder = [(offsets[i], values[i - 1], values[i]) for i in range(1, len(values)) if values[i] <= values[i - 1]]
        assert not disorder, f"partition {p}: values out of order at (offset, prev, value) {disorder[:10]}"
        stored = dict(records)
        lost = [(o, v) for o, v in log.acks[p].items() if o not in stored]
        wrong = [(o, v, int(stored[o])) for o, v in log.acks[p].items() if o in stored and int(stored[o]) != v]
        assert not lost, f"partition {p}: {len(lost)} acknowledged records missing, e.g. {sorted(lost)[:10]}"
        assert not wrong, f"partition {p}: acknowledged (offset, value) differ from the log: {wrong[:10]}"
        acked_vals = log.ack_order[p]
        assert acked_vals == sorted(acked_vals), f"partition {p}: acks arrived out of order"
        summary.append(f"p{p}: {high} records, {len(log.acks[p])} acked")
    print("; ".join(summary), timeline)

    assert not log.fatal, f"fatal producer errors: {log.fatal[:5]}"
    assert not log.errors, f"{len(log.errors)} delivery errors, e.g. {log.errors[:10]}"
    assert log.done == 0, f"{log.done} messages undelivered at the end"


def test_committed_offsets_survive_kill9(broker_factory):
    broker = broker_factory.start(DEFAULT_OVERRIDES)
    topic = create_topic(broker.bootstrap, unique("crash-commit"), 2)
    for p in range(2):
        produce(broker.bootstrap, topic, [f"{p}-{i}" for i in range(40)], partition=p)
    group = unique("crash-group")
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    c = Consumer(conf)
    c.subscribe([topic])
    consumed = []
    deadline = time.monotonic() + 60
    while len(consumed) < 50:
        assert time.monotonic() < deadline, f"consumed only {len(consumed)} of 50 in 60s"
        m = c.poll(0.5)
        if m is not None:
            assert not m.error(), m.error()
            consumed.append((m.partition(), m.offset()))
    expected = {p: 0 for p in range(2)}
    for p, o in consumed:
        expected[p] = max(expected[p], o + 1)
    res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in expected.items()], asynchronous=False)
    assert all(tp.error is None for tp in res), res
    before = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)}
    assert before == expected, f"committed() before the kill: {before} != {expected}"
    c.close()

    broker.kill9()
    broker.restart()

    c = Consumer(conf)
    tps = [TopicPartition(topic, p) for p in range(2)]

    def fetch():
        try:
            return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        except KafkaException as e:
            return f"committed() failed: {e}"

    after = wait_for(lambda: isinstance(fetch(), dict) and fetch(), 60, what="OffsetFetch after restart")
    assert after == expected, f"committed offsets after kill -9 + restart: {after}, before: {expected}"

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka import ConsumerGroupTopicPartitions

    fut = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group]
    listed = {tp.partition: tp.offset for tp in fut.result(30).topic_partitions}
    assert listed == expected, f"ListConsumerGroupOffsets after restart: {listed} != {expected}"

    # And the group resumes exactly there.
    c.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 60
    while len(rest) < 80 - sum(expected.values()):
        assert time.monotonic() < deadline, f"resumed consumer got {len(rest)} records"
        m = c.poll(0.5)
        if m is not None:
            assert not m.error(), m.error()
            rest.append((m.partition(), m.offset()))
    c.close()
    for p in range(2):
        offs = [o for q, o in rest if q == p]
        assert offs == list(range(expected[p], 40)), f"partition {p}: resumed at {offs[:3]}, committed {expected[p]}"
    for p in range(2):
        assert watermarks(broker.bootstrap, topic, p) == (0, 40)
