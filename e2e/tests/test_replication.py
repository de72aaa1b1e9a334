"""Replication acceptance tests on a three-node cluster (four for the reassignment): RF 3,
min.insync.replicas 2, an idempotent acks=all producer writing continuously from a thread while
nodes are killed, paused and restarted. After each test the topic is read back from the
beginning (read_uncommitted): every acknowledged value is there exactly once, at the acknowledged
offset, in acknowledgement order per partition, and no value is stored twice.

Timings (failover, fencing, elections) are printed: run with -s (or -rP) to see them."""

import json
import threading
import time
from collections import defaultdict

import pytest
from conftest import TARGET

from harness.clients import produce, unique, wait_for
from harness.workload import AckingProducer, CommitReader, GroupConsumer, check_acked, high_watermarks

# Kafka's defaults (9 s session, 2 s heartbeat, 30 s replica lag) would make every failover slow;
# the same keys are set on both targets.
SESSION_MS = 3000
FAST = {
    "broker.session.timeout.ms": str(SESSION_MS),
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}
PARTS = 3
RATE = 300  # records/s offered by the producer (all partitions together)
FAILOVER_BOUND_S = 15
QUIET = {"log_level": 2}  # librdkafka: no stderr noise about nodes that are down on purpose
REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"

# What a producer may report while only one of three nodes is alive (min ISR 2, no quorum).
# Fjord: past the session timeout the survivor hears neither a controller nor a follower and
# says it is not the leader (closing the connection after that answer); Kafka's waits.
OUTAGE_ERRORS = {
    "NOT_LEADER_OR_FOLLOWER",
    "_TRANSPORT",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "_MSG_TIMED_OUT",
    "REQUEST_TIMED_OUT",
    "_TIMED_OUT",
    "_TIMED_OUT_QUEUE",
}


def _stop_and_check(cluster, topic, partitions, prod, label, allow_failures=False):
    undelivered = prod.stop()
    summary = check_acked(cluster.live_bootstrap(), topic, partitions, prod.acks_snapshot(), label=label)
    ps = prod.summary()
    print(f"[{label}] producer {ps}; read-back {summary}")
    assert undelivered == 0, f"{undelivered} records never reported on after the final flush"
    assert not ps["fatal_client_errors"], f"fatal producer errors: {ps['fatal_client_errors']}"
    if not allow_failures:
        assert not ps["failed"], f"deliveries failed: {ps['failure_codes']} e.g. {prod.failures_snapshot()[:5]}"
    return summary, ps


def _wait_first_ack(prod, partition, min_seq, timeout, what):
    """The first acknowledgement on `partition` of a record handed to the client as seq >= min_seq."""
    return wait_for(lambda: prod.first_ack(partition, min_seq), timeout, interval=0.02, what=what)


