"""Transactions (KIP-98, KIP-447) as real clients use them: Apache Kafka's Java client commits and
aborts and is fenced by a newer producer with its transactional.id; a transaction left open by a
SIGKILLed producer is aborted by the coordinator after transaction.timeout.ms; librdkafka's
consume-transform-produce loop keeps exactly-once across a SIGKILL of its worker; kafkajs commits,
aborts and sends offsets. read_committed readers (Java, librdkafka, kafkajs) see only committed
data, read_uncommitted ones everything, and ListOffsets(read_committed) is the last stable
offset. A broker SIGKILLed and restarted on a log of many segments keeps its transactional state:
the aborted transactions of old segments stay hidden from read_committed readers, a transaction
open at the kill holds the last stable offset until its timeout aborts it, and an idempotent
producer's sequence numbers carry on.

Kafka puts one control record (the commit or abort marker) on every partition a transaction
wrote, so each ended transaction takes one offset there that no reader is given.
"""

import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer
from conftest import DEFAULT_OVERRIDES, TARGET, require_env, require_path

from harness import kafka, kproto
from harness.clients import (
    Consumer,
    TopicPartition,
    create_topic,
    latest_offsets,
    produce,
    produce_waiting,
    read_to_end,
    run,
    unique,
    wait_for,
)
from harness.paths import segment_files

HERE = Path(__file__).resolve().parent
DUMP_LOG_SEGMENTS = "org.apache.kafka.tools.DumpLogSegments"  # kafka-dump-log.sh
JAVA_SRC = HERE / "java" / "Transactions.java"
WORKER = HERE / "py" / "txn_worker.py"
KAFKAJS_SCRIPT = HERE / "js" / "transactions.js"
QUIET = {"log_level": 2}


# ---------------------------------------------------------------------------
# helpers


def _java(tools, *args, timeout=120):
    """Transactions.java SCENARIO ... run to its end; fails with the program's output."""
    r = tools.run_class(str(JAVA_SRC), *args, timeout=timeout, check=False)
    assert r.rc == 0 and "DONE" in r.stdout.splitlines(), f"Transactions.java {args[0]} failed\n{r.describe()}"
    return r


def _read(bootstrap, topic, partitions, committed, timeout=60):
    """Every partition from the beginning to its latest offset at the isolation level:
    {partition: [(offset, key, value)]}, decoded."""
    read = read_to_end(bootstrap, topic, partitions, committed, timeout=timeout)
    return {p: [(o, k.decode() if k is not None else None, v.decode()) for o, k, v in recs] for p, recs in read.items()}


def _values(read):
    """{partition: [(offset, value)]} of a _read."""
    return {p: [(o, v) for o, _, v in recs] for p, recs in read.items()}


def _java_sent(r):
    """{txn label: [(partition, offset, value)]} in send order, from SENT lines."""
    sent = defaultdict(list)
    for label, p, o, v in re.findall(r"^SENT (\S+) (\d+) (\d+) (\S+)$", r.stdout, re.M):
        sent[label].append((int(p), int(o), v))
    return sent


def _java_reads(r, isolation):
    """({partition: [(offset, value)]} from READ lines, {partition: end offset} from END lines)."""
    reads = defaultdict(list)
    for p, o, v in re.findall(rf"^READ {isolation} (\d+) (\d+) (\S+)$", r.stdout, re.M):
        reads[int(p)].append((int(o), v))
    ends = {int(p): int(o) for p, o in re.findall(rf"^END {isolation} (\d+) (\d+)$", r.stdout, re.M)}
    return dict(reads), ends


def _of(sent, labels, partition):
    return [(o, v) for label in labels for p, o, v in sent[label] if p == partition]


# ---------------------------------------------------------------------------
# Java client


PARTITIONS = 3
PER_PARTITION = 5


def _requests(broker, api):
    """fjord_requests_total of one API on a Fjord broker (None against Kafka)."""
    if not hasattr(broker, "metrics"):
        return None
    return sum(v for n, labels, v in broker.metrics() if n == "fjord_requests_total" and labels.get("api") == api)


