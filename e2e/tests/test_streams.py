"""Kafka Streams (kafka-streams from Maven Central, the tools' version) on a three-node cluster: a
word count (java/WordCount.java: lines -> words -> groupBy -> count -> output topic) run by two
Streams instances reads N lines of known content while they are being produced. During the run one
Streams instance is killed with SIGKILL and restarted on its state directory, then the broker
leading an input partition is killed with SIGKILL and restarted, both while lines keep coming. The
final counts (the latest value per word of the output topic, read with read_committed) are then
compared with the counts computed here:

- processing.guarantee=exactly_once_v2: every count is exact, and each word's committed updates
  only go up;
- processing.guarantee=at_least_once: the run completes and no word is under-counted (a kill may
  replay records, so a count may be higher than exact).

The input is written by an idempotent acks=all producer and checked to hold exactly N lines, so a
wrong count comes from the Streams side (the broker's transactions, offsets, fetches), not from the
input. The output has settled when the application's group has committed every input record and
every record of its repartition topic and the output has not changed for a while.

Timings are printed: run with -s (or -rP) to see them.
"""

import os
import shutil
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import require_env, require_path

from harness.clients import (
    Producer,
    latest_offsets,
    read_to_end,
    run,
    unique,
    wait_for,
)
from harness.streams import WORDCOUNT_SRC, CountWatcher, StreamsInstance, make_lines
from harness.workload import CommitReader

QUIET = {"log_level": 2}  # librdkafka: no stderr noise about nodes that are down on purpose

N_LINES = 3000
RATE = 150  # lines/s offered by the producer
PARTS = 3  # input, repartition and output partitions
COMMIT_MS = 100  # commit.interval.ms of the Streams instances
SETTLE_S = 3.0  # the output must not change for this long once everything is committed
# As in test_replication.py: Kafka's defaults would make the broker failover slow.
FAST = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}


# ---------------------------------------------------------------------------
# processes and clients


@pytest.fixture(scope="module")
def wordcount_classes(tmp_path_factory):
    """WordCount.java compiled once (the source launcher would compile it at every start)."""
    require_path("KAFKA_HOME")
    cp = require_env("KAFKA_CLASSPATH")
    jars = [Path(j).name for j in cp.split(":")]
    for prefix in ("kafka-streams-", "rocksdbjni-"):
        if not any(j.startswith(prefix) for j in jars):
            pytest.fail(
                f"KAFKA_CLASSPATH has no {prefix}*.jar; provision with: bash e2e/provision/all kafka", pytrace=False
            )
    java_home = os.environ.get("JAVA_HOME")
    javac = f"{java_home}/bin/javac" if java_home and Path(f"{java_home}/bin/javac").exists() else shutil.which("javac")
    if not javac:
        pytest.fail("javac (a JDK) is not installed", pytrace=False)
    out = tmp_path_factory.mktemp("wordcount-classes")
    run([javac, "-cp", cp, "-d", out, WORDCOUNT_SRC], timeout=300)
    return out