def test_leader_kill9_new_leader_serves(cluster_factory):
    """kill -9 the leader of partition 0 mid-stream: a new leader serves writes within a bound,
    nothing acknowledged is lost; the old leader is restarted and rejoins the ISR."""
    c = cluster_factory.start(3, FAST)
    topic = c.create_topic(unique("repl-kill9"), PARTS)
    prod = AckingProducer(c.bootstrap, topic, PARTS, rate=RATE).start()
    timeline = {}
    try:
        prod.wait_acks(900, 60, what="before the kill")
        c.wait_full_isr(topic, PARTS, 30)
        leader, replicas, isr = c.partition(topic, 0)
        assert sorted(replicas) == [1, 2, 3], (leader, replicas, isr)
        victim = c.node(leader)
        cut = prod.sent
        t_kill = time.monotonic()
        victim.kill9()
        first = _wait_first_ack(prod, 0, cut, 60, "an acknowledged write on partition 0 after the kill")
        failover_ms = (first.t - t_kill) * 1000
        new_leader = c.wait_partition(
            topic, 0, lambda lead, r, i: lead >= 0 and lead != leader, 30, "a new leader", exclude=[leader]
        )[0]
        timeline["new leader serves ms"] = round(failover_ms)
        print(
            f"new leader serves within {failover_ms:.0f} ms (partition 0: leader {leader} killed, "
            f"new leader {new_leader})"
        )
        prod.wait_acks(600, 60, after=first.t, what="after the failover")
        t0 = time.monotonic()
        victim.restart()
        timeline["restart s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        c.wait_full_isr(topic, PARTS, 90)
        timeline["back in ISR s"] = round(time.monotonic() - t0, 1)
        prod.wait_acks(300, 60, after=time.monotonic(), what="after the restart")
    finally:
        prod.stop()
    _stop_and_check(c, topic, PARTS, prod, "leader kill9")
    print(f"timeline: {timeline}")
    assert failover_ms < FAILOVER_BOUND_S * 1000, (
        f"first acknowledged write on partition 0 only {failover_ms:.0f} ms after the leader was killed"
    )


class OutageProbe:
    """A plain acks=all producer (no idempotence, no retries, short message timeout) that sends
    one probe record every `interval` s, round-robin over the partitions of its own topic, and
    records each delivery report. It shows what a client is told while the cluster cannot
    accept writes; without retries it cannot write anything twice."""

    def __init__(self, bootstrap, topic, partitions, interval=0.25):
        from confluent_kafka import Producer

        self.topic, self.partitions, self.interval = topic, partitions, interval
        self.p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": False,
                "retries": 0,
                "message.timeout.ms": 6000,
                "request.timeout.ms": 5000,
                "socket.timeout.ms": 5000,
                "linger.ms": 0,
                "log_level": 2,
            }
        )
        self.results = []  # (partition, error name or None, offset)
        self.n = 0

    def _dr(self, err, msg):
        self.results.append((msg.partition(), err.name() if err is not None else None, msg.offset()))

    def run_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.p.produce(
                self.topic, value=f"probe-{self.n}".encode(), partition=self.n % self.partitions, on_delivery=self._dr
            )
            self.n += 1
            self.p.poll(self.interval)

    def finish(self, timeout=30):
        self.p.flush(timeout)
        return list(self.results)


def test_two_of_three_down_refuses_writes_then_resumes(cluster_factory):
    """Kill two of three nodes: no write is acknowledged while one node is alive (a probing
    producer's errors are NOT_ENOUGH_REPLICAS or timeouts; the idempotent producer gets no
    acknowledgement for anything sent after the kills); bring one back: writes are acknowledged
    again; nothing acknowledged before is lost and nothing is stored twice."""
    c = cluster_factory.start(3, FAST)
    topic = c.create_topic(unique("repl-two-down"), PARTS)
    probe_topic = c.create_topic(unique("repl-two-down-probe"), PARTS)
    # message.timeout.ms (120 s) outlasts the outage: a delivery that timed out would make
    # librdkafka bump the producer epoch and resend in-flight records (duplicates by design).
    prod = AckingProducer(c.bootstrap, topic, PARTS, rate=RATE).start()
    outage_s = 12
    try:
        prod.wait_acks(900, 60, what="before the kills")
        c.wait_full_isr(topic, PARTS, 30)
        first_victim = c.leader(topic, 0)
        second_victim = next(i for i in c.ids if i != first_victim)
        survivor = next(i for i in c.ids if i not in (first_victim, second_victim))
        c.node(first_victim).kill9()
        c.node(second_victim).kill9()
        t_down = time.monotonic()
        cut = prod.sent  # every seq >= cut was handed to the client after both nodes were dead
        print(f"killed nodes {first_victim} and {second_victim}; node {survivor} alone; seq cut {cut}")
        probe = OutageProbe(c.node(survivor).bootstrap, probe_topic, PARTS)
        probe.run_for(outage_s)
        t_restart = time.monotonic()
        probes = probe.finish(30)
        during = [a for a in prod.acks_snapshot() if a.seq >= cut and a.t < t_restart]
        in_flight = [a for a in prod.acks_snapshot() if a.seq < cut and t_down < a.t < t_restart]
        codes = {}
        for _, code, _ in probes:
            codes[code] = codes.get(code, 0) + 1
        print(
            f"outage {t_restart - t_down:.1f}s: the idempotent producer got {len(in_flight)} acks for records "
            f"sent before the kills and {len(during)} for records sent after; probe results {codes}"
        )
        assert not during, (
            f"{len(during)} writes sent while only node {survivor} was alive were acknowledged, e.g. {during[:5]}"
        )
        ok_probes = [r for r in probes if r[1] is None]
        assert not ok_probes, f"probe writes acknowledged while only node {survivor} was alive: {ok_probes[:5]}"
        assert len(probes) == probe.n, f"{probe.n - len(probes)} probes without a delivery report"
        bad = set(codes) - OUTAGE_ERRORS
        assert not bad, f"unexpected probe errors while two nodes were down: {codes}"
        assert not prod.failures_snapshot(), f"idempotent producer deliveries failed: {prod.failures_snapshot()[:5]}"

        cut2 = prod.sent
        c.node(first_victim).restart()
        t_back = time.monotonic()
        first = _wait_first_ack(prod, 0, cut2, 90, "an acknowledged write after one node came back")
        prod.wait_acks(300, 90, min_seq=cut2, what="after one node came back")
        print(
            f"node {first_victim} restarted in {t_back - t_restart:.1f}s; first new write acknowledged "
            f"{first.t - t_back:.1f}s later"
        )
        # (node second_victim stays down: the read-back below works with two of three.)
    finally:
        prod.stop()
    _stop_and_check(c, topic, PARTS, prod, "two of three down")


