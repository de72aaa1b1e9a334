"""librdkafka clients against the broker: confluent-kafka (idempotent producer, a group of
three consumer processes, commit/resume) and kcat (metadata, produce, consume)."""

import json
import re
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from harness.clients import Consumer, TopicPartition, create_topic, produce, run, unique, wait_for, watermarks

PY_DIR = Path(__file__).resolve().parent / "py"
N_RECORDS = 100_000
N_PARTITIONS = 6


def _parse_member(path):
    records, events = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("R "):
            _, p, o, v = line.split(" ", 3)
            records.append((int(p), int(o), v))
        elif line.startswith("E "):
            events.append(json.loads(line[2:]))
    return records, events


def _current_assignment(events):
    owned = set()
    for e in events:
        if e["ev"] == "assign":
            owned = set(e["parts"])  # eager protocol: the full new assignment
        elif e["ev"] == "revoke":
            owned -= set(e["parts"])
    return owned


def test_idempotent_100k_consumed_exactly_once_by_group_of_three(broker, tools, tmp_path):
    topic = create_topic(broker.bootstrap, unique("lrk-100k"), N_PARTITIONS)
    group = unique("group-of-3")
    stop = tmp_path / "stop"
    outs = [tmp_path / f"member{i}.out" for i in range(3)]
    procs = []
    try:
        for i, out in enumerate(outs):
            procs.append(
                subprocess.Popen(
                    [tools.py, PY_DIR / "group_member.py", broker.bootstrap, topic, group, out, stop, "300"],
                    stdout=subprocess.DEVNULL,
                    stderr=open(tmp_path / f"member{i}.err", "w"),
                )
            )

        # 1. Wait for a stable group: three members, disjoint, non-empty, covering all partitions.
        def stable():
            owned = []
            for i, out in enumerate(outs):
                if procs[i].poll() is not None:
                    raise AssertionError(
                        f"member {i} exited early: {(tmp_path / f'member{i}.err').read_text()[-3000:]}"
                    )
                if not out.exists():
                    return False
                owned.append(_current_assignment(_parse_member(out)[1]))
            covered = set().union(*owned)
            return all(owned) and covered == set(range(N_PARTITIONS)) and sum(map(len, owned)) == N_PARTITIONS and owned

        assignment = wait_for(stable, 120, interval=0.5, what="a stable group of 3 members owning the 6 partitions")

        # 2. Produce 100 000 keyed records, idempotent, acks=all; values carry the sequence number.
        t0 = time.monotonic()
        delivered = produce(
            broker.bootstrap,
            topic,
            [str(i) for i in range(N_RECORDS)],
            keys=[f"key-{i % 9973}" for i in range(N_RECORDS)],
            conf={"enable.idempotence": True, "acks": "all", "linger.ms": 10},
            timeout=120,
        )
        produce_s = time.monotonic() - t0

        # 3. Wait until the group has consumed as many records as were produced (+1 s for strays).
        def consumed_count():
            return sum(
                sum(1 for line in out.read_text().splitlines() if line.startswith("R ")) for out in outs if out.exists()
            )

        wait_for(
            lambda: consumed_count() >= N_RECORDS, 180, interval=0.5, what=f"the group to consume {N_RECORDS} records"
        )
        time.sleep(1.0)
    finally:
        stop.touch()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    # Produced side: per partition, offsets 0..n-1 and sequence numbers increasing with offset.
    produced = defaultdict(dict)
    for p, o, v in delivered:
        produced[p][o] = v.decode()
    assert len(produced) == N_PARTITIONS, f"keys hit only partitions {sorted(produced)}"
    for p, by_off in produced.items():
        assert sorted(by_off) == list(range(len(by_off))), f"partition {p}: acked offsets have gaps"
        seqs = [int(by_off[o]) for o in sorted(by_off)]
        assert seqs == sorted(seqs), f"partition {p}: acked sequence numbers out of order"
        low, high = watermarks(broker.bootstrap, topic, p)
        assert (low, high) == (0, len(by_off)), f"partition {p}: watermarks {(low, high)}"

    # Consumed side: exactly once, in order per partition, values match.
    seen = defaultdict(list)
    per_member = []
    errors = []
    for i, out in enumerate(outs):
        records, events = _parse_member(out)
        per_member.append(len(records))
        errors += [f"member{i}: {e}" for e in events if e["ev"] == "error"]
        last = {}
        for p, o, v in records:
            assert o > last.get(p, -1), f"member{i} partition {p}: offset {o} after {last.get(p)}"
            if p in last:
                assert int(v) > int(produced[p][last[p]]), f"member{i} p{p}: value {v} not increasing"
            last[p] = o
            seen[(p, o)].append((i, v))
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dups, (
        f"{len(dups)} records delivered more than once, e.g. "
        f"{list(dups.items())[:5]}; assignment {assignment}; errors {errors[:5]}"
    )
    expected = {(p, o) for p, by_off in produced.items() for o in by_off}
    missing = expected - set(seen)
    extra = set(seen) - expected
    assert not missing, f"{len(missing)} records never consumed, e.g. {sorted(missing)[:10]}"
    assert not extra, f"{len(extra)} consumed records were never produced, e.g. {sorted(extra)[:10]}"
    wrong = [(k, v[0][1], produced[k[0]][k[1]]) for k, v in seen.items() if v[0][1] != produced[k[0]][k[1]]]
    assert not wrong, f"values differ from what was produced: {wrong[:10]}"
    assert all(per_member), f"every member must consume some records, got {per_member}"
    print(f"produced {N_RECORDS} in {produce_s:.1f}s; per member {per_member}; assignment {assignment}")


