"""Log compaction (cleanup.policy=compact): the latest value per key survives, superseded records
and (after delete.retention.ms) tombstones go, on disk too; compact,delete; every codec; keyless
records refused; idempotent retries after cleaning; kill -9 during cleaning; a replicated
compacted topic through a follower kill and leader changes; __consumer_offsets stays bounded.

What makes Kafka clean, found against Apache Kafka 4.3 and done the same way for both targets:
- The active segment is never cleaned, so superseded data must sit in closed segments. A segment
  rolls by size, or by segment.ms on the next append after that age: the tests write a few
  "filler" records of new keys after segment.ms (_Fillers), which then count as live keys too.
- A log is cleaned when its dirty (closed, not yet cleaned) bytes are more than
  min.cleanable.dirty.ratio of its cleanable bytes; log.cleaner.backoff.ms is the pause between
  checks (15 s by default, 200 ms here).
- A tombstone survives the first cleaning pass that sees it (which sets its batch's delete horizon,
  now + delete.retention.ms, KIP-534) and goes in a later pass after that horizon; Kafka starts no
  pass just because a horizon passed, the log must be dirty again: more fillers after
  delete.retention.ms do that.
"""

import json
import os
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, ElectionType
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from conftest import TARGET

from harness import kproto
from harness.clients import (
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
    admin,
    create_topic,
    produce_waiting,
    unique,
    wait_for,
    watermarks,
)
from harness.paths import segment_files