def test_sigstop_leader_past_session_timeout(cluster_factory):
    """SIGSTOP the leader of partition 0 past the session timeout: a new leader is elected and
    serves; SIGCONT: the old leader loses nothing acknowledged, adds no duplicate and rejoins the
    ISR."""
    c = cluster_factory.start(3, FAST)
    topic = c.create_topic(unique("repl-sigstop"), PARTS)
    prod = AckingProducer(c.bootstrap, topic, PARTS, rate=RATE).start()
    node = None
    try:
        prod.wait_acks(900, 60, what="before the SIGSTOP")
        c.wait_full_isr(topic, PARTS, 30)
        leader = c.leader(topic, 0)
        node = c.node(leader)
        cut = prod.sent
        t_stop = time.monotonic()
        node.sigstop()
        new_leader = c.wait_partition(
            topic,
            0,
            lambda lead, r, i: lead >= 0 and lead != leader,
            40,
            "a new leader while the old one is stopped",
            exclude=[leader],
        )[0]
        t_elected = time.monotonic()
        first = _wait_first_ack(prod, 0, cut, 60, "an acknowledged write on partition 0 after the SIGSTOP")
        print(
            f"leader {leader} stopped; new leader {new_leader} elected after {t_elected - t_stop:.1f}s, "
            f"serves after {first.t - t_stop:.1f}s"
        )
        prod.wait_acks(300, 60, partition=None, after=first.t, what="while the old leader is stopped")
        pause = max(0.0, t_stop + 2 * SESSION_MS / 1000 + 2 - time.monotonic())
        time.sleep(pause)
        t_cont = time.monotonic()
        node.sigcont()
        c.wait_partition(
            topic,
            0,
            lambda lead, r, i: lead >= 0 and leader in i and set(i) == set(r),
            90,
            f"node {leader} back in the ISR",
        )
        print(
            f"stopped for {t_cont - t_stop:.1f}s; node {leader} back in the ISR of partition 0 "
            f"{time.monotonic() - t_cont:.1f}s after SIGCONT"
        )
        c.wait_full_isr(topic, PARTS, 90)
        prod.wait_acks(300, 60, after=time.monotonic(), what="after SIGCONT")
    finally:
        if node is not None and node.paused:
            node.sigcont()
        prod.stop()
    _stop_and_check(c, topic, PARTS, prod, "sigstop leader")


def _controller_metric(cluster):
    """{node id: fjord_controller_active} for the running fjord nodes."""
    out = {}
    for nd in cluster.running():
        vals = [v for n, _, v in nd.metrics() if n == "fjord_controller_active"]
        assert vals, f"node {nd.id} exposes no fjord_controller_active"
        out[nd.id] = sum(vals)
    return out


