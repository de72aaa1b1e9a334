"""A Jepsen-style safety checker for a Kafka-compatible cluster (Fjord or Apache Kafka), after
Jepsen's Kafka workload: clients write and read a few partitions while a nemesis injects faults
into the nodes; afterwards every observation is checked.

Run it with e2e/checker/run (which provides the provisioned environment):

    e2e/checker/run [--target fjord|kafka] [--seed N] [--duration 60] [--out report.json] ...

Workload: a cluster started with the e2e harness (e2e/harness/cluster.py; RF 3, min ISR 2) and one
topic; --producers idempotent acks=all producers write unique values continuously; --consumers
members of one group (manual synchronous commits after every poll) read it.
Nemesis: a seeded random schedule (printed before it runs) of one fault at a time, bounded by
--duration (no op starts after that; the ops not run are reported as skipped):
  kill9       kill -9 a node, restart it after a few seconds
  pause       SIGSTOP a node past broker.session.timeout.ms, then SIGCONT
  controller  SIGTERM the active controller and start it again
and the network partitions (--faults with any of these; each node then runs in a network
namespace of its own and the clients in another that reaches every node, see harness/netns.py):
  isolate         cut one node from every other node
  cut-leader      cut the leader of a partition from its followers
  cut-controller  cut the active controller's controller-listener traffic to the other voters
  split           cut a random minority of the nodes from the majority
  quorum-cut      cut the controller-listener traffic between all nodes (the quorum has no
                  majority; the brokers' own listeners stay connected): every partition must
                  keep taking acks=all writes until the heal
a cut lasts 1.5-3 broker session timeouts, then heals. While a cut lasts and until the cluster
has healed, the nodes on the majority side (all nodes for quorum-cut) must stay in every ISR,
and (Fjord) from two election timeouts after the cut on, exactly one node may report
fjord_controller_active = 1 (none during quorum-cut).
each followed by waiting until the cluster has healed (all brokers listed, full ISR) and a quiet
interval. Then producers stop, consumers catch up and a fresh consumer reads every partition
from the beginning (read_uncommitted).
Anomalies (each one fails the run):
  lost                  acknowledged, but not in the final read
  duplicates            the same value stored at two offsets
  inconsistent_offsets  one (partition, offset) holding different values across the acks, the
                        consumers' polls and the final read
  nonmonotonic_polls    a consumer seeing offsets go backwards on a partition within one
                        assignment (no rebalance, no seek in between)
Also fatal: a node that dies by itself, a cluster that does not heal within --heal-timeout, and
for partitions a majority-side node leaving an ISR or a wrong number of active controllers.
Output: a JSON report (--out) and one summary line; exit 0 when clean, 1 on any anomaly or
liveness failure, 2 when the harness itself failed (e.g. the cluster did not start).
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

from harness import cluster as cluster_mod
from harness import kproto, netns, txn_workload
from harness.clients import parse_prometheus, wait_for
from harness.procs import http_text
from harness.workload import AckingProducer, GroupConsumer, high_watermarks, read_all

SESSION_MS = 3000
OVERRIDES = {
    "broker.session.timeout.ms": str(SESSION_MS),
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}
PARTITIONS = ("isolate", "cut-leader", "cut-controller", "split", "quorum-cut")
FAULTS = ("kill9", "pause", "controller", "kill9-coordinator", "pause-coordinator", *PARTITIONS)
# controller.quorum.election.timeout.ms (both targets' default).
ELECTION_TIMEOUT_S = 1.0


def log(msg):
    print(f"[checker {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_schedule(rng, duration, node_ids, faults, count=None):
    """[(fault, node or None, fault seconds, quiet seconds)] whose planned time adds up to at
    least `duration` seconds, or exactly `count` ops (controller and leader faults pick their
    node when they run)."""
    ops, planned = [], 0.0
    while (planned < duration) if count is None else (len(ops) < count):
        fault = rng.choice(faults)
        if fault == "kill9":
            node, hold = rng.choice(node_ids), round(rng.uniform(1.0, 6.0), 1)
        elif fault == "pause":
            node, hold = rng.choice(node_ids), round(rng.uniform(1.5, 3.0) * SESSION_MS / 1000, 1)
        elif fault == "kill9-coordinator":
            node, hold = None, round(rng.uniform(1.0, 6.0), 1)
        elif fault == "pause-coordinator":
            node, hold = None, round(rng.uniform(1.5, 3.0) * SESSION_MS / 1000, 1)
        elif fault in ("isolate", "split"):
            node, hold = rng.choice(node_ids), round(rng.uniform(1.5, 3.0) * SESSION_MS / 1000, 1)
        elif fault in PARTITIONS:
            node, hold = None, round(rng.uniform(1.5, 3.0) * SESSION_MS / 1000, 1)
        else:
            node, hold = None, 0.0
        quiet = round(rng.uniform(2.0, 5.0), 1)
        ops.append((fault, node, hold, quiet))
        planned += hold + quiet + (8.0 if fault != "pause" else 2.0)  # rough restart/heal cost
    return ops


class PartitionMonitor(threading.Thread):
    """While a cut lasts and until the cluster has healed, samples every 0.5 s each partition's
    ISR as a majority-side node reports it, and (Fjord) every node's fjord_controller_active;
    records each ISR that lacks a protected node and each sample with a wrong number of active
    controllers."""

    def __init__(self, cluster, topic, partitions):
        super().__init__(daemon=True, name="partition-monitor")
        self.c, self.topic, self.partitions = cluster, topic, partitions
        self.lock = threading.Lock()
        self.window = None  # (op index, protected node ids, quorum cut?, cut time)
        self.healed_at = None  # when the cut of the open window was healed
        self.violations = []
        self.samples = 0
        self.stopping = threading.Event()

    def open(self, i, protected, quorum_cut):
        with self.lock:
            self.window = (i, frozenset(protected), quorum_cut, time.monotonic())
            self.healed_at = None

    def heal(self):
        with self.lock:
            self.healed_at = time.monotonic()

    def close_window(self):
        with self.lock:
            self.window = None

    def stop(self):
        self.stopping.set()
        self.join(10)

    def run(self):
        while not self.stopping.wait(0.5):
            with self.lock:
                w = self.window
            if w is not None:
                self.sample(*w)

    def sample(self, i, protected, quorum_cut, t_cut):
        c = self.c
        for nid in sorted(protected)[:1]:
            nd = c.node(nid)
            try:
                parts, _ = kproto.metadata_v1(nd.host, nd.port, self.topic, timeout=2)
            except (OSError, ValueError, ConnectionError):
                continue  # asked again in 0.5 s
            for p, (err, leader, replicas, isr) in sorted(parts.items()):
                missing = sorted(set(replicas) & protected - set(isr))
                if missing and err == 0:
                    self.record(
                        f"op {i}: partition {p} ISR {isr} (leader {leader}) lacks majority-side node(s) {missing}"
                    )
        self.samples += 1
        with self.lock:
            healed_at = self.healed_at
        # From two election timeouts after the cut (or the heal) on: one active controller (none
        # while a quorum-cut lasts), never two.
        since = t_cut if healed_at is None else healed_at
        if c.target != "fjord" or time.monotonic() - since < 2 * ELECTION_TIMEOUT_S:
            return
        active = []
        for nd in c.nodes:
            try:
                m = parse_prometheus(http_text(nd.metrics_url, timeout=2))
            except OSError:
                continue
            if any(name == "fjord_controller_active" and v == 1 for name, _, v in m):
                active.append(nd.id)
        want = 0 if quorum_cut and healed_at is None else 1
        if len(active) != want:
            phase = "the cut" if healed_at is None else "the heal"
            self.record(
                f"op {i}: {len(active)} active controllers {active} ({time.monotonic() - since:.1f}s after {phase})"
            )

    def record(self, what):
        with self.lock:
            if len(self.violations) < 200:
                self.violations.append(what)
            log(f"violation: {what}")


class Checker:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.report = {
            "seed": args.seed,
            "target": args.target,
            "nodes": args.nodes,
            "partitions": args.partitions,
            "producers": args.producers,
            "consumers": args.consumers,
            "rate_per_producer": args.rate,
            "overrides": OVERRIDES,
            "ops": [],
            "liveness_failures": [],
        }
        self.factory = None
        self.cluster = None
        self.producers, self.consumers, self.writers = [], [], []
        self.net = netns.Network(args.netns, args.nodes) if args.netns else None
        self.monitor = None

    # --- nemesis ------------------------------------------------------------
    def healed(self, timeout):
        c = self.cluster
        t0 = time.monotonic()
        c.wait_brokers(c.ids, timeout=timeout)
        c.wait_full_isr(self.topic, self.args.partitions, timeout=max(5.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def check_nodes(self):
        dead = [nd for nd in self.cluster.nodes if nd.expect_running and not nd.alive()]
        if dead:
            for nd in dead:
                nd.expect_running = False
            raise RuntimeError("node(s) died on their own: " + "; ".join(f"{nd!r}\n{nd.log_tail(30)}" for nd in dead))

    def run_op(self, i, fault, node_id, hold, quiet):
        c = self.cluster
        op = {
            "i": i,
            "fault": fault,
            "node": node_id,
            "hold_s": hold,
            "quiet_s": quiet,
            "t_start": round(time.monotonic() - self.t0, 1),
        }
        t = time.monotonic()
        if fault in PARTITIONS:
            self.run_cut(op, fault, node_id, hold)
        elif fault in ("kill9-coordinator", "pause-coordinator"):
            # The node coordinating the first writer's transactional id.
            p = txn_workload.coordinator_partition("checker-w0")
            node_id = wait_for(
                lambda: (lambda x: x if x in c.ids else None)(c.partition("__transaction_state", p)[0]),
                30,
                interval=0.5,
                what="the transaction coordinator",
            )
            op["node"] = node_id
            nd = c.node(node_id)
            if fault == "kill9-coordinator":
                nd.kill9()
                time.sleep(hold)
                nd.restart()
            else:
                nd.sigstop()
                try:
                    time.sleep(hold)
                finally:
                    nd.sigcont()
        elif fault == "kill9":
            c.node(node_id).kill9()
            time.sleep(hold)
            t1 = time.monotonic()
            c.node(node_id).restart()
            op["restart_s"] = round(time.monotonic() - t1, 1)
        elif fault == "pause":
            nd = c.node(node_id)
            nd.sigstop()
            try:
                time.sleep(hold)
            finally:
                nd.sigcont()
        else:
            node_id = wait_for(
                lambda: (lambda x: x if x in c.ids else None)(c.active_controller()),
                30,
                interval=0.5,
                what="the active controller",
            )
            op["node"] = node_id
            op["find_controller_s"] = round(time.monotonic() - t, 1)
            t1 = time.monotonic()
            c.node(node_id).stop()
            op["stop_s"] = round(time.monotonic() - t1, 1)
            t1 = time.monotonic()
            c.node(node_id).start()
            op["restart_s"] = round(time.monotonic() - t1, 1)
        op["fault_s"] = round(time.monotonic() - t, 1)
        try:
            op["heal_s"] = round(self.healed(self.args.heal_timeout), 1)
        except (AssertionError, cluster_mod.StartError) as e:
            op["heal_s"] = None
            self.report["liveness_failures"].append(
                f"op {i} ({fault} node {node_id}): not healed within {self.args.heal_timeout}s: {str(e)[:2000]}"
            )
        log(
            f"op {i}: {fault} node {op['node']} held {hold}s, took {op['fault_s']}s "
            f"({', '.join(f'{k} {v}' for k, v in op.items() if k.endswith('_s') and k not in ('fault_s', 'hold_s', 'quiet_s', 'heal_s'))}), "
            f"healed in {op['heal_s']}s"
        )
        if self.monitor is not None:
            self.monitor.close_window()
        self.report["ops"].append(op)
        self.check_nodes()
        time.sleep(quiet)

    def run_cut(self, op, fault, node_id, hold):
        """Cut links for `hold` seconds, then heal; the monitor watches from the cut until the
        cluster has healed (run_op closes its window)."""
        c, net, ids = self.cluster, self.net, self.cluster.ids
        ports = {nd.id: nd.controller_port for nd in c.nodes}
        if fault == "cut-leader":
            p = self.rng.randrange(self.args.partitions)
            leader, replicas, _ = c.partition(self.topic, p)
            minority, majority = {leader}, set(replicas) - {leader}
            op.update(node=leader, partition=p)
        elif fault == "cut-controller":
            ctl = wait_for(lambda: (lambda x: x if x in ids else None)(c.active_controller()), 30, interval=0.5)
            minority, majority = {ctl}, set(ids) - {ctl}
            op["node"] = ctl
        elif fault == "split":
            size = max(1, (len(ids) - 1) // 2)
            others = [i for i in ids if i != node_id]
            minority = {node_id, *self.rng.sample(others, size - 1)}
            majority = set(ids) - minority
            op["minority"] = sorted(minority)
        elif fault == "isolate":
            minority, majority = {node_id}, set(ids) - {node_id}
        else:  # quorum-cut: nobody is cut off from the data path
            minority, majority = set(), set(ids)
        self.monitor.open(op["i"], majority, fault == "quorum-cut")
        if fault == "quorum-cut":
            net.cut_ports([(a, b) for a in ids for b in ids if a < b], ports)
        elif fault == "cut-controller":
            net.cut_ports([(a, b) for a in minority for b in majority], ports)
        else:
            net.cut(minority, majority)
        t_cut = time.monotonic()
        try:
            time.sleep(hold)
        finally:
            net.heal()
            self.monitor.heal()
        if fault == "quorum-cut":
            # With no controller the brokers keep serving on their last metadata: every partition
            # takes acks=all writes to the end of the cut, past the broker session timeout.
            t_heal, since = time.monotonic(), t_cut + SESSION_MS / 1000 + 0.5
            served = Counter(a.partition for p in self.producers for a in p.acks_snapshot() if since <= a.t < t_heal)
            op["acks_late_in_cut"] = dict(sorted(served.items()))
            idle = [p for p in range(self.args.partitions) if not served[p]]
            if idle and t_heal - since > 0.5:
                self.report["liveness_failures"].append(
                    f"op {op['i']} (quorum-cut): no acknowledged write to partition(s) {idle} in the last "
                    f"{t_heal - since:.1f}s of the cut: leaders stopped serving without a controller"
                )

    # --- main ---------------------------------------------------------------
    def run(self):
        a = self.args
        schedule = make_schedule(self.rng, a.duration, list(range(1, a.nodes + 1)), a.faults, a.ops)
        self.report["schedule"] = [{"fault": f, "node": n, "hold_s": h, "quiet_s": q} for f, n, h, q in schedule]
        log(
            f"seed {a.seed}; target {a.target}; schedule: "
            + ", ".join(f"{f}({n if n else 'active'}{f', {h}s' if h else ''})" for f, n, h, _ in schedule)
        )
        tmp = Path(a.tmp) if a.tmp else Path(tempfile.gettempdir())
        tmp.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="fjord-checker-", dir=tmp))
        self.factory = cluster_mod.ClusterFactory(self.root, "checker", a.target)
        t = time.monotonic()
        overrides = {**OVERRIDES, **(txn_workload.TXN_OVERRIDES if a.workload == "txn" else {})}
        self.report["overrides"] = overrides
        self.cluster = c = self.factory.start(n=a.nodes, overrides=overrides, net=self.net)
        self.report["cluster_start_s"] = round(time.monotonic() - t, 1)
        log(
            f"{a.nodes}-node {a.target} cluster up in {self.report['cluster_start_s']}s: {c.bootstrap} "
            f"(dirs under {self.root})"
        )
        self.topic = f"checker-{a.seed}"
        c.create_topic(self.topic, a.partitions, replication_factor=3)
        if self.net is not None:
            self.monitor = PartitionMonitor(c, self.topic, a.partitions)
            self.monitor.start()
        group = f"checker-group-{a.seed}"
        txn = a.workload == "txn"
        iso = {"isolation.level": "read_committed"} if txn else {}
        self.consumers = [
            GroupConsumer(c.bootstrap, self.topic, group, f"c{i}", commit="manual", conf=iso).start()
            for i in range(a.consumers)
        ]
        if txn:
            self.writers = [
                txn_workload.TxnWriter(c.bootstrap, self.topic, a.partitions, f"w{i}", a.seed * 100 + i).start()
                for i in range(a.producers)
            ]
            wait_for(
                lambda: all(any(o == "committed" for _, _, o in w.snapshot()) for w in self.writers),
                60,
                what="a committed transaction per writer (warm-up)",
            )
        else:
            self.producers = [
                AckingProducer(c.bootstrap, self.topic, a.partitions, rate=a.rate, prefix=f"p{i}", name=f"p{i}").start()
                for i in range(a.producers)
            ]
            for p in self.producers:
                p.wait_acks(50, 60, what="warm-up")
        self.t0 = time.monotonic()
        for i, (fault, node, hold, quiet) in enumerate(schedule):
            if a.ops is None and i > 0 and time.monotonic() - self.t0 >= a.duration:
                self.report["skipped_ops"] = len(schedule) - i
                log(f"--duration {a.duration}s used up: the last {len(schedule) - i} op(s) of the schedule skipped")
                break
            self.run_op(i, fault, node, hold, quiet)
        self.report["nemesis_s"] = round(time.monotonic() - self.t0, 1)
        if self.monitor is not None:
            self.monitor.stop()
            self.report["partition_monitor_samples"] = self.monitor.samples
            self.report["liveness_failures"] += self.monitor.violations

        if txn:
            return self.finish_txn()
        log("nemesis done; stopping producers")
        time.sleep(2)
        for p in self.producers:
            p.stop(flush_timeout=120)
        marks = None
        deadline = time.monotonic() + 90
        marks = high_watermarks(c.bootstrap, self.topic, a.partitions)
        while time.monotonic() < deadline:
            last = defaultdict(lambda: -1)
            for cons in self.consumers:
                for r in cons.snapshot():
                    last[r.partition] = max(last[r.partition], r.offset)
            if all(last[p] >= marks[p][1] - 1 for p in range(a.partitions)):
                break
            time.sleep(0.5)
        else:
            self.report["liveness_failures"].append(
                f"consumers did not reach the high watermarks {marks} within 90 s after the producers stopped"
            )
        for cons in self.consumers:
            cons.stop()
        log("final read")
        final, marks = read_all(c.bootstrap, self.topic, a.partitions, timeout=180)
        self.check_nodes()
        return self.analyse(final, marks)

    def finish_txn(self):
        """Stop the writers, let the read_committed group catch up, and check a fresh
        read_committed read against what each writer was told."""
        a, c = self.args, self.cluster
        log("nemesis done; stopping writers")
        for w in self.writers:
            w.stop()
        time.sleep(5)
        for cons in self.consumers:
            cons.stop()
        marks = high_watermarks(c.bootstrap, self.topic, a.partitions)
        log("final read_committed read")
        final = txn_workload.read_committed_all(c.bootstrap, self.topic, a.partitions, marks, timeout=180)
        self.check_nodes()
        polls = [(cons.name, r) for cons in self.consumers for r in cons.snapshot()]
        anomalies, examples, stats = txn_workload.analyse(self.writers, polls, final)
        anomalies["nonmonotonic_polls"] = sum(len(cons.regressions) for cons in self.consumers)
        stats["watermarks"] = {p: list(m) for p, m in marks.items()}
        stats["consumer_errors"] = dict(Counter(e[1] for cons in self.consumers for e in cons.errors))
        self.report.update({"anomalies": anomalies, "examples": examples, "stats": stats})
        return anomalies

    # --- analysis -----------------------------------------------------------
    def analyse(self, final, marks):
        acks = [(p.name, ack) for p in self.producers for ack in p.acks_snapshot()]
        polls = [(cons.name, r) for cons in self.consumers for r in cons.snapshot()]
        at = defaultdict(set)  # (partition, offset) -> values observed there
        sources = defaultdict(set)
        for name, ack in acks:
            if ack.offset is None:  # delivered, offset not reported (see workload.Ack)
                continue
            at[(ack.partition, ack.offset)].add(ack.value)
            sources[(ack.partition, ack.offset)].add(f"ack:{name}")
        for name, r in polls:
            at[(r.partition, r.offset)].add(r.value)
            sources[(r.partition, r.offset)].add(f"poll:{name}")
        where = defaultdict(list)
        for p, recs in final.items():
            for o, v in recs:
                at[(p, o)].add(v)
                sources[(p, o)].add("final")
                where[v].append((p, o))

        lost = [
            {"producer": n, "partition": k.partition, "offset": k.offset, "value": k.value}
            for n, k in acks
            if k.value not in where
        ]
        duplicates = [{"value": v, "at": locs} for v, locs in where.items() if len(locs) > 1]
        inconsistent = [
            {"partition": po[0], "offset": po[1], "values": sorted(vs), "seen_by": sorted(sources[po])}
            for po, vs in sorted(at.items())
            if len(vs) > 1
        ]
        nonmono = [
            {"consumer": cons.name, "partition": p, "previous": prev, "offset": o, "generation": g}
            for cons in self.consumers
            for (_, p, prev, o, g) in cons.regressions
        ]
        # Same value polled at different offsets is covered by `duplicates` (stored twice) or
        # `inconsistent_offsets` (offset content differs); nothing else to count here.
        anomalies = {
            "lost": len(lost),
            "duplicates": len(duplicates),
            "inconsistent_offsets": len(inconsistent),
            "nonmonotonic_polls": len(nonmono),
        }
        read_count = sum(len(r) for r in final.values())
        polled_positions = {(r.partition, r.offset) for _, r in polls}
        self.report.update(
            {
                "anomalies": anomalies,
                "examples": {
                    "lost": lost[:20],
                    "duplicates": duplicates[:20],
                    "inconsistent_offsets": inconsistent[:20],
                    "nonmonotonic_polls": nonmono[:20],
                },
                "stats": {
                    "acked": len(acks),
                    "acked_without_offset": sum(1 for _, k in acks if k.offset is None),
                    "sent": sum(p.sent for p in self.producers),
                    "failed_deliveries": sum(len(p.failures_snapshot()) for p in self.producers),
                    "failure_codes": dict(
                        sum((Counter(f.code for f in p.failures_snapshot()) for p in self.producers), Counter())
                    ),
                    "undelivered_at_stop": sum(p.undelivered or 0 for p in self.producers),
                    "final_read": read_count,
                    "stored_unacked": read_count - len({k.value for _, k in acks} & set(where)),
                    "watermarks": {p: list(m) for p, m in marks.items()},
                    "polled": len(polls),
                    "polled_distinct_offsets": len(polled_positions),
                    "redeliveries": len(polls) - len(polled_positions),
                    "rebalances": sum(len(cons.events) for cons in self.consumers),
                    "commit_errors": sum(len(cons.commit_errors) for cons in self.consumers),
                    "consumer_errors": dict(Counter(e[1] for cons in self.consumers for e in cons.errors)),
                },
            }
        )
        return anomalies

    def close(self, keep):
        for w in self.writers:
            w.stop(timeout=5)
        for p in self.producers:
            try:
                if p.undelivered is None:
                    p.stop(flush_timeout=5)
            except Exception:  # noqa: BLE001
                pass
        for cons in self.consumers:
            try:
                cons.stop()
            except Exception:  # noqa: BLE001
                pass
        if self.factory is not None:
            dead = self.factory.close()
            if dead:
                self.report["liveness_failures"].append(
                    "node(s) dead at the end although they should be running: " + ", ".join(map(repr, dead))
                )
        if self.factory is not None and not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=os.environ.get("FJORD_TEST_TARGET", "fjord"), choices=("fjord", "kafka"))
    ap.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    ap.add_argument("--duration", type=float, default=60.0, help="planned nemesis time, s (default 60)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0, help="records/s per producer (default 50)")
    ap.add_argument(
        "--workload",
        default="plain",
        choices=("plain", "txn"),
        help="plain: idempotent producers; txn: transactional writers and read_committed readers (txn.py)",
    )
    ap.add_argument("--faults", default=None, help=f"comma list of {', '.join(FAULTS)}")
    ap.add_argument("--ops", type=int, default=None, help="run exactly this many faults (default: fill --duration)")
    ap.add_argument("--heal-timeout", type=float, default=90.0)
    ap.add_argument("--netns", default=None, help=argparse.SUPPRESS)  # set when re-run inside the client namespace
    ap.add_argument("--out", default="checker-report.json", help="JSON report path")
    ap.add_argument("--tmp", default=os.environ.get("FJORD_TEST_TMP"), help="where the node dirs go")
    ap.add_argument("--keep", action="store_true", help="keep node dirs (always kept on an anomaly)")
    a = ap.parse_args(argv)
    if a.faults is None:
        # The coordinator faults aim at the transaction coordinator of the txn workload.
        a.faults = ",".join(f for f in FAULTS if a.workload == "txn" or "coordinator" not in f)
    a.faults = [f.strip() for f in a.faults.split(",") if f.strip()]
    bad = set(a.faults) - set(FAULTS)
    if bad or not a.faults:
        ap.error(f"unknown faults {sorted(bad)}; choose from {FAULTS}")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 10**9)
    os.environ["FJORD_TEST_TARGET"] = a.target
    cluster_mod.TARGET = a.target
    if set(a.faults) & set(PARTITIONS) and not a.netns:
        return run_in_network(a, argv if argv is not None else sys.argv[1:])

    ck = Checker(a)
    t0 = time.monotonic()
    rc, harness_error = 0, None
    try:
        ck.run()
    except Exception as e:  # noqa: BLE001 - reported
        harness_error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    anomalies = ck.report.get("anomalies")
    failed = bool(harness_error or ck.report["liveness_failures"] or (anomalies and any(anomalies.values())))
    ck.close(keep=a.keep or failed)
    ck.report["elapsed_s"] = round(time.monotonic() - t0, 1)
    if harness_error:
        ck.report["harness_error"] = harness_error
        if ck.cluster is not None:
            ck.report["log_tails"] = {nd.id: nd.log_tail(40) for nd in ck.cluster.nodes}
    if failed and ck.factory is not None:
        ck.report["kept_dir"] = str(ck.root)
    Path(a.out).write_text(json.dumps(ck.report, indent=2, default=str) + "\n")

    ops = Counter(op["fault"] for op in ck.report["ops"])
    st = ck.report.get("stats", {})
    if harness_error and anomalies is None:
        verdict, rc = "ERROR", 2
    elif failed:
        verdict, rc = "FAIL", 1
    else:
        verdict = "OK"
    an = anomalies or {}
    print(
        f"checker {verdict}: target={a.target} seed={a.seed} faults={len(ck.report['ops'])} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}) acked={st.get('acked')} "
        f"read={st.get('final_read')} polled={st.get('polled')} "
        + (f"transactions={st.get('transactions')} " if a.workload == "txn" else "")
        + " ".join(f"{k}={v}" for k, v in an.items())
        + f" liveness_failures={len(ck.report['liveness_failures'])} "
        f"elapsed={ck.report['elapsed_s']}s report={a.out}",
        flush=True,
    )
    if harness_error:
        print(harness_error, file=sys.stderr)
    for lf in ck.report["liveness_failures"]:
        print(f"liveness failure: {lf[:1500]}", file=sys.stderr)
    return rc


def run_in_network(a, argv):
    """The checker again, inside the client namespace of a network of its own (harness/netns.py)."""
    if "--seed" not in argv:
        argv = [*argv, "--seed", str(a.seed)]
    return netns.run_inside(__file__, argv, a.nodes)


if __name__ == "__main__":
    sys.exit(main())