class LinePublisher:
    """An idempotent acks=all producer thread writing lines[i] to partition i % PARTS at `rate`
    lines/s, never past `gate` (raised by the test)."""

    def __init__(self, bootstrap, topic, lines, rate, gate):
        self.topic, self.lines, self.rate, self.gate = topic, lines, float(rate), gate
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 180000,
                "request.timeout.ms": 10000,
                "socket.timeout.ms": 10000,
                "reconnect.backoff.max.ms": 1000,
                "topic.metadata.refresh.interval.ms": 5000,
                "error_cb": self._on_error,
                **QUIET,
            }
        )
        self.lock = threading.Lock()
        self.acked = 0
        self.failures = []
        self.fatal = []
        self.sent = 0
        self._exc = None
        self._thread = threading.Thread(target=self._run, name=f"publisher-{topic}", daemon=True)

    def _on_error(self, err):
        if err.fatal():
            with self.lock:
                self.fatal.append(str(err))

    def _on_delivery(self, err, msg):
        with self.lock:
            if err is None:
                self.acked += 1
            else:
                self.failures.append(f"{msg.partition()}: {err}")

    def _run(self):
        try:
            t0 = time.monotonic()
            paused = 0.0
            while self.sent < len(self.lines):
                if self.sent >= self.gate:
                    t = time.monotonic()
                    self.producer.poll(0.05)
                    paused += time.monotonic() - t
                    continue
                if self.sent >= self.rate * (time.monotonic() - t0 - paused):
                    self.producer.poll(0.005)
                    continue
                i = self.sent
                try:
                    self.producer.produce(
                        self.topic,
                        key=str(i).encode(),
                        value=self.lines[i].encode(),
                        partition=i % PARTS,
                        on_delivery=self._on_delivery,
                    )
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                self.sent = i + 1
                self.producer.poll(0)
        except Exception as e:  # noqa: BLE001 - re-raised by the waits
            self._exc = e

    def start(self):
        self._thread.start()
        return self

    def wait_acks(self, n, timeout, what):
        def enough():
            if self._exc is not None:
                raise AssertionError(f"producer thread failed: {self._exc!r}")
            with self.lock:
                if self.fatal:
                    raise AssertionError(f"fatal producer error: {self.fatal}")
                return self.acked >= n

        wait_for(
            enough,
            timeout,
            interval=0.05,
            what=f"{n} lines acknowledged {what}",
            fatal=(AssertionError,),
            details=lambda: f"sent {self.sent}, acked {self.acked}, failures {self.failures[:5]}",
        )

    def finish(self, timeout):
        self.gate = len(self.lines)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"producer still producing after {timeout}s (sent {self.sent})"
        if self._exc is not None:
            raise AssertionError(f"producer thread failed: {self._exc!r}")
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} lines never acknowledged"
        assert not self.failures, f"{len(self.failures)} lines failed: {self.failures[:10]}"
        assert not self.fatal, f"fatal producer error: {self.fatal}"
        assert self.acked == len(self.lines), f"{self.acked} acknowledged of {len(self.lines)}"


def read_counts(bootstrap, topic, partitions, timeout=120):
    """The output topic read from the beginning with read_committed up to its last stable offsets:
    {word: [count, ...]} in log order (a word is always in the same partition)."""
    updates = defaultdict(list)
    for recs in read_to_end(bootstrap, topic, partitions, committed=True, timeout=timeout).values():
        for _, key, value in recs:
            updates[key.decode()].append(struct.unpack(">q", value)[0])
    return dict(updates)


# ---------------------------------------------------------------------------
# the test