def test_kill_active_controller(cluster_factory):
    """kill -9 the active controller: another node becomes controller; topics can still be
    created (RF 2 while one node is down, RF 3 after it is back) and used."""
    c = cluster_factory.start(3, FAST)
    old = wait_for(
        lambda: (lambda x: x if x in c.ids else None)(c.active_controller()),
        30,
        interval=0.5,
        what="an active controller",
    )
    if c.target == "fjord":
        m = _controller_metric(c)
        assert m == {i: (1.0 if i == old else 0.0) for i in c.ids}, (
            f"fjord_controller_active {m} does not match DescribeCluster's controller {old}"
        )
    t_kill = time.monotonic()
    c.node(old).kill9()
    new = wait_for(
        lambda: (lambda x: x if x in c.ids and x != old else None)(c.active_controller()),
        40,
        interval=0.5,
        what="a new active controller",
    )
    t_new = time.monotonic()
    c.wait_brokers([i for i in c.ids if i != old], timeout=40)
    t_fenced = time.monotonic()
    print(
        f"controller {old} killed; node {new} active controller after {t_new - t_kill:.1f}s; "
        f"node {old} gone from Metadata after {t_fenced - t_kill:.1f}s"
    )
    if c.target == "fjord":
        m = _controller_metric(c)
        assert m == {i: (1.0 if i == new else 0.0) for i in c.ids if i != old}, (
            f"fjord_controller_active {m} after failover, DescribeCluster says {new}"
        )

    topic = c.create_topic(unique("after-controller-kill"), 2, replication_factor=2)
    for p in range(2):
        _, replicas, _ = c.partition(topic, p)
        assert old not in replicas and len(replicas) == 2, f"partition {p} placed on {replicas}"
    delivered = produce(c.live_bootstrap(), topic, [f"r{i}" for i in range(200)], conf=QUIET, timeout=60)
    check_acked(c.live_bootstrap(), topic, 2, _as_acks(delivered), label="RF 2 after controller kill")
    print(f"topic created and used {time.monotonic() - t_fenced:.1f}s after the failover")

    c.node(old).restart()
    c.wait_brokers(c.ids, timeout=60)
    topic3 = c.create_topic(unique("after-controller-back"), 3, replication_factor=3)
    delivered = produce(c.bootstrap, topic3, [f"s{i}" for i in range(300)], conf=QUIET, timeout=60)
    check_acked(c.bootstrap, topic3, 3, _as_acks(delivered), label="RF 3 after restart")
    now = c.active_controller()
    assert now in c.ids, f"no active controller after the restart ({now})"


def _as_acks(delivered):
    from harness.workload import Ack

    return [Ack(0, p, o, v.decode(), i) for i, (p, o, v) in enumerate(delivered)]