def test_java_commit_abort_commit(broker, tools):
    topic = create_topic(broker.bootstrap, unique("txn-java"), PARTITIONS)
    adds_before = _requests(broker, "add_partitions_to_txn")
    r = _java(
        tools, "commit-abort-commit", broker.bootstrap, topic, unique("txid"), str(PARTITIONS), str(PER_PARTITION)
    )
    # The Java client of the tools' version speaks transaction version 2 to a broker that
    # advertises it: its partitions join the transaction through Produce, not AddPartitionsToTxn.
    assert _requests(broker, "add_partitions_to_txn") == adds_before, "the Java client used transaction version 1"
    ends = [line for line in r.stdout.splitlines() if line.startswith(("COMMITTED", "ABORTED"))]
    assert ends == ["COMMITTED t1", "ABORTED t2", "COMMITTED t3"], r.describe()
    sent = _java_sent(r)
    assert all(len(sent[t]) == PARTITIONS * PER_PARTITION for t in ("t1", "t2", "t3")), r.describe()

    hw = latest_offsets(broker.bootstrap, topic, PARTITIONS, committed=False)
    lso = latest_offsets(broker.bootstrap, topic, PARTITIONS, committed=True)
    # Three transactions, each PER_PARTITION data records and its marker on every partition.
    assert hw == {p: 3 * (PER_PARTITION + 1) for p in range(PARTITIONS)}, hw
    assert lso == hw, f"ListOffsets(read_committed) {lso} != high watermark {hw} with no open transaction"

    java_rc, java_rc_end = _java_reads(r, "read_committed")
    java_ru, java_ru_end = _java_reads(r, "read_uncommitted")
    assert java_rc_end == hw and java_ru_end == hw, (java_rc_end, java_ru_end, hw)
    rdk_rc = _values(_read(broker.bootstrap, topic, PARTITIONS, committed=True))
    rdk_ru = _values(_read(broker.bootstrap, topic, PARTITIONS, committed=False))
    for p in range(PARTITIONS):
        committed = _of(sent, ("t1", "t3"), p)
        everything = _of(sent, ("t1", "t2", "t3"), p)
        assert len(committed) == 2 * PER_PARTITION
        assert java_rc.get(p) == committed, f"partition {p}: Java read_committed\n{r.describe()}"
        assert rdk_rc[p] == committed, f"partition {p}: librdkafka read_committed {rdk_rc[p]} != {committed}"
        assert java_ru.get(p) == everything, f"partition {p}: Java read_uncommitted\n{r.describe()}"
        assert rdk_ru[p] == everything, f"partition {p}: librdkafka read_uncommitted {rdk_ru[p]} != {everything}"


def test_java_producer_fenced_by_newer_instance(broker, tools):
    topic = create_topic(broker.bootstrap, unique("txn-fence"), 1)
    r = _java(tools, "fence", broker.bootstrap, topic, unique("txid"))
    assert not re.search(r"^NOT-FENCED", r.stdout, re.M), f"producer A was not fenced\n{r.describe()}"
    assert re.search(r"^FENCED ProducerFencedException ", r.stdout, re.M), r.describe()
    assert "COMMITTED B" in r.stdout.splitlines(), r.describe()
    sent = _java_sent(r)
    a, b = _of(sent, ("A",), 0), _of(sent, ("B",), 0)
    assert len(a) == 5 and len(b) == 5, r.describe()

    hw = latest_offsets(broker.bootstrap, topic, 1, committed=False)
    lso = latest_offsets(broker.bootstrap, topic, 1, committed=True)
    # A's transaction was aborted when B initialized (a marker), then B's committed (another).
    assert hw == {0: 12}, hw
    assert lso == hw, f"ListOffsets(read_committed) {lso} != high watermark {hw}"
    java_rc, _ = _java_reads(r, "read_committed")
    java_ru, _ = _java_reads(r, "read_uncommitted")
    assert java_rc.get(0) == b, f"Java read_committed must see B's records only\n{r.describe()}"
    assert java_ru.get(0) == a + b, r.describe()
    rdk_rc = _values(_read(broker.bootstrap, topic, 1, committed=True))
    assert rdk_rc[0] == b, f"librdkafka read_committed {rdk_rc[0]} != B's records {b}"


