"""The transactional workload of the checker (e2e/checker, `--workload txn`), after Jepsen's Kafka
transaction tests: writers run transactions of a few records over several partitions, each
committed or aborted at random, and record what the client was told; a read_committed group
reads meanwhile; afterwards a fresh read_committed read of every partition is checked.

A writer whose commit or abort failed (a fault, a fenced or timed-out transaction) does not
know the outcome: it records `unknown`, closes its producer and starts a new one with the same
transactional.id, whose InitProducerId fences the old one and finishes its transaction.

Anomalies (each one fails the run):
  aborted_reads  a record of an aborted transaction seen by a read_committed reader
  torn           a transaction with some but not all of its records in the final read
  lost           a committed transaction with none of its records in the final read
  duplicates     a record stored at two offsets
"""

import random
import threading
import time
from collections import defaultdict

from confluent_kafka import KafkaException, Producer

from harness.clients import read_to_end

TXN_OVERRIDES = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000"}


class TxnWriter:
    """One transactional producer in a thread; `outcomes` lists (txn, values, outcome)."""

    def __init__(self, bootstrap, topic, partitions, name, seed, size=4, abort_ratio=0.2, rate=5.0):
        self.bootstrap, self.topic, self.partitions, self.name = bootstrap, topic, partitions, name
        self.rng = random.Random(seed)
        self.size, self.abort_ratio, self.rate = size, abort_ratio, rate
        self.lock = threading.Lock()
        self.outcomes = []
        self.errors = []
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"txn-{name}", daemon=True)
        self.producer = None

    def _new_producer(self):
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": f"checker-{self.name}",
                "transaction.timeout.ms": 10000,
                "socket.timeout.ms": 10000,
                "reconnect.backoff.max.ms": 1000,
                "log_level": 2,
            }
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                p.init_transactions(30)
                return p
            except KafkaException as e:
                self.note(f"init_transactions: {e.args[0]}")
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(1)

    def note(self, what):
        with self.lock:
            if len(self.errors) < 200:
                self.errors.append((round(time.monotonic(), 1), what))

    def start(self):
        self.producer = self._new_producer()
        self._thread.start()
        return self

    def stop(self, timeout=180):
        self._stop.set()
        self._thread.join(timeout)

    def snapshot(self):
        with self.lock:
            return list(self.outcomes)

    def _run(self):
        n = 0
        while not self._stop.is_set():
            txn = f"{self.name}-{n}"
            n += 1
            values = [f"{txn}-{i}" for i in range(self.size)]
            parts = [self.rng.randrange(self.partitions) for _ in values]
            abort = self.rng.random() < self.abort_ratio
            outcome = self._transaction(values, parts, abort)
            with self.lock:
                self.outcomes.append((txn, values, outcome))
            if outcome == "unknown":
                self._restart()
            time.sleep(self.rng.uniform(0, 2 / self.rate))

    def _transaction(self, values, parts, abort):
        p = self.producer
        try:
            p.begin_transaction()
            for v, part in zip(values, parts, strict=True):
                p.produce(self.topic, v.encode(), partition=part)
            if abort:
                p.abort_transaction(30)
                return "aborted"
            p.commit_transaction(30)
            return "committed"
        except KafkaException as e:
            err = e.args[0]
            self.note(f"{'abort' if abort else 'commit'}: {err}")
            if err.txn_requires_abort() and not err.fatal():
                try:
                    p.abort_transaction(30)
                    return "aborted"
                except KafkaException as e2:
                    self.note(f"abort after error: {e2.args[0]}")
            return "unknown"
        except BufferError as e:
            self.note(f"produce: {e}")
            return "unknown"

    def _restart(self):
        self.restarts += 1
        old, self.producer = self.producer, None
        try:
            old.flush(1)
        except Exception:  # noqa: BLE001 - the old producer is discarded either way
            pass
        while not self._stop.is_set():
            try:
                self.producer = self._new_producer()
                return
            except KafkaException:
                time.sleep(1)


def analyse(writers, polls, final):
    """The anomalies of a transactional run. `polls`: (consumer, Polled) of read_committed group
    members; `final`: {partition: [(offset, value)]} of a fresh read_committed read."""
    outcome = {}
    members = {}
    for w in writers:
        for txn, values, o in w.snapshot():
            outcome[txn] = o
            members[txn] = values
    where = defaultdict(list)
    for p, recs in final.items():
        for o, v in recs:
            where[v].append((p, o))
    txn_of = {v: txn for txn, vs in members.items() for v in vs}

    aborted_reads = sorted(
        {(name, r.value) for name, r in polls if outcome.get(txn_of.get(r.value)) == "aborted"}
        | {("final", v) for v in where if outcome.get(txn_of.get(v)) == "aborted"}
    )
    torn, lost = [], []
    for txn, values in members.items():
        seen = [v for v in values if v in where]
        if outcome[txn] == "aborted":
            continue
        if seen and len(seen) < len(values):
            torn.append({"txn": txn, "outcome": outcome[txn], "seen": seen, "missing": sorted(set(values) - set(seen))})
        elif not seen and outcome[txn] == "committed":
            lost.append({"txn": txn, "values": values})
    duplicates = [{"value": v, "at": locs} for v, locs in where.items() if len(locs) > 1]
    unknown_values = [v for v in where if v not in txn_of]
    counts = defaultdict(int)
    for o in outcome.values():
        counts[o] += 1
    committed_visible = sum(1 for t, vs in members.items() if outcome[t] == "unknown" and vs[0] in where)
    anomalies = {
        "aborted_reads": len(aborted_reads),
        "torn": len(torn),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "unknown_values": len(unknown_values),
    }
    examples = {
        "aborted_reads": [list(x) for x in aborted_reads[:20]],
        "torn": torn[:20],
        "lost": lost[:20],
        "duplicates": duplicates[:20],
        "unknown_values": unknown_values[:20],
    }
    stats = {
        "transactions": dict(counts),
        "unknown_outcome_committed": committed_visible,
        "final_read": sum(len(r) for r in final.values()),
        "polled": len(polls),
        "writer_restarts": sum(w.restarts for w in writers),
        "writer_errors": [e for w in writers for e in w.errors][:40],
    }
    return anomalies, examples, stats


def read_committed_all(bootstrap, topic, partitions, marks, timeout=120):
    """{partition: [(offset, value)]}: every partition read from its start by a fresh
    read_committed consumer up to `marks`' high watermarks ({partition: (start, high)}); a
    partition stuck below its high watermark is a last stable offset that does not move on."""
    read = read_to_end(
        bootstrap,
        topic,
        partitions,
        committed=True,
        ends={p: hi for p, (lo, hi) in marks.items()},
        starts={p: lo for p, (lo, hi) in marks.items()},
        timeout=timeout,
    )
    return {p: [(o, v.decode()) for o, _, v in recs] for p, recs in read.items()}


def coordinator_partition(transactional_id, partitions=50):
    """Kafka's `__transaction_state` partition of a transactional id (Java String.hashCode)."""
    h = 0
    for unit in transactional_id.encode("utf-16-be").hex(" ", 2).split():
        h = (h * 31 + int(unit, 16)) & 0xFFFFFFFF
    if h >= 2**31:
        h -= 2**32
    return (h & 0x7FFFFFFF) % partitions