def test_group_coordinator_failover(cluster_factory):
    """A group of two consumers (auto commit) consumes 6 partitions while they are produced;
    kill -9 the group coordinator: the group carries on, committed offsets never go backwards,
    every record is consumed at least once, and a consumer restarted from the committed offsets
    reads nothing before them."""
    parts = 6
    c = cluster_factory.start(3, FAST)
    topic = c.create_topic(unique("repl-coord"), parts)
    group = unique("coord-group")
    prod = AckingProducer(c.bootstrap, topic, parts, rate=RATE).start()
    members = [GroupConsumer(c.bootstrap, topic, group, f"m{i}").start() for i in range(2)]
    commits = []  # (t, {partition: offset})
    stop_sampler = [False]
    admin = c.admin()
    reader = CommitReader(c.bootstrap, group)

    def sample():
        while not stop_sampler[0]:
            try:
                commits.append((time.monotonic(), reader.read(topic, parts, 5)))
            except Exception:  # noqa: BLE001 - the coordinator may be moving
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        prod.wait_acks(900, 60, what="before the kill")
        wait_for(
            lambda: sum(m.n_records for m in members) >= 600 and commits and len(commits[-1][1]) == parts,
            60,
            what="the group consuming and committing everywhere",
        )
        coord = admin.describe_consumer_groups([group])[group].result(20).coordinator.id
        before = dict(commits[-1][1])
        consumed_before = sum(m.n_records for m in members)
        t_kill = time.monotonic()
        c.node(coord).kill9()
        print(f"coordinator {coord} killed; commits before {before}")

        def carried_on():
            recent = [cm for t, cm in commits if t > t_kill]
            return (
                sum(m.n_records for m in members) >= consumed_before + 600
                and recent
                and all(recent[-1].get(p, -1) > before.get(p, -1) for p in range(parts))
            )

        wait_for(carried_on, 90, interval=0.5, what="consumption and commits to carry on after the kill")
        t_on = time.monotonic()
        admin2 = c.admin(exclude=[coord])
        new_coord = admin2.describe_consumer_groups([group])[group].result(20).coordinator.id
        print(f"group carried on {t_on - t_kill:.1f}s after the kill; new coordinator {new_coord}")
        assert new_coord != coord, f"coordinator still reported as the killed node {coord}"
        prod.wait_acks(900, 60, after=time.monotonic(), what="after the failover")
    finally:
        prod.stop()
    acks = prod.acks_snapshot()
    marks = high_watermarks(c.bootstrap, topic, parts)
    acked_values = {a.value for a in acks}

    def caught_up():
        last = defaultdict(lambda: -1)
        for m in members:
            for r in m.snapshot():
                last[r.partition] = max(last[r.partition], r.offset)
        return all(last[p] >= marks[p][1] - 1 for p in range(parts))

    try:
        wait_for(caught_up, 90, interval=0.5, what="the group to consume up to the high watermarks")
    finally:
        for m in members:
            m.stop()
        stop_sampler[0] = True
        sampler.join(10)

    consumed = [r for m in members for r in m.snapshot()]
    seen = {r.value for r in consumed}
    missing = acked_values - seen
    assert not missing, f"{len(missing)} acknowledged records never consumed by the group, e.g. {sorted(missing)[:5]}"
    summary = check_acked(c.bootstrap, topic, parts, acks, label="coordinator failover")
    by_pos = {(a.partition, a.offset): a.value for a in acks}
    wrong = [r for r in consumed if by_pos.get((r.partition, r.offset), r.value) != r.value]
    assert not wrong, f"consumers saw other values than acknowledged at these offsets: {wrong[:5]}"
    regressions = [rg for m in members for rg in m.regressions]
    assert not regressions, f"offsets went backwards within an assignment: {regressions[:5]}"

    backwards = []
    last = {}
    for t, cm in commits:
        for p, o in cm.items():
            if p in last and o < last[p][1]:
                backwards.append((p, last[p][1], o, round(t - t_kill, 1)))
            last[p] = (t, o)
    assert not backwards, f"committed offsets went backwards (partition, before, after, s after kill): {backwards[:10]}"

    final = reader.read(topic, parts, 20)
    reader.close()
    assert final == {p: marks[p][1] for p in range(parts)}, (
        f"committed offsets after close {final} != high watermarks {marks}"
    )
    dup_consumed = len(consumed) - len({(r.partition, r.offset) for r in consumed})
    print(
        f"group consumed {len(consumed)} records ({dup_consumed} re-deliveries); {len(commits)} commit samples; "
        f"read-back {summary}"
    )

    # A new member resumes exactly at the committed offsets.
    extra = produce(c.bootstrap, topic, [f"extra-{i}" for i in range(60)], conf=QUIET, timeout=60)
    m = GroupConsumer(c.bootstrap, topic, group, "resumed").start()
    try:
        wait_for(lambda: m.n_records >= 60, 60, what="the restarted consumer to read the 60 new records")
        time.sleep(1)
    finally:
        m.stop()
    got = m.snapshot()
    first = {}
    for r in got:
        first.setdefault(r.partition, r.offset)
    early = [r for r in got if r.offset < final[r.partition]]
    assert not early, f"restarted consumer re-read records before the committed offsets: {early[:5]}"
    assert all(first[p] == final[p] for p in first), f"resumed at {first}, committed {final}"
    assert sorted(r.value for r in got) == sorted(v.decode() for _, _, v in extra), (
        "the restarted consumer did not read exactly the new records"
    )