@pytest.mark.parametrize("guarantee", ["exactly_once_v2", "at_least_once"])
def test_word_count_survives_kill9(cluster_factory, wordcount_classes, guarantee):
    eos = guarantee == "exactly_once_v2"
    t_start = time.monotonic()
    times = {}

    def mark(what):
        times[what] = time.monotonic() - t_start
        print(f"[{guarantee}] {times[what]:6.1f}s {what}")

    c = cluster_factory.start(3, FAST)
    mark("cluster up")
    inp = c.create_topic(unique("wc-lines"), PARTS)
    out = c.create_topic(unique("wc-counts"), PARTS)
    app = unique(f"wc-{guarantee.replace('_', '-')}")
    repartition = f"{app}-words-repartition"
    lines, expected = make_lines(N_LINES)
    root = c.root / "streams"
    inst = {
        n: StreamsInstance(n, root, wordcount_classes, c.bootstrap, app, guarantee, inp, out, COMMIT_MS)
        for n in ("a", "b")
    }
    watcher = None
    publisher = None

    def streams_logs():
        return "\n".join(s.log_tail(80) for s in inst.values())

    try:
        for s in inst.values():
            s.start()
        for s in inst.values():
            s.wait_running(180)
        mark("both Streams instances RUNNING")
        watcher = CountWatcher(c.bootstrap, out, PARTS).start()
        publisher = LinePublisher(c.bootstrap, inp, lines, RATE, gate=N_LINES // 2).start()

        # 1. SIGKILL a Streams instance while lines flow (its EOS transaction is open), restart it
        #    on the same state directory.
        publisher.wait_acks(N_LINES // 4, 120, "before the Streams kill")
        inst["a"].kill9()
        mark(f"SIGKILL streams instance a at {publisher.acked} lines acknowledged")
        inst["a"].start()
        inst["a"].wait_running(180)
        mark("streams instance a RUNNING again")

        # 2. SIGKILL the broker leading input partition 0 while lines flow, restart it.
        publisher.gate = N_LINES
        publisher.wait_acks(N_LINES // 2 + N_LINES // 10, 120, "before the broker kill")
        leader = c.leader(inp, 0)
        assert leader >= 0, f"{inp}[0] has no leader"
        victim = c.node(leader)
        victim.kill9()
        mark(f"SIGKILL node {leader} (leader of {inp}[0]) at {publisher.acked} lines acknowledged")
        # Restarted once another node leads the partition: the clients see a leader change.
        c.wait_partition(inp, 0, lambda lead, r, i: lead >= 0 and lead != leader, 90, "a new leader", exclude=(leader,))
        mark(f"{inp}[0] has a new leader")
        victim.restart(timeout=180)
        mark(f"node {leader} restarted")

        publisher.finish(180)
        mark(f"all {N_LINES} lines acknowledged")
        hw = latest_offsets(c.bootstrap, inp, PARTS, committed=False)
        assert sum(hw.values()) == N_LINES, f"input {inp} holds {hw} records, want {N_LINES} in all"

        # 3. Settle: every input and repartition record committed by the application's group, no
        #    instance dead, the output unchanged for SETTLE_S.
        commits = CommitReader(c.bootstrap, app)
        state = {}

        def settled():
            for s in inst.values():
                s.check_alive()
            ci = commits.read(inp, PARTS)
            cr = commits.read(repartition, PARTS)
            rhw = latest_offsets(c.bootstrap, repartition, PARTS, committed=False)
            rlso = latest_offsets(c.bootstrap, repartition, PARTS, committed=True)
            state.update(input_commits=ci, input_hw=hw, repartition_commits=cr, repartition_hw=rhw, lso=rlso)
            state["output_quiet_s"] = round(watcher.quiet_for(), 1)
            if any(ci.get(p) != hw[p] for p in range(PARTS)):
                return False
            # Under exactly_once_v2 every repartition partition ends with a transaction marker,
            # which a consumer's committed position may stop before.
            slack = 1 if eos else 0
            if any(rhw[p] > 0 and (rlso[p] != rhw[p] or cr.get(p, -1) < rhw[p] - slack) for p in range(PARTS)):
                return False
            return watcher.quiet_for() >= SETTLE_S

        try:
            wait_for(
                settled,
                240,
                interval=0.5,
                what="the application to commit all input and settle",
                fatal=(AssertionError,),
                details=lambda: f"{state}\n{streams_logs()}",
            )
        finally:
            commits.close()
        mark("output settled")

        # 4. The counts, read with read_committed.
        updates = read_counts(c.bootstrap, out, PARTS)
        final = {w: u[-1] for w, u in updates.items()}
        missing = sorted(set(expected) - set(final))
        extra = sorted(set(final) - set(expected))
        low = {w: (final[w], n) for w, n in expected.items() if w in final and final[w] < n}
        high = {w: (final[w], n) for w, n in expected.items() if w in final and final[w] > n}
        summary = (
            f"{len(expected)} words, {sum(expected.values())} occurrences; output records {sum(map(len, updates.values()))}; "
            f"missing {missing}, unexpected {extra}, under-counted (got, want) {low}, over-counted {high}"
        )
        print(f"[{guarantee}] {summary}")
        assert not missing and not extra, f"{summary}\n{streams_logs()}"
        assert not low, f"under-counted words (records lost): {summary}\n{streams_logs()}"
        if eos:
            assert not high, f"exactly_once_v2 counted records twice: {summary}\n{streams_logs()}"
            backwards = {w: u for w, u in updates.items() if any(b < a for a, b in zip(u, u[1:], strict=False))}
            assert not backwards, f"committed counts went down: {dict(list(backwards.items())[:5])}"
        for s in inst.values():
            s.check_alive()
        mark("counts checked")
    finally:
        if publisher is not None:
            publisher.gate = N_LINES
        if watcher is not None:
            watcher.close()
        for s in inst.values():
            s.terminate(timeout=20, quiet=True)
    print(f"[{guarantee}] timeline: {', '.join(f'{k} {v:.1f}s' for k, v in times.items())}")
