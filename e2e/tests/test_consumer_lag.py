"""Consumer-group metrics the broker computes: lag in records equals what Kafka's
ConsumerGroupCommand reports, lag in seconds is the age of the first unconsumed record,
and the Burrow-style status, members, state and commits follow what the group does.

The broker runs at partition granularity, so each partition's lag can be compared with the
tool's row; the per-(group, topic) series of the default granularity are checked in
test_java_tools.py and test_metrics.py."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import DEFAULT_OVERRIDES

from harness.clients import create_topic, http_get, parse_prometheus, unique, wait_for

pytestmark = pytest.mark.fjord_only

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
STATUS = {0: "ok", 1: "warn", 2: "stall", 3: "stop", 4: "rewind"}


@pytest.fixture(scope="module")
def lag_broker(module_broker_factory):
    return module_broker_factory.start({**DEFAULT_OVERRIDES, "fjord.metrics.granularity": "partition"})


def scrape(broker):
    """(samples, seconds since the epoch before and after the scrape)."""
    before = time.time()
    status, body = http_get(broker.metrics_url)
    after = time.time()
    assert status == 200, body[:500]
    return parse_prometheus(body), before, after


def series(samples, name, **labels):
    return [(lab, v) for n, lab, v in samples if n == name and all(lab.get(k) == v for k, v in labels.items())]


def produce_at(bootstrap, topic, partition, timestamps_ms):
    """One record per timestamp (CreateTime), in order, to one partition."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    errors = []
    for i, ts in enumerate(timestamps_ms):
        p.produce(
            topic,
            value=f"v{i}".encode(),
            partition=partition,
            timestamp=int(ts),
            on_delivery=lambda err, msg: err and errors.append(err),
        )
    assert p.flush(30) == 0 and not errors, errors


def commit(bootstrap, group, topic, offsets):
    """Commit {partition: offset} as a consumer outside any generation (Empty group)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        assert all(tp.error is None for tp in res), res
    finally:
        c.close()


def describe(tools, bootstrap, group):
    r = tools.run_class(
        CONSUMER_GROUP_COMMAND, "--bootstrap-server", bootstrap, "--describe", "--group", group, timeout=90
    )
    lines = r.stdout.splitlines()
    hdr = next((i for i, line in enumerate(lines) if "LAG" in line.split()), None)
    assert hdr is not None, r.describe()
    header = lines[hdr].split()
    return [
        dict(zip(header, line.split(), strict=False)) for line in lines[hdr + 1 :] if line.split()[:1] == [group]
    ], r


def test_lag_equals_consumer_group_command_and_record_age(lag_broker, tools):
    b = lag_broker
    topic = create_topic(b.bootstrap, unique("lag"), 3)
    group = unique("lag-group")
    now_ms = time.time() * 1000
    # Partition p holds 20 + 10p records written one second apart, the newest 10 minutes ago.
    stamps = {p: [now_ms - 600_000 - (20 + 10 * p - i) * 1000 for i in range(20 + 10 * p)] for p in range(3)}
    for p, ts in stamps.items():
        produce_at(b.bootstrap, topic, p, ts)
    committed = {0: 5, 1: 12, 2: 40}  # partition 2 is caught up
    commit(b.bootstrap, group, topic, committed)

    rows, r = describe(tools, b.bootstrap, group)
    tool = {int(row["PARTITION"]): int(row["LAG"]) for row in rows if row["TOPIC"] == topic}
    assert tool == {0: 15, 1: 18, 2: 0}, r.describe()

    samples, before, after = scrape(b)
    records = {
        int(lab["partition"]): v
        for lab, v in series(samples, "fjord_consumer_group_lag_records", group=group, topic=topic)
    }
    assert records == tool, f"metric {records} != ConsumerGroupCommand {tool}"
    seconds = {
        int(lab["partition"]): v
        for lab, v in series(samples, "fjord_consumer_group_lag_seconds", group=group, topic=topic)
    }
    for p, c in committed.items():
        if p == 2:
            assert seconds[p] == 0, seconds
            continue
        # The first unconsumed record is at offset c; the metric was computed during the scrape.
        low, high = before - stamps[p][c] / 1000, after - stamps[p][c] / 1000
        assert low - 1 <= seconds[p] <= high + 1, f"partition {p}: lag {seconds[p]} s, true age {low:.2f}..{high:.2f} s"
    # Partition granularity replaces the per-topic series, it does not add to them.
    assert all("partition" in lab for lab, _ in series(samples, "fjord_consumer_group_lag_records", group=group)), (
        samples
    )


def test_group_members_state_and_commits(lag_broker):
    b = lag_broker
    topic = create_topic(b.bootstrap, unique("members"), 1)
    produce_at(b.bootstrap, topic, 0, [time.time() * 1000] * 10)
    group = unique("members-group")
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([topic])
    try:
        got, deadline = 0, time.monotonic() + 60
        while got < 10 and time.monotonic() < deadline:
            got += sum(1 for m in c.consume(10, timeout=0.5) if not m.error())
        assert got == 10
        commit_time = time.time()
        for _ in range(2):
            c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)

        def stable():
            samples, _, _ = scrape(b)
            members = series(samples, "fjord_consumer_group_members", group=group)
            return members == [({"group": group, "state": "Stable"}, 1.0)] and samples

        samples = wait_for(stable, 30, what="the group to show 1 Stable member")
        assert series(samples, "fjord_consumer_group_commits_total", group=group) == [({"group": group}, 2.0)]
        ((_, last),) = series(samples, "fjord_consumer_group_last_commit_timestamp_seconds", group=group)
        assert abs(last - commit_time) < 5, (last, commit_time)
        assert series(samples, "fjord_consumer_group_status", group=group) == [({"group": group}, 0.0)]
    finally:
        c.close()

    def empty():
        samples, _, _ = scrape(b)
        return series(samples, "fjord_consumer_group_members", group=group) == [
            ({"group": group, "state": "Empty"}, 0.0)
        ]

    wait_for(empty, 30, what="the group to be Empty after its member left")


def status_of(b, group):
    samples, _, _ = scrape(b)
    s = series(samples, "fjord_consumer_group_status", group=group)
    assert len(s) == 1, s
    return STATUS[int(s[0][1])]


def test_burrow_status(lag_broker):
    """Each group commits a pattern two seconds apart (a 4 s window), then the status is read
    at once, before the window's span has passed without a commit."""
    b = lag_broker
    topic = create_topic(b.bootstrap, unique("status"), 1)
    batch = lambda: produce_at(b.bootstrap, topic, 0, [time.time() * 1000] * 10)  # noqa: E731
    groups = {name: unique(f"status-{name}") for name in ("ok", "warn", "stall", "rewind")}
    plans = {"ok": [10, 20, 30], "warn": [2, 4, 6], "stall": [2, 2, 2], "rewind": [8, 9, 3]}
    for step in range(3):
        batch()  # 10 more records before each round of commits: 10, 20, 30
        for name, group in groups.items():
            commit(b.bootstrap, group, topic, {0: plans[name][step]})
        if step < 2:
            time.sleep(2)
    got = {name: status_of(b, group) for name, group in groups.items()}
    assert got == {"ok": "ok", "warn": "warn", "stall": "stall", "rewind": "rewind"}, got
    # No commit for longer than the window spans, with records left: stopped.
    wait_for(
        lambda: status_of(b, groups["warn"]) == "stop", 15, interval=0.5, what="the silent lagging group to be stop"
    )
    assert status_of(b, groups["ok"]) == "ok", "a caught-up group is never stopped"
