"""Client-side helpers shared by the acceptance tests (confluent-kafka, subprocesses, HTTP)."""

import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# subprocesses


class RunResult:
    def __init__(self, cmd, rc, stdout, stderr, seconds):
        self.cmd, self.rc, self.stdout, self.stderr, self.seconds = cmd, rc, stdout, stderr, seconds

    def describe(self, limit=6000):
        def cut(s):
            return s if len(s) <= limit else f"...({len(s) - limit} chars cut)...\n" + s[-limit:]

        return (
            f"command: {' '.join(map(str, self.cmd))}\nexit code: {self.rc} after {self.seconds:.1f}s\n"
            f"--- stdout ---\n{cut(self.stdout)}\n--- stderr ---\n{cut(self.stderr)}"
        )


def run(cmd, timeout, input=None, env=None, check=True, cwd=None):
    """Run a command, capture its output; on a non-zero exit (check=True) or a timeout,
    raise AssertionError carrying the command's full output."""
    t0 = time.monotonic()
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(
            [str(c) for c in cmd], input=input, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        r = RunResult(cmd, "TIMEOUT", out, err, time.monotonic() - t0)
        raise AssertionError(f"command timed out after {timeout}s\n{r.describe()}") from None
    r = RunResult(cmd, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed\n{r.describe()}")
    return r


def wait_for(cond, timeout, interval=0.2, what="condition", fatal=(), details=None):
    """Poll cond() until it returns a truthy value; returns it, or raises AssertionError.
    Exceptions of the `fatal` types end the wait at once; `details()` adds to a timeout's message."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
            last = v
        except fatal:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# HTTP / Prometheus


def http_get(url, timeout=5.0, headers=None):
    """Returns (status, body text); never raises for HTTP error statuses."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text):
    """[(name, {label: value}, float)] for every sample line of a text exposition."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {}
        if m.group(3):
            for lm in _LABEL.finditer(m.group(3)):
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


# ---------------------------------------------------------------------------
# Kafka clients


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_topic(bootstrap, topic, partitions, timeout=30):
    a = admin(bootstrap)

    def ready():
        md = a.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return False
        if len(t.partitions) != partitions:
            return False
        return all(p.leader >= 0 and p.error is None for p in t.partitions.values())

    wait_for(ready, timeout, what=f"topic {topic} with {partitions} partitions and leaders in metadata")


def create_topic(bootstrap, topic, partitions=1, config=None, timeout=30, replication_factor=1):
    a = admin(bootstrap)
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})],
        operation_timeout=timeout,
    )
    fs[topic].result(timeout)
    wait_topic(bootstrap, topic, partitions, timeout)
    return topic


def produce(bootstrap, topic, values, partition=None, keys=None, conf=None, timeout=60):
    """Produce values (str/bytes) and wait for every delivery report.
    Returns [(partition, offset, value_bytes)] in delivery order; raises on any error."""
    cfg = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    cfg.update(conf or {})
    p = Producer(cfg)
    delivered, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value()))

    for i, v in enumerate(values):
        kw = {"value": v.encode() if isinstance(v, str) else v, "on_delivery": dr}
        if partition is not None:
            kw["partition"] = partition
        if keys is not None:
            k = keys[i]
            kw["key"] = k.encode() if isinstance(k, str) else k
        produce_waiting(p, topic, **kw)
        p.poll(0)
    remaining = p.flush(timeout)
    assert not errors, f"delivery errors ({len(errors)}): {errors[:10]}"
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert len(delivered) == len(values), f"{len(delivered)} delivered of {len(values)}"
    return delivered


def produce_waiting(p, topic, **kw):
    """Producer.produce, serving delivery reports while the producer's queue is full."""
    while True:
        try:
            p.produce(topic, **kw)
            return
        except BufferError:
            p.poll(0.05)


def watermarks(bootstrap, topic, partition, timeout=10):
    """(low, high) = (log start offset, high watermark) via ListOffsets."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm"), "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()


def read_partition(bootstrap, topic, partition, start, end, timeout=60, conf=None):
    """Read [start, end) of one partition with assign(); returns [(offset, value_bytes)]."""
    if end <= start:
        return []
    cfg = {
        "bootstrap.servers": bootstrap,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
    }
    cfg.update(conf or {})
    c = Consumer(cfg)
    out = []
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            if out and out[-1][0] >= end - 1:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"read {topic}[{partition}] from {start} to {end}: only got {len(out)} records "
                    f"(last offset {out[-1][0] if out else None}) within {timeout}s"
                )
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consume {topic}[{partition}]: {m.error()}")
                out.append((m.offset(), m.value()))
    finally:
        c.close()
    return out


def latest_offsets(bootstrap, topic, partitions, committed):
    """ListOffsets latest of partitions 0..partitions-1: {partition: the last stable offset} with
    `committed` (read_committed), else {partition: the high watermark}."""
    a = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    fs = a.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
        isolation_level=level,
        request_timeout=15,
    )
    return {tp.partition: f.result(30).offset for tp, f in fs.items()}


def read_to_end(bootstrap, topic, partitions, committed, ends=None, starts=None, timeout=60):
    """Read partitions 0..partitions-1 with a fresh consumer at the isolation level, each from
    `starts` (default: the beginning) up to `ends` (default: `latest_offsets` at that level):
    {partition: [(offset, key bytes, value bytes)]}. The last offsets of a transactional partition
    are often markers, which a consumer never sees: a partition is done when the consumer reports
    its end at or past `ends`, not when it has a record at `ends - 1`."""
    if ends is None:
        ends = latest_offsets(bootstrap, topic, partitions, committed)
    starts = starts or {}
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("read-to-end"),
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 2,
        }
    )
    out = {p: [] for p in range(partitions)}
    todo = {p for p in range(partitions) if ends[p] > starts.get(p, 0)}
    try:
        c.assign([TopicPartition(topic, p, starts.get(p, OFFSET_BEGINNING)) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in todo])}
                raise AssertionError(
                    f"read {topic} to {ends} ({'read_committed' if committed else 'read_uncommitted'}): "
                    f"partitions {sorted(todo)} stuck at {pos}, got { ({p: len(v) for p, v in out.items()}) }"
                )
            for m in c.consume(num_messages=10000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= ends[m.partition()]:
                            todo.discard(m.partition())
                        continue
                    raise AssertionError(f"consume {topic}: {err}")
                if m.offset() < ends[m.partition()]:
                    out[m.partition()].append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


__all__ = [
    "Consumer",
    "KafkaError",
    "KafkaException",
    "Producer",
    "TopicPartition",
    "AdminClient",
    "NewTopic",
    "unique",
    "run",
    "wait_for",
    "http_get",
    "parse_prometheus",
    "admin",
    "wait_topic",
    "create_topic",
    "produce",
    "watermarks",
    "read_partition",
    "RunResult",
]