def test_committed_offsets_resume_after_restart_of_consumer(broker):
    topic = create_topic(broker.bootstrap, unique("lrk-resume"), 3)
    for p in range(3):
        produce(broker.bootstrap, topic, [f"p{p}-{i}" for i in range(100)], partition=p)
    group = unique("resume")
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }

    # First consumer: consume 120 records, commit exactly what it consumed, close.
    a = Consumer(conf)
    a.subscribe([topic])
    consumed_a = []
    deadline = time.monotonic() + 60
    while len(consumed_a) < 120:
        assert time.monotonic() < deadline, f"first consumer got only {len(consumed_a)} records in 60s"
        m = a.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        consumed_a.append((m.partition(), m.offset(), m.value().decode()))
    next_off = {}
    for p, o, _ in consumed_a:
        next_off[p] = max(next_off.get(p, 0), o + 1)
    commit_list = [TopicPartition(topic, p, o) for p, o in sorted(next_off.items())]
    result = a.commit(offsets=commit_list, asynchronous=False)
    assert all(tp.error is None for tp in result), result
    a.close()

    # Second consumer, same group: starts exactly at the committed offsets.
    b = Consumer(conf)
    committed = b.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    got = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    assert got == next_off, f"committed() {got} != what was committed {next_off}"
    b.subscribe([topic])
    consumed_b = []
    deadline = time.monotonic() + 60
    remaining_expected = 300 - sum(next_off.values())
    while len(consumed_b) < remaining_expected:
        assert time.monotonic() < deadline, (
            f"second consumer got {len(consumed_b)} of {remaining_expected} records in 60s"
        )
        m = b.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        consumed_b.append((m.partition(), m.offset(), m.value().decode()))
    # No stray extra deliveries shortly after.
    extra = b.consume(num_messages=100, timeout=1.0)
    b.close()
    assert not [m for m in extra if not m.error()], "records delivered beyond the end of the log"

    by_part = defaultdict(list)
    for p, o, v in consumed_b:
        by_part[p].append((o, v))
    for p in range(3):
        start = next_off.get(p, 0)
        offs = [o for o, _ in by_part[p]]
        assert offs == list(range(start, 100)), (
            f"partition {p}: committed {start}, resumed consumer read offsets "
            f"{offs[:5]}...{offs[-5:]} ({len(offs)} records); expected {start}..99 with no gap/re-delivery"
        )
        assert [v for _, v in by_part[p]] == [f"p{p}-{i}" for i in range(start, 100)]


def test_kcat_metadata_produce_consume(broker, tools):
    kcat = tools.kcat
    multi = create_topic(broker.bootstrap, unique("kcat-md"), 4)
    r = run([kcat, "-b", broker.bootstrap, "-L"], timeout=60)
    m = re.search(rf'topic "{re.escape(multi)}" with (\d+) partitions:', r.stdout)
    assert m, f"topic {multi} not in kcat -L\n{r.describe()}"
    assert m.group(1) == "4", r.describe()
    block = r.stdout[m.end() :].split("  topic ")[0]
    parts = re.findall(r"partition (\d+), leader (-?\d+)", block)
    assert sorted(int(p) for p, _ in parts) == [0, 1, 2, 3], r.describe()
    assert all(int(leader) >= 0 for _, leader in parts), r.describe()
    assert re.search(rf"broker \d+ at 127\.0\.0\.1:{broker.port}", r.stdout), r.describe()

    r = run([kcat, "-b", broker.bootstrap, "-L", "-J", "-t", multi], timeout=60)
    md = json.loads(r.stdout)
    t = [t for t in md["topics"] if t["topic"] == multi]
    assert t and len(t[0]["partitions"]) == 4, r.describe()

    topic = create_topic(broker.bootstrap, unique("kcat-rt"), 1)
    lines = [f"line {i} from kcat" for i in range(200)]
    run([kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0"], timeout=60, input="\n".join(lines) + "\n")
    r = run(
        [kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n"], timeout=60
    )
    got = r.stdout.splitlines()
    assert got == [f"0 {i} {line}" for i, line in enumerate(lines)], (
        f"kcat -C returned {len(got)} lines, first {got[:3]}\n{r.describe(2000)}"
    )