def _hang(bootstrap, topic, timeout_ms, count, out):
    """Transactions.java hang (output to `out`), once its transaction is open; the caller
    SIGKILLs it."""
    require_path("KAFKA_HOME")
    require_env("KAFKA_CLASSPATH")
    proc = subprocess.Popen(
        [kafka.RUN_CLASS, JAVA_SRC, "hang", bootstrap, topic, unique("txid"), str(timeout_ms), str(count)],
        stdout=open(out, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def opened():
        if proc.poll() is not None:
            raise AssertionError(f"Transactions.java hang exited ({proc.returncode}):\n{out.read_text()[-4000:]}")
        return "OPEN" in out.read_text()

    try:
        wait_for(opened, 90, interval=0.05, what="the transaction to be open", fatal=(AssertionError,))
    except BaseException:
        _kill9(proc)
        raise
    return proc


def _kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_open_transaction_times_out_and_is_aborted(broker, tools, tmp_path):
    topic = create_topic(broker.bootstrap, unique("txn-timeout"), 1)
    plain = [f"plain-{i}" for i in range(5)]
    produce(broker.bootstrap, topic, plain, partition=0)
    out = tmp_path / "hang.out"
    proc = _hang(broker.bootstrap, topic, 3000, 10, out)
    try:
        t_open = time.monotonic()
        hw = latest_offsets(broker.bootstrap, topic, 1, committed=False)[0]
        lso = latest_offsets(broker.bootstrap, topic, 1, committed=True)[0]
    finally:
        _kill9(proc)
    # Well within the 3 s timeout: the producer is gone, its transaction still holds the LSO.
    lso_killed = latest_offsets(broker.bootstrap, topic, 1, committed=True)[0]
    checked = time.monotonic() - t_open
    sent = [line for line in out.read_text().splitlines() if line.startswith("SENT open ")]
    assert len(sent) == 10, out.read_text()
    assert hw == 15, f"high watermark {hw} with 5 plain and 10 transactional records"
    assert (lso, lso_killed) == (5, 5), (
        f"ListOffsets(read_committed) {lso}, after the SIGKILL {lso_killed} ({checked:.1f} s after OPEN): "
        "want 5, the first offset of the open transaction"
    )
    rc_open = _read(broker.bootstrap, topic, 1, committed=True)[0]
    assert [v for _, _, v in rc_open] == plain, rc_open

    last = {}

    def stable():
        last["hw"] = latest_offsets(broker.bootstrap, topic, 1, committed=False)[0]
        last["lso"] = latest_offsets(broker.bootstrap, topic, 1, committed=True)[0]
        return last["lso"] == last["hw"]

    # transaction.timeout.ms is 3 s; Kafka looks for timed-out transactions every 10 s
    # (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    wait_for(stable, 30, interval=0.1, what="the timed-out transaction to be aborted (LSO = HW)")
    took = time.monotonic() - t_open
    print(f"LSO 5 while open (checked {checked:.1f} s after OPEN); LSO = HW {took:.1f} s after OPEN")
    assert last["hw"] == 16, f"high watermark {last['hw']}: want 15 + the abort marker"

    produce(broker.bootstrap, topic, ["after"], partition=0)
    rc = _read(broker.bootstrap, topic, 1, committed=True)[0]
    ru = _read(broker.bootstrap, topic, 1, committed=False)[0]
    assert [v for _, _, v in rc] == [*plain, "after"], f"read_committed after the abort: {rc}"
    assert [v for _, _, v in ru] == [*plain, *[f"open-{i}" for i in range(10)], "after"], ru
    assert rc[-1][0] == 16, f"'after' at offset {rc[-1][0]}, want 16 (after the abort marker)"


# ---------------------------------------------------------------------------
# the broker killed -9 and restarted


# Kafka 4.x rejects segment.bytes below 1 MiB (KIP-1030); Fjord is tested with 100 kB.
SEGMENT_BYTES = 1048576 if TARGET == "kafka" else 100_000
VALUE_BYTES = 1000
PER_SEGMENT = SEGMENT_BYTES // VALUE_BYTES  # ~records of VALUE_BYTES per segment
# librdkafka transactions of 1 kB records (label, segments' worth, committed); a1, aborted and
# longer than a segment, spans a segment boundary.
BULK = (("c1", 1.0, True), ("a1", 1.5, False), ("c2", 1.0, True), ("a2", 0.5, False), ("c3", 0.5, True))
# The open transaction must outlive the restart: Kafka's takes seconds (a JVM, log recovery).
TXN_TIMEOUT_MS = 20_000 if TARGET == "kafka" else 12_000
RESTART_OVERRIDES = {
    **DEFAULT_OVERRIDES,
    # Kafka looks for timed-out transactions every 10 s by default.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    # Kafka's 9 s session would hold a kill -9'd broker's restart back (its new registration
    # waits for the old session to expire); test_compaction.py sets the same.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}


def _padded(label, i):
    return f"{label}-{i:05d}-".ljust(VALUE_BYTES, "x")


def _bulk_transactions(bootstrap, topic):
    """BULK with librdkafka, every record acknowledged before its transaction ends:
    {label: [(offset, value)]}."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": unique("txid"),
            # librdkafka's default batch.size (1 MB) would put a whole segment in one batch.
            "batch.size": SEGMENT_BYTES // 10,
            "linger.ms": 5,
            **QUIET,
        }
    )
    p.init_transactions(30)
    sent, errors = defaultdict(list), []
    for label, segments, commit in BULK:

        def dr(err, msg, label=label):
            if err is not None:
                errors.append(f"{label}: {err}")
            else:
                sent[label].append((msg.offset(), msg.value().decode()))

        p.begin_transaction()
        for i in range(int(segments * PER_SEGMENT)):
            produce_waiting(p, topic, value=_padded(label, i), partition=0, on_delivery=dr)
            p.poll(0)
        assert p.flush(60) == 0 and not errors, f"{label}: {errors[:5]}"
        (p.commit_transaction if commit else p.abort_transaction)(30)
    return sent


def _idempotent_produce(bootstrap, topic, pid, epoch, seq, values):
    """One idempotent (not transactional) batch: (error code, base offset)."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    batch = kproto.record_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    with kproto.RawConn(host, int(port)) as c:
        _, ((_, _, err, base),), _ = kproto.parse_produce_v3_response(
            c.request(kproto.produce_v3_request(0x70 + seq, topic, 0, batch))
        )
    return err, base


def _same(got, want):
    """'' if two [(offset, value)] are equal, else where they first differ."""
    if got == want:
        return ""
    i = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))
    at = lambda recs: (recs[i][0], recs[i][1][:20]) if i < len(recs) else None  # noqa: E731
    return f"{len(got)} records, want {len(want)}; record {i} is {at(got)}, want {at(want)}"


def _load_line(broker, topic):
    """The numbers of Fjord's last "loaded log and producer state" line for partition 0 of
    `topic`."""
    pattern = re.compile(rf'loaded log and producer state topic="{re.escape(topic)}" partition=0 (.*)$')

    def found():
        return [m.group(1) for m in map(pattern.search, broker.log_path.read_text().splitlines()) if m]

    line = wait_for(found, 30, what=f"the load line of {topic} in {broker.log_path}")[-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", line)}


def test_transactions_survive_a_broker_kill_and_restart(broker_factory, tools, tmp_path):
    """A broker SIGKILLed and restarted on its data keeps its transactional state: aborted
    transactions in old segments of a many-segment log still skipped by read_committed, a
    transaction open at the kill still holding the last stable offset until its timeout aborts
    it, and an idempotent producer's last batch still known as a duplicate."""
    broker = broker_factory.start(RESTART_OVERRIDES)
    bootstrap = broker.bootstrap
    topic = create_topic(bootstrap, unique("txn-restart"), 1, config={"segment.bytes": str(SEGMENT_BYTES)})
    # The Java client's small transactions (t2 aborted) open the first segment.
    sent = _java_sent(_java(tools, "commit-abort-commit", bootstrap, topic, unique("txid"), "1", "5"))
    host, port = bootstrap.rsplit(":", 1)
    pid, epoch = kproto.init_producer_id(host, int(port))
    idem = ["idem-0", "idem-1"]
    err, idem_base = _idempotent_produce(bootstrap, topic, pid, epoch, 0, idem)
    assert err == 0, f"idempotent Produce: error {err}"
    sent["idem"] = [(0, idem_base + i, v) for i, v in enumerate(idem)]
    for label, recs in _bulk_transactions(bootstrap, topic).items():
        sent[label] = [(0, o, v) for o, v in recs]
    out = tmp_path / "hang.out"
    _kill9(_hang(bootstrap, topic, TXN_TIMEOUT_MS, 10, out))
    t_open = time.monotonic()
    sent["open"] = [(0, int(o), v) for o, v in re.findall(r"^SENT open 0 (\d+) (\S+)$", out.read_text(), re.M)]
    assert len(sent["open"]) == 10, out.read_text()

    committed = sorted(_of(sent, ("t1", "t3", "idem", *(b[0] for b in BULK if b[2])), 0))
    everything = sorted(_of(sent, list(sent), 0))
    want = {"t1": 5, "t2": 5, "t3": 5, "idem": 2, **{b[0]: int(b[1] * PER_SEGMENT) for b in BULK}, "open": 10}
    assert {label: len(recs) for label, recs in sent.items()} == want, out.read_text()
    first_open = sent["open"][0][1]
    hw = latest_offsets(bootstrap, topic, 1, committed=False)[0]
    lso = latest_offsets(bootstrap, topic, 1, committed=True)[0]
    assert (hw, lso) == (first_open + 10, first_open), f"before the kill: HW {hw}, LSO {lso}, open at {first_open}"
    rc = _values(_read(bootstrap, topic, 1, committed=True))[0]
    ru = _values(_read(bootstrap, topic, 1, committed=False))[0]
    assert not _same(rc, committed), f"read_committed before the kill: {_same(rc, committed)}"
    assert not _same(ru, everything), f"read_uncommitted before the kill: {_same(ru, everything)}"

    bases = sorted(int(p.stem) for p in segment_files(broker.data_dir / f"{topic}-0"))
    span = lambda label: (sent[label][0][1], sent[label][-1][1])  # noqa: E731
    assert len(bases) >= 3, f"segments {bases}: the log must have several before the kill"
    assert span("t2")[1] < bases[1], f"t2 {span('t2')} not in the first of segments {bases}"
    assert any(span("a1")[0] < b <= span("a1")[1] for b in bases), f"a1 {span('a1')} within one of {bases}"

    broker.kill9()
    # Kafka's own tool reads the first segment's aborted-transaction index: t2, to its marker.
    txnindex = broker.data_dir / f"{topic}-0" / f"{bases[0]:020d}.txnindex"
    dump = kafka.run_class(DUMP_LOG_SEGMENTS, "--files", str(txnindex)).stdout
    t2_entry = rf"^version: 0 producerId: \d+ firstOffset: {span('t2')[0]} lastOffset: {span('t2')[1] + 1} "
    assert re.search(t2_entry, dump, re.M), f"kafka-dump-log of {txnindex.name}:\n{dump}"
    # And it decodes every record of the transaction log, the open transaction's among them.
    state_logs = [p for p in broker.data_dir.glob("__transaction_state-*/*.log") if p.stat().st_size > 0]
    files = ",".join(map(str, state_logs))
    dump = kafka.run_class(DUMP_LOG_SEGMENTS, "--transaction-log-decoder", "--files", files).stdout
    records = dump.count("| offset:")
    decoded = len(re.findall(r'\| offset: .* key: \{"type":"0".* payload: \{"version":"[01]"', dump))
    assert records and decoded == records, f"{decoded} of {records} transaction log records decoded:\n{dump[-3000:]}"
    open_state = rf'"transactionStatus":1,"transactionPartitions":\[\{{"topic":"{topic}"'
    assert re.search(open_state, dump), f"no Ongoing transaction on {topic} in the transaction log:\n{dump[-3000:]}"
    broker.restart()
    if TARGET != "kafka":
        # Closed segments opened from their indexes, and producer state from the snapshot taken
        # at the last roll plus the batches after it: not a read of the whole log.
        opened = _load_line(broker, topic)
        assert (opened["lazy_segments"], opened["scanned_segments"]) == (len(bases) - 1, 1), opened
        assert opened["snapshot_offset"] >= bases[-1] and opened["replayed_batches"] < 40, opened
    hw_after = wait_for(
        lambda: latest_offsets(bootstrap, topic, 1, committed=False), 60, what="ListOffsets after the restart"
    )[0]
    lso_after = latest_offsets(bootstrap, topic, 1, committed=True)[0]
    checked = time.monotonic() - t_open
    dup = _idempotent_produce(bootstrap, topic, pid, epoch, 0, idem)
    assert checked < TXN_TIMEOUT_MS / 1000, f"the restart took until {checked:.1f} s after OPEN, past the timeout"
    assert (hw_after, lso_after) == (hw, lso), f"after the restart: HW {hw_after}, LSO {lso_after}; before {hw}, {lso}"
    # A broker that lost the producer's state would take the resent batch for a new producer's first.
    assert dup == (0, idem_base), f"the resent idempotent batch: (error, offset) {dup}, want (0, {idem_base})"
    # Open or by now aborted, the hanging transaction is not read_committed.
    rc_after = _values(_read(bootstrap, topic, 1, committed=True))[0]
    ru_after = _values(_read(bootstrap, topic, 1, committed=False))[0]
    assert not _same(rc_after, committed), f"read_committed after the restart: {_same(rc_after, committed)}"
    assert not _same(ru_after, everything), f"read_uncommitted after the restart: {_same(ru_after, everything)}"

    last = {}

    def stable():
        last["hw"] = latest_offsets(bootstrap, topic, 1, committed=False)[0]
        last["lso"] = latest_offsets(bootstrap, topic, 1, committed=True)[0]
        return last["lso"] == last["hw"]

    wait_for(stable, 60, interval=0.2, what="the timed-out transaction to be aborted (LSO = HW)")
    took = time.monotonic() - t_open
    assert last["hw"] == hw + 1, f"high watermark {last['hw']}: want {hw} + the abort marker"
    rc_final = _values(_read(bootstrap, topic, 1, committed=True))[0]
    ru_final = _values(_read(bootstrap, topic, 1, committed=False))[0]
    assert not _same(rc_final, committed), f"read_committed after the abort: {_same(rc_final, committed)}"
    assert not _same(ru_final, everything), f"read_uncommitted after the abort: {_same(ru_final, everything)}"
    # The producer carries on from its last sequence number; a broker that forgot it would
    # refuse the gap.
    err, base = _idempotent_produce(bootstrap, topic, pid, epoch, len(idem), ["idem-2"])
    assert (err, base) == (0, hw + 1), f"the idempotent producer's next batch: (error, offset) {(err, base)}"
    print(
        f"{len(bases)} segments, HW {hw}, LSO {lso}; checked {checked:.1f} s after OPEN, "
        f"LSO = HW {took:.1f} s after OPEN"
    )


# ---------------------------------------------------------------------------
# librdkafka: consume-transform-produce, exactly once across a SIGKILL


N_INPUT = 2000
BATCH = 100


class _WorkerLog:
    def __init__(self, path):
        self.path = path

    def lines(self):
        return self.path.read_text().splitlines() if self.path.exists() else []

    def commits(self):
        return [int(line.split()[1]) for line in self.lines() if line.startswith("COMMIT ")]

    def open_records(self):
        """The records of the transaction open at the end of the log, or 0."""
        lines = self.lines()
        return int(lines[-1].split()[1]) if lines and lines[-1].startswith("OPEN ") else 0

    def done(self):
        return any(line.startswith("DONE ") for line in self.lines())


def _spawn_worker(tools, tmp_path, name, args, pause_ms):
    log = tmp_path / f"{name}.log"
    out = tmp_path / f"{name}.out"
    proc = subprocess.Popen(
        [tools.py, WORKER, *args, out, str(BATCH), str(pause_ms)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, _WorkerLog(out), log


def test_librdkafka_consume_transform_produce_exactly_once(broker, tools, tmp_path):
    in_topic = create_topic(broker.bootstrap, unique("txn-in"), PARTITIONS)
    out_topic = create_topic(broker.bootstrap, unique("txn-out"), PARTITIONS)
    keys = [f"k{i:04d}" for i in range(N_INPUT)]
    values = [f"value-{i:04d}" for i in range(N_INPUT)]
    produce(broker.bootstrap, in_topic, values, keys=keys)
    args = [broker.bootstrap, in_topic, out_topic, unique("txn-group"), unique("txid")]

    # Worker 1 pauses with each transaction open and its records acknowledged; it is killed in
    # such a pause after 5 commits, so the output holds records of a transaction never ended.
    proc, w1, log1 = _spawn_worker(tools, tmp_path, "worker1", args, pause_ms=200)
    killed_open = 0
    try:

        def open_after_commits():
            if proc.poll() is not None:
                raise AssertionError(f"worker 1 exited ({proc.returncode}):\n{log1.read_text()[-4000:]}")
            return len(w1.commits()) >= 5 and w1.open_records()

        wait_for(open_after_commits, 90, interval=0.02, what="worker 1's 6th transaction", fatal=(AssertionError,))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_open = w1.open_records()
    first = sum(w1.commits())
    assert not w1.done() and first < N_INPUT, f"worker 1 finished before the kill: {w1.lines()[-5:]}"
    assert killed_open == BATCH, f"worker 1 was not killed with a transaction open: {w1.lines()[-5:]}"

    proc, w2, log2 = _spawn_worker(tools, tmp_path, "worker2", args, pause_ms=0)
    try:
        rc = proc.wait(150)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rc = "TIMEOUT"
    assert rc == 0 and w2.done(), f"worker 2 exit {rc}:\n{log2.read_text()[-4000:]}\n{w2.lines()[-10:]}"
    second = sum(w2.commits())
    # The offsets are committed in the transactions: worker 2 starts where worker 1's last
    # commit left off, so together they processed every input record once.
    assert first + second == N_INPUT, f"worker 1 committed {first} records, worker 2 {second}: want {N_INPUT} together"

    rc_read = _read(broker.bootstrap, out_topic, PARTITIONS, committed=True)
    got = [(k, v) for recs in rc_read.values() for _, k, v in recs]
    counts = Counter(k for k, _ in got)
    dups = sorted(k for k, n in counts.items() if n > 1)
    missing = [k for k in keys if k not in counts]
    wrong = sorted((k, v) for k, v in got if v != f"VALUE-{k[1:]}")
    assert not dups, f"{len(dups)} input records in the output more than once, e.g. {dups[:10]}"
    assert not missing, f"{len(missing)} input records missing from the output, e.g. {missing[:10]}"
    assert not wrong, f"output values not the uppercased input: {wrong[:10]}"
    assert len(got) == N_INPUT
    # The killed worker's open transaction is in the log, aborted when worker 2 initialized.
    ru_total = sum(len(v) for v in _read(broker.bootstrap, out_topic, PARTITIONS, committed=False).values())
    assert ru_total == N_INPUT + killed_open, (
        f"read_uncommitted: {ru_total} output records, want {N_INPUT} + {killed_open}"
    )
    print(
        f"worker 1: {len(w1.commits())} transactions, {first} records, killed with {killed_open} uncommitted; "
        f"worker 2: {second} records"
    )


# ---------------------------------------------------------------------------
# kafkajs


def test_kafkajs_transactions(broker, tools):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed", pytrace=False)
    in_topic = create_topic(broker.bootstrap, unique("txn-js-in"), 1)
    produce(broker.bootstrap, in_topic, [f"in-{i}" for i in range(20)], partition=0)
    topic = create_topic(broker.bootstrap, unique("txn-js"), 1)
    group = unique("txn-js-group")
    r = run(
        [node, KAFKAJS_SCRIPT],
        timeout=120,
        env={
            "NODE_PATH": tools.node_path,
            "FJORD_BOOTSTRAP": broker.bootstrap,
            "FJORD_TOPIC": topic,
            "FJORD_INPUT_TOPIC": in_topic,
            "FJORD_GROUP": group,
            "FJORD_TXID": unique("txid"),
            "FJORD_TIMEOUT_MS": "90000",
            "KAFKAJS_NO_PARTITIONER_WARNING": "1",
        },
        check=False,
    )
    assert r.rc == 0 and "DONE" in r.stdout.splitlines(), f"kafkajs transactions script failed\n{r.describe()}"
    ends = [line for line in r.stdout.splitlines() if line.startswith(("COMMITTED", "ABORTED"))]
    assert ends == ["COMMITTED t1", "ABORTED t2", "COMMITTED t3"], r.describe()

    base = {}
    for label, meta in re.findall(r"^SENT (\S+) (.*)$", r.stdout, re.M):
        (m,) = json.loads(meta)
        assert m["errorCode"] == 0, r.describe()
        base[label] = int(m["baseOffset"])
    committed = [(base["t1"] + i, f"committed-{i}") for i in range(5)] + [(base["t3"], "end")]
    received = [json.loads(m) for m in re.findall(r"^RECEIVED (.*)$", r.stdout, re.M)]
    assert [(int(m["offset"]), m["value"]) for m in received] == committed, (
        f"the kafkajs read_committed consumer must see transactions 1 and 3 only\n{r.describe()}"
    )

    def offset_of(line):
        (t,) = json.loads(re.search(rf"^{line} (.*)$", r.stdout, re.M).group(1))
        return int(t["partitions"][0]["offset"])

    assert offset_of("OFFSETS-BEFORE") == -1, r.describe()
    assert offset_of("OFFSETS") == 5, f"sendOffsets of the committed transaction only\n{r.describe()}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, **QUIET})
    try:
        (tp,) = c.committed([TopicPartition(in_topic, 0)], timeout=15)
    finally:
        c.close()
    assert tp.error is None and tp.offset == 5, f"librdkafka sees {group}'s commit as {tp}"

    rc = _values(_read(broker.bootstrap, topic, 1, committed=True))[0]
    assert rc == committed, f"librdkafka read_committed {rc}"
    ru = _values(_read(broker.bootstrap, topic, 1, committed=False))[0]
    assert [v for _, v in ru] == [f"committed-{i}" for i in range(5)] + [f"aborted-{i}" for i in range(5)] + ["end"]
    hw = latest_offsets(broker.bootstrap, topic, 1, committed=False)
    assert latest_offsets(broker.bootstrap, topic, 1, committed=True) == hw == {0: base["t3"] + 2}, hw


def _table(out):
    """Rows of a kafka-transactions.sh table (tab-separated, header first) as dicts."""
    lines = [line for line in out.splitlines() if "\t" in line]
    assert lines, f"no table in:\n{out}"
    header = [h.strip() for h in lines[0].split("\t")]
    return [dict(zip(header, (c.strip() for c in line.split("\t")), strict=False)) for line in lines[1:]]


def test_kafka_transactions_tool_lists_describes_and_finds_no_hanging(broker, tools):
    """kafka-transactions.sh list, describe, describe-producers and find-hanging on an open
    transaction, and list again once it committed."""
    topic = create_topic(broker.bootstrap, unique("txtool"), 1)
    produce(broker.bootstrap, topic, ["plain-0", "plain-1"], partition=0)
    tid = unique("txtool-id")
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid, **QUIET})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"in-txn", partition=0)
    assert p.flush(30) == 0

    def tool(*args):
        r = tools.run_class("org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", broker.bootstrap, *args)
        return _table(r.stdout)

    listed = {r["TransactionalId"]: r for r in tool("list")}
    assert listed.get(tid, {}).get("TransactionState") == "Ongoing", listed
    (desc,) = tool("describe", "--transactional-id", tid)
    assert desc["TransactionState"] == "Ongoing" and desc["TopicPartitions"] == f"{topic}-0", desc
    assert desc["ProducerId"] == listed[tid]["ProducerId"], (desc, listed[tid])
    producers = tool("describe-producers", "--topic", topic, "--partition", "0")
    open_txn = [r for r in producers if r["ProducerId"] == desc["ProducerId"]]
    assert open_txn and open_txn[0]["CurrentTransactionStartOffset"] == "2", producers
    # The open transaction is known to its coordinator: not hanging.
    assert tool("find-hanging", "--broker-id", "1") == []  # single-node brokers are node 1
    p.commit_transaction(30)
    wait_for(
        lambda: (
            {r["TransactionalId"]: r for r in tool("list")}.get(tid, {}).get("TransactionState") == "CompleteCommit"
        ),
        30,
        what="CompleteCommit in kafka-transactions.sh list",
    )


def test_a_transactional_batch_outside_its_transaction_is_refused(broker):
    """KIP-890 verification: a transactional batch for a partition its producer never added to
    a transaction (what a produce request delayed past its transaction's end looks like) is
    refused, nothing is stored, and the partition's last stable offset does not hang."""
    topic = create_topic(broker.bootstrap, unique("txverify"), 1)
    produce(broker.bootstrap, topic, ["plain"], partition=0)
    tid = unique("txverify-id")
    # The real client finds the coordinator (creating __transaction_state) and initializes.
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid, **QUIET})
    p.init_transactions(30)
    del p
    host, port = broker.bootstrap.split(",")[0].rsplit(":", 1)
    with kproto.RawConn(host, int(port)) as c:
        _, err, pid, epoch = kproto.parse_init_producer_id_v0_response(
            c.request(kproto.init_producer_id_v0_request(0x51, transactional_id=tid))
        )
        assert err == 0, f"InitProducerId: error {err}"
        batch = kproto.record_batch(
            ["stray"], producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True
        )
        _, parts, _ = kproto.parse_produce_v3_response(
            c.request(kproto.produce_v3_request(0x52, topic, 0, batch, transactional_id=tid))
        )
    ((_, _, code, _),) = parts
    assert code != 0, "a transactional batch outside any transaction was written"
    print(f"refused with error code {code}")
    assert (
        latest_offsets(broker.bootstrap, topic, 1, True) == latest_offsets(broker.bootstrap, topic, 1, False) == {0: 1}
    )