# Kafka 4.x rejects segment.bytes below 1 MiB (KIP-1030); Fjord is tested with 100 kB.
SEGMENT_BYTES = 1048576 if TARGET == "kafka" else 100_000
SEGMENT_MS = 2000
DELETE_RETENTION_MS = 2000
# librdkafka's default batch.size (1 MB) would put a whole segment in one batch.
SMALL_BATCHES = {"batch.size": SEGMENT_BYTES // 10, "linger.ms": 5}
QUIET = {"log_level": 2}

CLEANER = {
    "log.cleaner.backoff.ms": "200",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "log.retention.check.interval.ms": "1000",
    # Kafka's 9 s session would hold a kill -9'd broker's restart back (its new registration
    # waits for the old session to expire); test_replication.py sets the same.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}
if TARGET == "kafka":
    # Kafka renames replaced segments to *.deleted and removes them 60 s later by default.
    CLEANER["log.segment.delete.delay.ms"] = "500"
OVERRIDES = {
    **CLEANER,
    "offsets.topic.segment.bytes": str(SEGMENT_BYTES),
    "offsets.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
}


def _compact_config(**extra):
    cfg = {
        "cleanup.policy": "compact",
        "segment.bytes": str(SEGMENT_BYTES),
        "segment.ms": str(SEGMENT_MS),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
    }
    cfg.update({k.replace("_", "."): v for k, v in extra.items()})
    return cfg


@pytest.fixture(scope="module")
def cbroker(module_broker_factory):
    return module_broker_factory.start(OVERRIDES)


# ---------------------------------------------------------------------------
# helpers


def _send(bootstrap, topic, items, conf=None, timeout=120):
    """Produce (key, value[, timestamp_ms]) items to partition 0 with an idempotent acks=all
    producer (a value None is a tombstone) and wait for every delivery report. Returns the
    offsets in delivery order; raises on any delivery error."""
    cfg = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", **SMALL_BATCHES, **QUIET}
    cfg.update(conf or {})
    p = Producer(cfg)
    offsets, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(f"{msg.key()}: {err}")
        else:
            offsets.append(msg.offset())

    for item in items:
        kw = {"key": item[0], "value": item[1], "partition": 0, "on_delivery": dr}
        if len(item) > 2:
            kw["timestamp"] = item[2]
        produce_waiting(p, topic, **kw)
        p.poll(0)
    remaining = p.flush(timeout)
    assert not errors, f"delivery errors ({len(errors)}): {errors[:10]}"
    assert remaining == 0 and len(offsets) == len(items), (
        f"{len(offsets)} of {len(items)} delivered, {remaining} still queued after {timeout}s"
    )
    return offsets


def _read(bootstrap, topic, start=OFFSET_BEGINNING, timeout=60):
    """Read partition 0 from `start` up to the high watermark it had when the read began:
    [(offset, key, value)] (None for a null key or value)."""
    _lo, hi = watermarks(bootstrap, topic, 0)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("compaction-reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **QUIET,
        }
    )
    out = []
    try:
        c.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"read {topic}[0] from {start}: {len(out)} records, no end at {hi} in {timeout}s")
            for m in c.consume(num_messages=10000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= hi:
                            return out
                        continue
                    raise AssertionError(f"consume {topic}[0]: {err}")
                out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def _problems(records, want, gone=(), tombstones_ok=False):
    """What keeps `records` (a read from the log start) from being fully compacted: every key of
    `want` exactly once with its value, no record of a key in `gone` (with tombstones_ok: at most
    its one tombstone), no other key. '' if nothing."""
    count, last = {}, {}
    for _, k, v in records:
        count[k] = count.get(k, 0) + 1
        last[k] = v
    dup = [k for k, n in count.items() if n > 1]
    missing = [k for k in want if k not in last]
    wrong = [(k, last[k], want[k]) for k in want if k in last and last[k] != want[k]]
    deleted = [(k, last[k]) for k in gone if k in last and not (tombstones_ok and last[k] is None)]
    extra = [k for k in last if k not in want and k not in gone]
    return _describe(
        ("keys with more than one record", dup),
        ("live keys missing", missing),
        ("keys whose value is not the latest (key, got, want)", wrong),
        ("deleted keys still in the log (key, last value)", deleted),
        ("keys never written", extra),
    )


def _describe(*findings):
    """'N what, e.g. [first three]; ...' for each (what, list) that is not empty."""
    return "; ".join(f"{len(lst)} {name}, e.g. {lst[:3]}" for name, lst in findings if lst)


def _latest_problems(records, want, gone):
    """Whether a read (compacted or not) still says what was acknowledged last: per key, its last
    record is the latest value; a deleted key has no record or a tombstone last. '' if so."""
    last = {}
    for _, k, v in records:
        last[k] = v
    missing = [k for k in want if k not in last]
    wrong = [(k, last[k], want[k]) for k in want if k in last and last[k] != want[k]]
    back = [(k, last[k]) for k in gone if last.get(k) is not None]
    return _describe(
        ("live keys missing", missing),
        ("keys whose last value is not the latest acknowledged (key, got, want)", wrong),
        ("deleted keys that have a value again (key, value)", back),
    )


class _Fillers:
    """Writes a batch of filler records (new keys, added to `want`) when SEGMENT_MS has passed
    since the topic's last write: that append rolls the active segment, so what was written
    before it lies in closed segments the cleaner may clean, and the log is dirty again."""

    def __init__(self, bootstrap, topic, want, n=40, conf=None):
        self.bootstrap = bootstrap if callable(bootstrap) else (lambda: bootstrap)
        self.topic, self.want, self.n, self.conf = topic, want, n, conf
        self.rounds = 0
        self.t_last = time.monotonic()

    def touch(self):
        """The topic was just written to by someone else."""
        self.t_last = time.monotonic()

    def maybe_write(self):
        if time.monotonic() - self.t_last < SEGMENT_MS / 1000 + 0.3:
            return
        items = [
            (f"filler-{self.rounds:03d}-{i:02d}".encode(), f"filler {self.rounds}-{i} ".ljust(40, "f").encode())
            for i in range(self.n)
        ]
        _send(self.bootstrap(), self.topic, items, conf=self.conf)
        self.want.update(items)
        self.rounds += 1
        self.t_last = time.monotonic()


def _wait_compacted(bootstrap, topic, want, gone, fillers, timeout=120, tombstones_ok=False, what="compaction"):
    """Poll (writing fillers, see _Fillers) until a read from the beginning is fully compacted
    (_problems); returns that read."""
    last = {}

    def cond():
        fillers.maybe_write()
        recs = _read(bootstrap, topic)
        p = _problems(recs, want, gone, tombstones_ok)
        last["p"] = f"{len(recs)} records read, {len(want)} live keys expected: {p}"
        return None if p else recs

    return wait_for(cond, timeout, interval=0.5, what=f"{topic}: {what}", details=lambda: last.get("p"))


def _log_files(data_dir, topic, partition=0):
    """{name: size} of the partition's segment files."""
    return {p.name: size for p, size in segment_files(Path(data_dir) / f"{topic}-{partition}").items()}


def _produce_raw(host, port, topic, batch, retry_s=30):
    """Produce v3 of one batch to partition 0: (error_code, base_offset). Retries while the
    broker is not (yet) the leader or not reachable, e.g. just after a restart."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            with kproto.RawConn(host, port) as c:
                _, res, _ = kproto.parse_produce_v3_response(c.request(kproto.produce_v3_request(7, topic, 0, batch)))
            err, base = res[0][2], res[0][3]
            if err not in (3, 5, 6) or time.monotonic() > deadline:  # unknown partition, no leader, not leader
                return err, base
        except (OSError, ConnectionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _note_written(items, want, gone):
    """Record acknowledged (key, value) items: the latest value of a key, or its deletion."""
    for k, v in items:
        if v is None:
            want.pop(k, None)
            gone.add(k)
        else:
            want[k] = v
            gone.discard(k)


def _key(k):
    return f"key-{k:05d}".encode()


# ---------------------------------------------------------------------------
# single broker


def test_compacted_topic_keeps_the_latest_value_per_key(cbroker):
    """1,000 keys x 200 updates, then tombstones for 100 keys: compaction leaves one record per
    live key with its latest value and no deleted key; offsets keep increasing with gaps; a
    consumer placed on a removed offset starts at the next present one; the partition's segment
    files shrink to within 2x of what a fetch of the live records returns."""
    bs = cbroker.bootstrap
    n_keys, updates, n_deleted = 1000, 200, 100
    topic = create_topic(bs, unique("compact"), 1, config=_compact_config())

    def value(k, u):
        return f"key-{k:05d} update {u:03d} ".ljust(40, "v").encode()

    # Update by update (update u of every key, then u+1): the latest values end up together.
    items = [(_key(k), value(k, u)) for u in range(updates) for k in range(n_keys)]
    items += [(_key(k), None) for k in range(n_deleted)]
    t0 = time.monotonic()
    _send(bs, topic, items)
    n = len(items)
    assert watermarks(bs, topic, 0) == (0, n)
    t_written = time.monotonic()
    want = {_key(k): value(k, updates - 1) for k in range(n_deleted, n_keys)}
    gone = {_key(k) for k in range(n_deleted)}
    fillers = _Fillers(bs, topic, want)
    recs = _wait_compacted(bs, topic, want, gone, fillers, what="one record per live key, no tombstone left")
    t_clean = time.monotonic()

    offsets = [o for o, _, _ in recs]
    assert all(b > a for a, b in zip(offsets, offsets[1:], strict=False)), (
        "offsets of a compacted log must keep increasing"
    )
    gaps = [(a, b) for a, b in zip(offsets, offsets[1:], strict=False) if b > a + 1]
    assert gaps, "no gap between the offsets of the compacted log"
    low, high = watermarks(bs, topic, 0)
    assert high == n + fillers.rounds * fillers.n, f"high watermark {high}"
    assert low <= offsets[0], (low, offsets[0])

    # A consumer assigned at a removed offset gets the next present offset first.
    present = set(offsets)
    mid = gaps[len(gaps) // 2]
    probes = [(mid[0] + 1, mid[1]), (mid[1] - 1, mid[1])]
    if low not in present:
        probes.append((low, offsets[0]))
    for removed, nxt in probes:
        assert removed not in present
        got = _read(bs, topic, start=removed)
        assert got and got[0][0] == nxt, f"assigned at removed offset {removed}: first record {got[:1]}, want {nxt}"

    # On disk: the segment files (*.log) against the batches a fetch of the whole log returns
    # (the live records as stored, batch headers included): what is not served must be gone.
    batches = kproto.fetch_batches(cbroker.host, cbroker.port, topic, 0, start=low)
    served = sum(b.size for b in batches)
    fetched = [r for b in batches for r in (b.records or [])]
    assert [(o, k) for o, k, _ in fetched] == [(o, k) for o, k, _ in recs], "Fetch v4 disagrees with the consumer"
    kv = sum(len(k) + len(v) for _, k, v in recs)
    files = {}

    def small():
        files.update(f=_log_files(cbroker.data_dir, topic))
        return sum(files["f"].values()) <= 2 * served

    wait_for(
        small,
        30,
        interval=0.5,
        what=f"the segment files to shrink to 2 x {served} bytes",
        details=lambda: f"segment files: {files.get('f')}",
    )
    disk = sum(files["f"].values())
    print(
        f"{n} records written in {t_written - t0:.1f}s; compacted to {len(recs)} records "
        f"{t_clean - t_written:.1f}s later ({fillers.rounds} filler writes); segment files {disk} bytes, "
        f"served {served} bytes in {len(batches)} batches, keys+values {kv} bytes"
    )


def test_compact_delete_also_drops_segments_by_retention(cbroker):
    """cleanup.policy=compact,delete: segments whose records are older than retention.ms go
    (the log start moves past them, old keys are gone although compaction alone keeps a key's
    latest value), and compaction keeps the latest value of each recent key."""
    bs = cbroker.bootstrap
    topic = create_topic(
        bs,
        unique("compact-delete"),
        1,
        config=_compact_config(cleanup_policy="compact,delete", retention_ms="60000"),
    )
    # Old records (timestamps 10 minutes back): about 2.5 segments of 200 keys.
    old_keys = 200
    per_round = old_keys * 130
    rounds = -(-SEGMENT_BYTES * 5 // 2 // per_round)
    ts0 = int(time.time() * 1000) - 600_000
    items = [
        (f"old-{k:03d}".encode(), f"old-{k:03d} update {u:03d} ".ljust(100, "o").encode(), ts0 + u)
        for u in range(rounds)
        for k in range(old_keys)
    ]
    _send(bs, topic, items)
    n_old = len(items)
    assert watermarks(bs, topic, 0) == (0, n_old)
    # Every old segment goes by retention (the active one too: both roll it to delete it).
    wait_for(
        lambda: watermarks(bs, topic, 0) == (n_old, n_old),
        60,
        interval=0.5,
        what=f"retention.ms to remove all {n_old} old records (log start {n_old})",
        details=lambda: f"watermarks {watermarks(bs, topic, 0)}, files {_log_files(cbroker.data_dir, topic)}",
    )

    # Recent records: 50 keys x 10 updates, and one old key written again.
    recent = [
        (f"new-{k:03d}".encode(), f"new-{k:03d} update {u:02d} ".ljust(60, "n").encode())
        for u in range(10)
        for k in range(50)
    ]
    recent.append((b"old-000", b"old-000 written again recently"))
    _send(bs, topic, recent)
    want = dict(recent)
    gone = {f"old-{k:03d}".encode() for k in range(1, old_keys)}
    fillers = _Fillers(bs, topic, want)
    recs = _wait_compacted(bs, topic, want, gone, fillers, what="the recent keys compacted")
    low, high = watermarks(bs, topic, 0)
    assert low >= n_old, f"log start went back to {low}"
    assert recs[0][0] >= n_old
    assert high == n_old + len(recent) + fillers.rounds * fillers.n
    print(f"{n_old} old records dropped by retention; {len(recent)} recent compacted to {len(recs)} records")


def test_cleanup_policy_changed_at_runtime(cbroker):
    """A topic created with cleanup.policy=delete keeps every record; IncrementalAlterConfigs
    setting cleanup.policy=compact (and the cleaner's topic configs) on the running broker
    makes the cleaner compact it, with no restart."""
    bs = cbroker.bootstrap
    cfg = _compact_config()
    cfg["cleanup.policy"] = "delete"
    topic = create_topic(bs, unique("compact-later"), 1, config=cfg)
    items = [(_key(k), f"key-{k:05d} update {u:02d} ".ljust(60, "u").encode()) for u in range(40) for k in range(300)]
    _send(bs, topic, items)
    want = dict(items)
    fillers = _Fillers(bs, topic, want)
    time.sleep(SEGMENT_MS / 1000 + 1)
    fillers.maybe_write()
    time.sleep(3)  # several cleaner backoffs: a delete topic must stay as written
    assert len(_read(bs, topic)) == len(items) + fillers.n, "a cleanup.policy=delete topic lost records"

    a = admin(bs)  # kept alive until its future resolves
    r = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)],
    )
    a.incremental_alter_configs([r])[r].result(30)
    fillers.touch()
    recs = _wait_compacted(bs, topic, want, (), fillers, what="compaction after cleanup.policy=compact was set")
    print(f"{len(items)} records compacted to {len(recs)} after the policy change")


def test_every_codec_compacts(cbroker):
    """gzip, snappy, lz4 and zstd batches: many updates of few keys compact to one record per
    key with its latest value (a topic per codec, cleaned side by side)."""
    bs = cbroker.bootstrap
    n_keys, updates = 10, 300
    topics = {}
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        topic = create_topic(bs, unique(f"compact-{codec}"), 1, config=_compact_config())
        items = [
            (f"key-{k}".encode(), f"{codec} key-{k} update {u:03d} ".ljust(100, "z").encode())
            for u in range(updates)
            for k in range(n_keys)
        ]
        conf = {"compression.type": codec, "batch.num.messages": 100}
        _send(bs, topic, items, conf=conf)
        want = dict(items)
        topics[codec] = (topic, want, _Fillers(bs, topic, want, conf=conf))
    status = {}

    def all_done():
        for codec, (topic, want, fillers) in topics.items():
            if status.get(codec) == "":
                continue
            fillers.maybe_write()
            recs = _read(bs, topic)
            status[codec] = _problems(recs, want)
        return all(p == "" for p in status.values())

    wait_for(all_done, 120, interval=0.5, what="every codec's topic compacted", details=lambda: status)
    for codec, (topic, want, _) in topics.items():
        recs = _read(bs, topic)
        assert not _problems(recs, want), (codec, _problems(recs, want))
        codecs = {b.compression for b in kproto.fetch_batches(cbroker.host, cbroker.port, topic, 0)}
        print(f"{codec}: {n_keys * updates} records compacted to {len(recs)}; batch codecs served {codecs}")


def test_keyless_record_to_a_compacted_topic_is_refused(cbroker):
    """A record without a key to a compacted topic: the delivery fails with INVALID_RECORD (87),
    nothing is stored (a batch with one keyless record among keyed ones neither), and the same
    producer then writes keyed records."""
    bs = cbroker.bootstrap
    topic = create_topic(bs, unique("compact-keyless"), 1, config=_compact_config())
    _send(bs, topic, [(b"k0", b"first")])
    assert watermarks(bs, topic, 0) == (0, 1)

    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all", "linger.ms": 5, **QUIET})
    reports = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(30) == 0
    [(err, _)] = reports
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, f"keyless record: {err}"
    assert not err.fatal(), f"INVALID_RECORD must not be fatal to the producer: {err}"
    assert watermarks(bs, topic, 0) == (0, 1), "the keyless batch moved the high watermark"

    reports.clear()
    p.produce(
        topic, key=b"k1", value=b"keyed after", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset()))
    )
    assert p.flush(30) == 0
    assert reports == [(None, 1)], f"keyed record after the refused one: {reports}"

    # Raw Produce v3: a batch with a keyed and a keyless record is refused whole.
    batch = kproto.record_batch([b"keyed", b"keyless"], keys=[b"k2", None])
    assert _produce_raw(cbroker.host, cbroker.port, topic, batch) == (87, -1)
    assert watermarks(bs, topic, 0) == (0, 2)
    assert [(o, k, v) for o, k, v in _read(bs, topic)] == [(0, b"k0", b"first"), (1, b"k1", b"keyed after")]


def test_idempotent_retry_after_cleaning_is_a_duplicate(cbroker):
    """Idempotent batches (raw Produce v3, one producer id) that supersede each other; once the
    earlier ones are cleaned away, re-sending the last batch (same producer id, epoch, sequence)
    is answered as a duplicate: no error, its original base offset, the log end does not move.
    The same after kill -9 and a restart (producer state rebuilt from the cleaned log); then the
    next sequence is accepted."""
    bs, host, port = cbroker.bootstrap, cbroker.host, cbroker.port
    topic = create_topic(bs, unique("compact-idem"), 1, config=_compact_config())
    pid, epoch = kproto.init_producer_id(host, port)
    keys = [_key(k) for k in range(5)]
    sent = []
    for n in range(20):
        values = [f"{k.decode()} batch {n:02d}".encode() for k in keys]
        batch = kproto.record_batch(values, keys=keys, producer_id=pid, producer_epoch=epoch, base_sequence=5 * n)
        assert _produce_raw(host, port, topic, batch) == (0, 5 * n), f"batch {n}"
        sent.append(batch)
    want = dict(zip(keys, values, strict=True))
    fillers = _Fillers(bs, topic, want)
    _wait_compacted(bs, topic, want, (), fillers, what="the superseded batches cleaned")
    ours = [b for b in kproto.fetch_batches(host, port, topic, 0) if b.producer_id == pid]
    assert [(b.base_offset, b.base_sequence, b.count) for b in ours] == [(95, 95, 5)], (
        f"batches of producer {pid} left: {[(b.base_offset, b.base_sequence, b.count) for b in ours]}"
    )
    hw = watermarks(bs, topic, 0)[1]

    for when in ("after cleaning", "after kill -9 and restart"):
        if when != "after cleaning":
            cbroker.kill9()
            cbroker.restart()
        assert _produce_raw(host, port, topic, sent[-1]) == (0, 95), f"re-sent last batch {when}"
        assert watermarks(bs, topic, 0)[1] == hw, f"the duplicate moved the log end {when}"

    nxt = kproto.record_batch([b"next"], keys=[keys[0]], producer_id=pid, producer_epoch=epoch, base_sequence=100)
    assert _produce_raw(host, port, topic, nxt) == (0, hw), "the next sequence after the restart"
    assert watermarks(bs, topic, 0)[1] == hw + 1


def _offsets_log_bytes(data_dir):
    return sum(segment_files(data_dir, "__consumer_offsets-*/*.log").values())


def test_consumer_offsets_stays_bounded(cbroker):
    """A group commits offsets (with 100 bytes of metadata) for 100 partitions every 100 ms for
    a minute, over twenty times the bound: the __consumer_offsets segment files
    (offsets.topic.segment.bytes, one partition) never exceed 4 segments, and the coordinator's
    load after a restart does not grow with that history; after kill -9 and a restart the group's committed offsets read back
    exactly as last committed."""
    bs = cbroker.bootstrap
    parts, period, duration = 100, 0.1, 60
    bound = 4 * SEGMENT_BYTES
    topic = create_topic(bs, unique("offsets-source"), parts)
    group = unique("offsets-group")
    meta = "m" * 100
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, **QUIET})
    n, peak, written, prev = 0, 0, 0, _offsets_log_bytes(cbroker.data_dir)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < duration:
            n += 1
            offs = [TopicPartition(topic, p, n * 1000 + p, meta) for p in range(parts)]
            res = c.commit(offsets=offs, asynchronous=False)
            bad = [tp for tp in res if tp.error is not None]
            assert not bad, f"commit {n}: {bad[:3]}"
            size = _offsets_log_bytes(cbroker.data_dir)
            peak = max(peak, size)
            written += max(0, size - prev)  # appended bytes (a lower bound: cleaning runs meanwhile)
            prev = size
            time.sleep(max(0.0, t0 + n * period - time.monotonic()))
    finally:
        c.close()
    print(
        f"{n} commits of {parts} offsets in {time.monotonic() - t0:.0f}s; >= {written} bytes appended to "
        f"__consumer_offsets, its segment files at most {peak} bytes (bound {bound})"
    )
    # Against Kafka (1 MiB segments) the bound is 4 MiB: a minute still writes about twice that.
    assert written > bound, f"only {written} bytes written: the bound {bound} would not show a missing cleaner"
    assert peak <= bound, f"__consumer_offsets grew to {peak} bytes > {bound}"

    cbroker.kill9()
    cbroker.restart()

    def committed():
        r = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, **QUIET})
        try:
            return r.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)
        finally:
            r.close()

    t_ready = time.monotonic()
    got = wait_for(committed, 60, interval=0.5, what="the committed offsets after the restart")
    load_s = time.monotonic() - t_ready
    assert {tp.partition: (tp.offset, tp.metadata) for tp in got} == {p: (n * 1000 + p, meta) for p in range(parts)}
    print(f"offsets readable {load_s:.1f}s after the restarted broker was ready")
    # The load reads at most `bound` bytes, however long the group has been committing.
    assert load_s < 10, f"the coordinator took {load_s:.1f}s to load {group}'s offsets"


def test_kill9_during_cleaning_keeps_latest_values(broker_factory):
    """Ten rounds: write another update of every key (a tenth of them deleted instead, the keys
    deleted the round before written again), then kill -9 the broker 0-1500 ms after the acks
    while the cleaner works on the new closed segments (its I/O throttled to stretch the
    window), restart it: every key reads with its latest acknowledged value, no deleted key has a
    value again. At the end the log still compacts to one record per live key."""
    b = broker_factory.start({**OVERRIDES, "log.cleaner.io.max.bytes.per.second": str(4 * 1024 * 1024)})
    n_keys, rounds, window_s = 4000, 10, 1.5
    # About 1.5 segments per round, so every round closes segments for the cleaner.
    value_bytes = max(40, SEGMENT_BYTES * 3 // 2 // n_keys)
    topic = create_topic(b.bootstrap, unique("compact-kill9"), 1, config=_compact_config())
    seed = int(os.environ.get("FJORD_COMPACTION_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    want, gone, timeline = {}, set(), []
    for r in range(rounds):
        items = []
        for k in range(n_keys):
            if k % 10 == r % 10:
                items.append((_key(k), None))
            else:
                items.append((_key(k), f"key-{k:05d} round {r:02d} ".ljust(value_bytes, "r").encode()))
        _send(b.bootstrap, topic, items)
        _note_written(items, want, gone)
        delay = rng.uniform(0, window_s)
        time.sleep(delay)
        b.kill9()
        t0 = time.monotonic()
        b.restart()
        restart_s = time.monotonic() - t0
        recs = _read(b.bootstrap, topic)
        timeline.append((r, round(delay * 1000), round(restart_s, 1), len(recs)))
        p = _latest_problems(recs, want, gone)
        assert not p, f"round {r}: killed {delay * 1000:.0f} ms after the acks (seed {seed}): {p}"
    print(f"seed {seed}; (round, kill ms after acks, restart s, records read): {timeline}")
    fillers = _Fillers(b.bootstrap, topic, want)
    _wait_compacted(b.bootstrap, topic, want, gone, fillers, what="compaction after the kills")


# ---------------------------------------------------------------------------
# three nodes

REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


def _make_leader(c, tools, tmp_path, topic, node_id):
    """Make node_id the leader of partition 0: reorder the replicas with it first
    (ReassignPartitionsCommand), then a preferred leader election (ElectLeaders)."""
    _, replicas, _ = c.partition(topic, 0)
    order = [node_id] + [i for i in replicas if i != node_id]
    if replicas != order:
        plan = tmp_path / f"order-{node_id}.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": order}]}))
        r = tools.run_class(
            REASSIGN, "--bootstrap-server", c.bootstrap, "--reassignment-json-file", str(plan), "--execute", timeout=120
        )
        assert "Successfully started partition reassignment" in r.stdout, r.describe()
        c.wait_partition(topic, 0, lambda lead, rs, isr: rs == order, 60, f"replicas in the order {order}")
    tp = TopicPartition(topic, 0)
    admin = c.admin()  # kept: a client destroyed before its future resolves fails it

    def elected():
        res = admin.elect_leaders(ElectionType.PREFERRED, [tp]).result(30)
        err = list(res.values())[0]
        if err is not None and err.code() != KafkaError.ELECTION_NOT_NEEDED:
            raise AssertionError(f"ElectLeaders: {err}")
        return c.leader(topic, 0) == node_id

    wait_for(elected, 60, interval=0.5, what=f"node {node_id} leader of {topic}[0]")


def test_replicated_compacted_topic_survives_follower_kill_and_leader_change(cluster_factory, tools, tmp_path):
    """RF 3 compacted topic: kill -9 a follower while the replicas clean, write more (with
    deletions), restart it; kill -9 the leader, write, restart it; then make each replica the
    leader in turn: each one compacts and serves the same records, every acknowledged latest
    value, no deleted key's value."""
    c = cluster_factory.start(3, {**CLEANER, "replica.lag.time.max.ms": "5000"})
    topic = unique("compact-repl")
    c.create_topic(topic, replica_assignment=[[1, 2, 3]], config=_compact_config())
    want, gone = {}, set()
    n_keys = 500
    rng = random.Random()

    def write(r, deleted=()):
        items = [
            (_key(k), None if k in deleted else f"key-{k:05d} round {r:02d} ".ljust(60, "r").encode())
            for k in range(n_keys)
        ]
        _send(c.live_bootstrap(), topic, items)
        _note_written(items, want, gone)

    for r in range(5):
        write(r)
    c.wait_full_isr(topic, 1, 60)
    leader = c.leader(topic, 0)
    follower = next(i for i in reversed(c.ids) if i != leader)
    time.sleep(SEGMENT_MS / 1000 + 0.3)  # the next write rolls the segment: every replica has dirty data
    write(5)
    delay = rng.uniform(0, 0.5)
    time.sleep(delay)
    c.node(follower).kill9()
    write(6)
    write(7, deleted=range(50))
    c.node(follower).restart()
    c.wait_full_isr(topic, 1, 90)
    write(8)

    c.node(leader).kill9()
    new_leader = c.wait_partition(
        topic, 0, lambda lead, r, i: lead >= 0 and lead != leader, 60, "a new leader", exclude=[leader]
    )[0]
    write(9, deleted=range(50, 60))
    c.node(leader).restart()
    c.wait_full_isr(topic, 1, 90)
    print(
        f"follower {follower} killed {delay * 1000:.0f} ms after a roll; leader {leader} killed, {new_leader} took over"
    )

    fillers = _Fillers(c.live_bootstrap, topic, want)
    served = {}
    for node_id in c.ids:
        _make_leader(c, tools, tmp_path, topic, node_id)
        fillers.touch()
        recs = _wait_compacted(
            c.bootstrap, topic, want, gone, fillers, tombstones_ok=True, what=f"compaction with node {node_id} leading"
        )
        served[node_id] = [(o, k, v) for o, k, v in recs if v is not None and not k.startswith(b"filler-")]
    first = served[c.ids[0]]
    assert len(first) == len(want) - fillers.rounds * fillers.n
    for node_id, recs in served.items():
        assert recs == first, f"node {node_id} as leader serves other records than node {c.ids[0]}"
