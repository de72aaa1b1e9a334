"""Client workloads shared by the replication tests and the checker (e2e/checker):

- AckingProducer: an idempotent acks=all confluent-kafka producer writing continuously from a
  thread (unique sequence values, round-robin over partitions), recording every delivery report.
- GroupConsumer: a confluent-kafka group member in a thread, recording every record it polls
  and every rebalance, and flagging offsets that go backwards within one assignment.
- read_all / check_acked: read a topic back from the beginning (read_uncommitted) and compare it
  with what was acknowledged.
"""

import threading
import time
import uuid
from collections import Counter, defaultdict, namedtuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

# offset is None when librdkafka reports a successful delivery without an offset (seen on Kafka
# for retries across a controller restart: the batch was stored, its offset was not reported).
Ack = namedtuple("Ack", "t partition offset value seq")
Failure = namedtuple("Failure", "t partition value seq code error")
Polled = namedtuple("Polled", "t partition offset value gen")


def _now():
    return time.monotonic()


class AckingProducer:
    """Produces `rate` records/s (values "<prefix>-<seq>") until stop(); thread-safe views."""

    def __init__(self, bootstrap, topic, partitions, rate=300, prefix=None, conf=None, name="producer"):
        self.topic = topic
        self.partitions = partitions
        self.rate = float(rate)
        self.prefix = prefix or uuid.uuid4().hex[:6]
        self.name = name
        cfg = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "request.timeout.ms": 10000,
            "socket.timeout.ms": 10000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 5000,
            "log_level": 2,  # errors go to error_cb (client_errors), not stderr
            "error_cb": self._on_error,
        }
        cfg.update(conf or {})
        self.producer = Producer(cfg)
        self.lock = threading.Lock()
        self.acks = []  # Ack, in delivery-report order
        self.failures = []  # Failure
        self.client_errors = []  # (t, code name, str, fatal)
        self.sent = 0  # produce() calls accepted so far (= next seq)
        self.send_times = []  # monotonic time each seq was handed to the client
        self.undelivered = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-{topic}", daemon=True)
        self._exc = None

    # --- callbacks (run on the producer thread, inside poll/flush) ------
    def _on_error(self, err):
        with self.lock:
            self.client_errors.append((_now(), err.name(), str(err), err.fatal()))

    def _on_delivery(self, err, msg):
        t = _now()
        v = msg.value().decode()
        seq = int(v.rsplit("-", 1)[1])
        with self.lock:
            if err is None:
                self.acks.append(Ack(t, msg.partition(), msg.offset(), v, seq))
            else:
                self.failures.append(Failure(t, msg.partition(), v, seq, err.name(), str(err)))

    # --- thread ---------------------------------------------------------
    def _run(self):
        try:
            t0 = _now()
            while not self._stop.is_set():
                if self.sent >= self.rate * (_now() - t0):
                    self.producer.poll(0.005)
                    continue
                seq = self.sent
                try:
                    self.producer.produce(
                        self.topic,
                        value=f"{self.prefix}-{seq:09d}".encode(),
                        partition=seq % self.partitions,
                        on_delivery=self._on_delivery,
                    )
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                with self.lock:
                    self.send_times.append(_now())
                    self.sent = seq + 1
                self.producer.poll(0)
        except Exception as e:  # noqa: BLE001 - re-raised by stop()
            self._exc = e

    def start(self):
        self._thread.start()
        return self

    def stop(self, flush_timeout=120):
        """Stop producing, flush; returns the number of records never reported on (a second call
        returns the first call's result)."""
        if self.undelivered is not None:
            return self.undelivered
        self._stop.set()
        self._thread.join(30)
        if self._exc is not None:
            raise self._exc
        self.undelivered = self.producer.flush(flush_timeout)
        return self.undelivered

    # --- views ----------------------------------------------------------
    @property
    def n_acks(self):
        with self.lock:
            return len(self.acks)

    def acks_snapshot(self):
        with self.lock:
            return list(self.acks)

    def failures_snapshot(self):
        with self.lock:
            return list(self.failures)

    def first_ack_after(self, t, partition=None):
        with self.lock:
            for a in self.acks:
                if a.t > t and (partition is None or a.partition == partition):
                    return a
        return None

    def first_ack(self, partition, min_seq):
        """The first ack on `partition` of a record with seq >= min_seq, or None."""
        with self.lock:
            for a in self.acks:
                if a.partition == partition and a.seq >= min_seq:
                    return a
        return None

    def wait_acks(self, n, timeout, partition=None, after=None, min_seq=None, what=None):
        """Wait until n acks (on `partition`, acknowledged after monotonic time `after`, with
        seq >= min_seq) have arrived; returns their count."""
        deadline = _now() + timeout
        while True:
            if self._exc is not None:
                raise AssertionError(f"{self.name} thread failed: {self._exc!r}")
            with self.lock:
                k = sum(
                    1
                    for a in self.acks
                    if (partition is None or a.partition == partition)
                    and (after is None or a.t > after)
                    and (min_seq is None or a.seq >= min_seq)
                )
            if k >= n:
                return k
            if _now() > deadline:
                with self.lock:
                    fails = Counter(f.code for f in self.failures)
                    cerrs = self.client_errors[-5:]
                raise AssertionError(
                    f"{self.name}: only {k} of {n} acks {what or ''} within {timeout}s "
                    f"(sent {self.sent}, acked {len(self.acks)}, failed {dict(fails)}, "
                    f"recent client errors {cerrs})"
                )
            time.sleep(0.05)

    def summary(self):
        with self.lock:
            return {
                "sent": self.sent,
                "acked": len(self.acks),
                "failed": len(self.failures),
                "failure_codes": dict(Counter(f.code for f in self.failures)),
                "undelivered_at_stop": self.undelivered,
                "fatal_client_errors": [e for e in self.client_errors if e[3]],
            }