def test_version_2_fences_the_delayed_requests_of_an_earlier_transaction(broker):
    """Transaction version 2 (KIP-890): a transactional Produce v12 adds its partition itself,
    every EndTxn v5 bumps the epoch, so the EndTxn and the Produce of an earlier transaction,
    delayed until the next one is open (Jepsen's finding against version 1, 2024), are fenced
    instead of ending or joining it; a retried EndTxn is answered as it was."""
    topic = create_topic(broker.bootstrap, unique("txv2"), 1)
    tid = unique("txv2-id")
    # The real client finds the coordinator (creating __transaction_state) and initializes.
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid, **QUIET})
    p.init_transactions(30)
    del p
    host, port = broker.bootstrap.split(",")[0].rsplit(":", 1)
    cid = iter(range(0x60, 0x100))

    def produce(c, value, epoch, seq):
        batch = kproto.record_batch(
            [value], producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True
        )
        return kproto.parse_produce_v12_response(
            c.request(kproto.produce_v12_request(next(cid), topic, 0, batch, transactional_id=tid))
        )

    def end(c, epoch, commit):
        return kproto.parse_end_txn_v5_response(
            c.request(kproto.end_txn_v5_request(next(cid), tid, pid, epoch, commit))
        )

    def retried(call):
        """The answer once it is no longer CONCURRENT_TRANSACTIONS or NOT_ENOUGH_REPLICAS (the
        previous transaction's markers are still being written)."""
        deadline = time.monotonic() + 30
        while True:
            r = call()
            if (r[0] if isinstance(r, tuple) else r) not in (51, 19) or time.monotonic() > deadline:
                return r
            time.sleep(0.1)

    with kproto.RawConn(host, int(port)) as c:
        _, err, pid, e0 = kproto.parse_init_producer_id_v0_response(
            c.request(kproto.init_producer_id_v0_request(next(cid), transactional_id=tid))
        )
        assert err == 0, f"InitProducerId: error {err}"
        assert retried(lambda: produce(c, "txn1", e0, 0)) == 0, "Produce v12 must add the partition"
        err, pid1, e1 = retried(lambda: end(c, e0, True))
        assert (err, pid1, e1) == (0, pid, e0 + 1), f"EndTxn v5 must bump the epoch: {(err, pid1, e1)}"
        assert retried(lambda: end(c, e0, True)) == (0, pid, e1), "a retried EndTxn is answered with the bumped epoch"
        assert retried(lambda: produce(c, "txn2", e1, 0)) == 0
        late_end = end(c, e0, True)[0]
        late_produce = produce(c, "txn1-late", e0, 1)
        assert late_end == 90, f"a delayed EndTxn of transaction 1 must be PRODUCER_FENCED, got {late_end}"
        assert late_produce in (47, 90), f"a delayed Produce of transaction 1 must be fenced, got {late_produce}"
        assert retried(lambda: end(c, e1, False))[0] == 0
    print(f"delayed EndTxn: {late_end}, delayed Produce: {late_produce}")
    values = lambda committed: [v for _, _, v in _read(broker.bootstrap, topic, 1, committed)[0]]  # noqa: E731
    assert values(True) == ["txn1"], "transaction 2 is aborted, the delayed writes are nowhere"
    assert values(False) == ["txn1", "txn2"]