def _reassign(tools, bootstrap, json_path, *args):
    return tools.run_class(
        REASSIGN, "--bootstrap-server", bootstrap, "--reassignment-json-file", str(json_path), *args, timeout=120
    )


def test_reassign_partition_to_fourth_broker(cluster_factory, tools, tmp_path):
    """Four brokers (three voters): move partition 0 from [1,2,3] to [2,3,4] while it is written;
    the reassignment completes with a full ISR, nothing acknowledged is lost, and broker 1 no
    longer hosts the partition."""
    c = cluster_factory.start(4, FAST, voters=3)
    topic = unique("repl-reassign")
    c.create_topic(topic, replica_assignment=[[1, 2, 3], [2, 3, 1]])
    assert c.partition(topic, 0)[1] == [1, 2, 3]
    prod = AckingProducer(c.bootstrap, topic, 2, rate=RATE).start()
    try:
        prod.wait_acks(1500, 60, what="before the reassignment")
        plan = tmp_path / "reassign.json"
        plan.write_text(
            json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": [2, 3, 4]}]})
        )
        r = _reassign(tools, c.bootstrap, plan, "--execute")
        t0 = time.monotonic()
        assert "Successfully started partition reassignment" in r.stdout, r.describe()

        states = []

        def moved():
            st = c.partition(topic, 0)
            if not states or states[-1][1] != st:
                states.append((round(time.monotonic() - t0, 1), st))
            leader, replicas, isr = st
            return leader in (2, 3, 4) and replicas == [2, 3, 4] and sorted(isr) == [2, 3, 4]

        wait_for(moved, 120, interval=0.2, what=f"{topic}[0] reassigned to [2, 3, 4] with a full ISR")
        t_moved = time.monotonic() - t0

        def none_listed():
            lst = tools.run_class(REASSIGN, "--bootstrap-server", c.bootstrap, "--list", timeout=90)
            return "No partition reassignments found" in lst.stdout

        wait_for(none_listed, 60, interval=1.0, what="ListPartitionReassignments to list none")
        print(
            f"reassignment of {topic}[0] to [2,3,4] complete {t_moved:.1f}s after the --execute tool "
            f"returned (it ran {r.seconds:.1f}s); (s, (leader, replicas, isr)) seen: {states}"
        )
        prod.wait_acks(300, 60, partition=0, after=time.monotonic(), what="after the reassignment")
    finally:
        prod.stop()
    _stop_and_check(c, topic, 2, prod, "reassignment")

    def gone():
        return not [d for d in c.node(1).data_dir.rglob(f"{topic}-0") if d.is_dir()]

    wait_for(gone, 60, interval=0.5, what=f"broker 1 to remove its {topic}-0 directory")
    assert [d for d in c.node(4).data_dir.rglob(f"{topic}-0") if d.is_dir()], f"broker 4 has no {topic}-0 directory"


def test_reassignment_throttle(cluster_factory, tools, tmp_path):
    """Kafka's reassignment tool with --throttle: moving a partition to a fourth broker at a
    bounded byte rate takes as long as the rate says, while the same move unthrottled is quick;
    --verify then removes the throttle configs."""
    c = cluster_factory.start(4, FAST, voters=3)
    topic = unique("repl-throttle")
    c.create_topic(topic, replica_assignment=[[1, 2, 3], [2, 3, 1]])
    size, rate = 4000, 400_000  # 4000 records of 1 KiB per partition; 400 kB/s
    value = bytes(range(256)) * 4
    for part in (0, 1):
        produce(c.bootstrap, topic, [value] * size, partition=part)

    def move(part, target, *args):
        plan = tmp_path / f"reassign-{part}.json"
        plan.write_text(
            json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": part, "replicas": target}]})
        )
        r = _reassign(tools, c.bootstrap, plan, "--execute", *args)
        assert "Successfully started partition reassignment" in r.stdout, r.describe()
        t0 = time.monotonic()
        c.wait_partition(
            topic,
            part,
            lambda _l, r, i: r == target and sorted(i) == sorted(target),
            120,
            what=f"replicas {target} with a full ISR",
        )
        return time.monotonic() - t0, plan, r

    fast, _, _ = move(1, [2, 3, 4])
    slow, plan, r = move(0, [2, 3, 4], "--throttle", str(rate))
    assert f"throttle limit was set to {rate} B/s" in r.stdout, r.describe()
    print(f"4 MB copied to broker 4 in {fast:.1f}s unthrottled, {slow:.1f}s at {rate} B/s")
    # A one-second burst may go at once; the rest at the rate.
    assert slow >= (size * 1024 - rate) / rate * 0.8, f"throttled move took only {slow:.1f}s"
    assert slow > 2 * fast, f"throttled {slow:.1f}s vs unthrottled {fast:.1f}s"

    v = _reassign(tools, c.bootstrap, plan, "--verify")
    assert "Clearing broker-level throttles" in v.stdout and "Clearing topic-level throttles" in v.stdout, v.describe()
    cfgs = c.topic_configs(topic)
    assert not cfgs.get("leader.replication.throttled.replicas") and not cfgs.get(
        "follower.replication.throttled.replicas"
    ), cfgs