class GroupConsumer:
    """A group member consuming `topic` in a thread. Records (t, partition, offset, value, gen)
    for every record and (t, event, partitions) for every rebalance; `gen` counts the rebalance
    callbacks seen so far. Offsets going backwards on a partition within one gen are recorded
    in `regressions`. commit='auto' (enable.auto.commit) or 'manual' (synchronous commit after
    every batch)."""

    def __init__(self, bootstrap, topic, group, name, commit="auto", conf=None):
        self.topic, self.group, self.name, self.commit_mode = topic, group, name, commit
        cfg = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": commit == "auto",
            "auto.commit.interval.ms": 500,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": False,
            "socket.timeout.ms": 10000,
            "reconnect.backoff.max.ms": 1000,
            "log_level": 2,
        }
        cfg.update(conf or {})
        self.consumer = Consumer(cfg)
        self.lock = threading.Lock()
        self.records = []
        self.events = []
        self.errors = []
        self.commit_errors = []
        self.regressions = []  # (t, partition, previous offset, offset, gen)
        self.gen = 0
        self._last = {}  # partition -> last offset within the current gen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)
        self._exc = None
        self.closed = False

    def _event(self, ev, parts):
        with self.lock:
            self.gen += 1
            self._last = {}
            self.events.append((_now(), ev, sorted(p.partition for p in parts)))

    def _run(self):
        c = self.consumer
        try:
            c.subscribe(
                [self.topic],
                on_assign=lambda _c, ps: self._event("assign", ps),
                on_revoke=lambda _c, ps: self._event("revoke", ps),
                on_lost=lambda _c, ps: self._event("lost", ps),
            )
            while not self._stop.is_set():
                msgs = c.consume(num_messages=500, timeout=0.2)
                got = False
                with self.lock:
                    t = _now()
                    for m in msgs:
                        if m.error():
                            self.errors.append((t, m.error().name(), str(m.error())))
                            continue
                        got = True
                        p, o = m.partition(), m.offset()
                        prev = self._last.get(p)
                        if prev is not None and o <= prev:
                            self.regressions.append((t, p, prev, o, self.gen))
                        self._last[p] = o
                        self.records.append(Polled(t, p, o, m.value().decode(), self.gen))
                if got and self.commit_mode == "manual":
                    try:
                        c.commit(asynchronous=False)
                    except KafkaException as e:
                        with self.lock:
                            self.commit_errors.append((_now(), str(e)))
        except Exception as e:  # noqa: BLE001 - re-raised by stop()
            self._exc = e

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stop polling and close (which commits the consumed offsets under auto commit)."""
        self._stop.set()
        self._thread.join(60)
        if not self.closed:
            self.closed = True
            try:
                if self.commit_mode == "manual":
                    try:
                        self.consumer.commit(asynchronous=False)
                    except KafkaException as e:
                        self.commit_errors.append((_now(), str(e)))
                self.consumer.close()
            except KafkaException as e:
                self.errors.append((_now(), "close", str(e)))
        if self._exc is not None:
            raise self._exc

    @property
    def n_records(self):
        with self.lock:
            return len(self.records)

    def snapshot(self):
        with self.lock:
            return list(self.records)


# ---------------------------------------------------------------------------
# Reading back


def high_watermarks(bootstrap, topic, partitions, timeout=30):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"hw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    try:
        out = {}
        for p in range(partitions):
            deadline = _now() + timeout
            while True:
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                    break
                except KafkaException:
                    if _now() > deadline:
                        raise
                    time.sleep(0.5)
        return out
    finally:
        c.close()


def read_all(bootstrap, topic, partitions, timeout=120):
    """{partition: [(offset, value str)]} for offsets [log start, high watermark), read from the
    beginning by a fresh consumer with isolation.level=read_uncommitted."""
    marks = high_watermarks(bootstrap, topic, partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"readback-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": False,
            "log_level": 2,
        }
    )
    out = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in marks.items() if hi > lo])
        pending = {p for p, (lo, hi) in marks.items() if hi > lo}
        deadline = _now() + timeout
        while pending:
            if _now() > deadline:
                raise AssertionError(
                    f"read-back of {topic}: partitions {sorted(pending)} incomplete after "
                    f"{timeout}s; watermarks {marks}; got "
                    f"{ {p: (out[p][-1][0] if out[p] else None) for p in pending} }"
                )
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"read-back {topic}[{m.partition()}]: {m.error()}")
                p = m.partition()
                out[p].append((m.offset(), m.value().decode()))
                if m.offset() >= marks[p][1] - 1:
                    pending.discard(p)
    finally:
        c.close()
    return out, marks


def check_acked(bootstrap, topic, partitions, acks, timeout=120, label=""):
    """Read the topic back and assert: every acknowledged value is present exactly once, at the
    acknowledged partition and offset, in the order of acknowledgement per partition; no value
    appears twice anywhere. Returns a summary dict."""
    log, marks = read_all(bootstrap, topic, partitions, timeout)
    problems = []
    where = defaultdict(list)
    for p, recs in log.items():
        offs = [o for o, _ in recs]
        if offs != sorted(set(offs)):
            problems.append(f"partition {p}: offsets read back are not strictly increasing")
        for o, v in recs:
            where[v].append((p, o))
    dups = {v: locs for v, locs in where.items() if len(locs) > 1}
    if dups:
        problems.append(f"{len(dups)} values stored more than once, e.g. {list(dups.items())[:5]}")
    lost, misplaced, ack_dups = [], [], []
    acked_values = Counter(a.value for a in acks)
    ack_dups = [v for v, n in acked_values.items() if n > 1]
    if ack_dups:
        problems.append(f"{len(ack_dups)} values acknowledged more than once, e.g. {ack_dups[:5]}")
    for a in acks:
        locs = where.get(a.value)
        if not locs:
            lost.append(a)
        elif a.offset is None:  # librdkafka may report success without an offset (see Ack)
            if locs[0][0] != a.partition:
                misplaced.append((a, locs))
        elif locs[0] != (a.partition, a.offset):
            misplaced.append((a, locs))
    if lost:
        problems.append(
            f"{len(lost)} acknowledged records lost, e.g. {[(a.partition, a.offset, a.value) for a in lost[:8]]}"
        )
    if misplaced:
        problems.append(
            f"{len(misplaced)} acknowledged records at another offset than acknowledged, e.g. "
            f"{[((a.partition, a.offset, a.value), locs) for a, locs in misplaced[:5]]}"
        )
    by_part = defaultdict(list)  # partition -> stored offsets of its acked values, in ack order
    for a in acks:
        if where.get(a.value):
            by_part[a.partition].append(where[a.value][0][1])
    for p, offs in by_part.items():
        bad = [(offs[i - 1], offs[i]) for i in range(1, len(offs)) if offs[i] <= offs[i - 1]]
        if bad:
            problems.append(f"partition {p}: acknowledgements out of log order, e.g. (prev, next) {bad[:5]}")
    summary = {
        "acked": len(acks),
        "acked_without_offset": sum(1 for a in acks if a.offset is None),
        "stored": sum(len(r) for r in log.values()),
        "watermarks": {p: list(m) for p, m in marks.items()},
        "stored_unacked": sum(len(r) for r in log.values()) - len(acks),
    }
    assert not problems, f"{label} read-back of {topic} failed: " + "; ".join(problems) + f" ({summary})"
    return summary


class CommitReader:
    """Reads a group's committed offsets with OffsetFetch from a consumer that never joins the
    group. (AdminClient.list_consumer_group_offsets, polled in a loop while the coordinator
    moves, trips an assertion inside librdkafka 2.16; and a non-member consumer that once got
    NOT_COORDINATOR keeps asking the same broker, so it is replaced after every error.)"""

    def __init__(self, bootstrap, group):
        self.bootstrap, self.group = bootstrap, group
        self.c = None

    def _consumer(self):
        if self.c is None:
            self.c = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "socket.timeout.ms": 5000,
                    "reconnect.backoff.max.ms": 1000,
                    "log_level": 2,
                }
            )
        return self.c

    def read(self, topic, partitions, timeout=10):
        """{partition: committed offset} for the partitions that have a commit; raises
        KafkaException when no coordinator answered within `timeout` s."""
        deadline = _now() + timeout
        while True:
            try:
                tps = self._consumer().committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=max(1.0, deadline - _now())
                )
                return {tp.partition: tp.offset for tp in tps if tp.error is None and tp.offset >= 0}
            except KafkaException:
                self.close()
                if _now() > deadline:
                    raise
                time.sleep(0.2)

    def close(self):
        if self.c is not None:
            try:
                self.c.close()
            finally:
                self.c = None