def _metric_sum(node, name):
    vals = [v for n, _, v in node.metrics() if n == name]
    assert vals, f"node {node.id} exposes no {name} in /metrics"
    return sum(vals)


@pytest.mark.fjord_only
@pytest.mark.skipif(
    TARGET != "fjord",
    reason="Fjord's Prometheus /metrics; Apache Kafka exposes its ISR "
    "metrics (UnderReplicatedPartitions, IsrShrinksPerSec, IsrExpandsPerSec) over JMX only",
)
def test_isr_metrics_follow_a_node_failure(cluster_factory):
    """Fjord's /metrics (Kafka's are JMX): kill a node: under-replicated partitions > 0 and ISR
    shrinks counted on the others, no offline partition; restart it: back to 0 under-replicated,
    ISR expansions counted."""
    c = cluster_factory.start(3, FAST)
    topic = c.create_topic(unique("repl-metrics"), PARTS)
    prod = AckingProducer(c.bootstrap, topic, PARTS, rate=RATE).start()
    victim = c.node(3)
    others = [c.node(1), c.node(2)]

    def total(nodes, name):
        return sum(_metric_sum(nd, name) for nd in nodes)

    try:
        prod.wait_acks(600, 60, what="before the kill")
        wait_for(
            lambda: total(c.nodes, "fjord_under_replicated_partitions") == 0,
            30,
            what="no under-replicated partition with all nodes up",
        )
        assert total(c.nodes, "fjord_controller_active") == 1, _controller_metric(c)
        assert total(c.nodes, "fjord_offline_partitions") == 0
        shrinks0 = total(others, "fjord_isr_shrinks_total")
        expands0 = total(others, "fjord_isr_expands_total")
        victim.kill9()
        t0 = time.monotonic()
        wait_for(
            lambda: (
                total(others, "fjord_under_replicated_partitions") > 0
                and total(others, "fjord_isr_shrinks_total") > shrinks0
            ),
            60,
            interval=0.5,
            what="fjord_under_replicated_partitions > 0 and fjord_isr_shrinks_total increasing",
        )
        print(
            f"under-replicated and ISR shrink visible {time.monotonic() - t0:.1f}s after the kill: "
            f"{ {nd.id: _metric_sum(nd, 'fjord_under_replicated_partitions') for nd in others} }"
        )
        assert total(others, "fjord_offline_partitions") == 0, "partitions offline with 2 of 3 nodes up"
        assert total(others, "fjord_controller_active") == 1
        prod.wait_acks(300, 60, after=time.monotonic(), what="with one node down")
        victim.restart()
        t0 = time.monotonic()
        wait_for(
            lambda: (
                total(c.nodes, "fjord_under_replicated_partitions") == 0
                and total(others, "fjord_isr_expands_total") > expands0
            ),
            90,
            interval=0.5,
            what="fjord_under_replicated_partitions back to 0 and fjord_isr_expands_total increasing",
        )
        print(f"ISR full again {time.monotonic() - t0:.1f}s after the restart")
        assert total(c.nodes, "fjord_controller_active") == 1
    finally:
        prod.stop()
    _stop_and_check(c, topic, PARTS, prod, "isr metrics")
