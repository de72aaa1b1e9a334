#!/usr/bin/env python3
"""Fjord vs Apache Kafka on 3-node clusters: the replication figures, side by side.

Run it through `e2e/bench/run --cluster [--quick]` (which provisions the tools first).
Each system gets a fresh 3-node cluster on this machine (every node broker+controller,
RF 3, min.insync.replicas 2), in turn, driven by the same clients:

  cluster-produce-1k-acksall       Kafka's ProducerPerformance, acks=all, 1 KiB, 6 and 1 partitions
  cluster-failover-stall           kill -9 the partition leader under a steady idempotent producer;
                                   the longest gap between acks, and kill -> acks flow again
  cluster-restart-1000-partitions  SIGTERM one node hosting 1000 partitions, start it again; process
                                   start -> the node is in the ISR of every partition it hosts

Output: tables with Fjord/Kafka ratios on stdout; the rows go into target/bench/results.json
(rows of earlier cluster runs are replaced, the other rows kept). See e2e/bench/README.md.
"""

import argparse
import bisect
import collections
import gc
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import bench  # e2e/bench/bench.py (this script's folder): tools, ProducerPerformance parsing, tables
from bench import log, pct
from harness import kafka, probe
from harness.cluster import new_cluster_id
from harness.paths import REPO as ROOT
from harness.ports import port_in_use
from harness.procs import CLK_TCK, Process, http_status, proc_cpu_s

HERE = Path(__file__).resolve().parent

MIB = bench.MIB

PROFILES = {
    # ~12 minutes on 2 cores: kafka, kafka with Fjord's session timeout (failover only), fjord
    "default": dict(
        n_1k=400_000,
        failover_runs=5,
        failover_rate=2000,
        failover_settle_s=3,
        restart_runs=3,
        restart_topics=100,
        restart_partitions=10,
        seed_per_partition=10,
        systems="kafka,kafka-session2500,fjord",
        tool_timeout=300,
    ),
    # ~3 minutes: small counts, 1 kill, 1 restart, no kafka-session2500 cluster
    "quick": dict(
        n_1k=10_000,
        failover_runs=1,
        failover_rate=2000,
        failover_settle_s=0.5,
        restart_runs=1,
        restart_topics=100,
        restart_partitions=10,
        seed_per_partition=2,
        systems="kafka,fjord",
        tool_timeout=120,
    ),
}
PARTITIONS = (6, 1)
RECORD = 1024
FAILOVER_TOPIC = "bench-failover"

# Broker settings of every node of every cluster (Kafka's names; Fjord reads the same).
REPLICATION = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
}
SHARED = {
    **REPLICATION,
    "num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "true",
}
# What e2e/kafka/start-cluster sets besides REPLICATION (Fjord has no such internal topics).
KAFKA_EXTRA = kafka.KAFKA_EXTRA_DEFAULTS
KAFKA_HEAP = kafka.KAFKA_HEAP  # e2e/kafka/start-cluster's default
# Broker liveness defaults (documented; neither system is told these unless a variant says so).
SESSION_DEFAULTS = {"kafka": (9000, 2000), "fjord": (2500, 500)}

SYSTEMS = {
    # name: (kind, extra broker settings, scenarios, label)
    "kafka": (
        "kafka",
        {},
        ("produce", "failover", "restart"),
        "Apache Kafka, default broker.session.timeout.ms=9000 / broker.heartbeat.interval.ms=2000",
    ),
    "kafka-session2500": (
        "kafka",
        {"broker.session.timeout.ms": "2500", "broker.heartbeat.interval.ms": "500"},
        ("failover",),
        "Apache Kafka with Fjord's liveness settings: broker.session.timeout.ms=2500, "
        "broker.heartbeat.interval.ms=500 (failover only)",
    ),
    "fjord": (
        "fjord",
        {},
        ("produce", "failover", "restart"),
        "Fjord, default broker.session.timeout.ms=2500 / broker.heartbeat.interval.ms=500",
    ),
}
SCENARIO_ROWS = {
    "produce": [("cluster-produce-1k-acksall", p) for p in PARTITIONS],
    "failover": [("cluster-failover-stall", 1)],
    "restart": [("cluster-restart-1000-partitions", None)],
}
RATIO_FIELDS = [
    "records_per_sec",
    "mb_per_sec",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "cpu_s",
    "peak_rss_mb",
    "stall_p50_ms",
    "stall_max_ms",
    "stall_leader_only_p50_ms",
    "recovery_p50_ms",
    "recovery_max_ms",
    "ready_p50_ms",
    "ready_max_ms",
    "api_versions_p50_ms",
    "shutdown_p50_ms",
]


def now_ns():
    return time.monotonic_ns()


def ms_since(t0_ns):
    return (time.monotonic_ns() - t0_ns) / 1e6


class ForeignCpu:
    """CPU taken by work other than this benchmark while it runs, sampled every 2 s: the busy
    jiffies of /proc/stat minus this process, its children (the Fjord nodes, the client JVMs)
    and the Kafka nodes (found by the data directory in their command line). The 1-minute load
    average cannot tell that: the benchmark's own JVMs raise it."""

    def __init__(self, mark, interval=2.0):
        self.me, self.mark, self.interval = os.getpid(), mark.encode(), interval
        self.ours = {}  # (pid, starttime) -> bool
        self.samples = []  # (monotonic s, other cores busy)
        self._stop = threading.Event()
        self._prev = self._scan()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def _busy():
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f[:7])
        return user + nice + system + irq + softirq

    def _scan(self):
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            procs[int(d)] = (int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]))
        ours = {}
        for pid, (ppid, start, cpu) in procs.items():
            key = (pid, start)
            if key not in self.ours:
                p, mine = pid, False
                for _ in range(64):
                    if p == self.me:
                        mine = True
                        break
                    if p <= 1 or p not in procs:
                        break
                    p = procs[p][0]
                if not mine:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as fh:
                            mine = self.mark in fh.read()
                    except OSError:
                        pass
                self.ours[key] = mine
            if self.ours[key] and pid != self.me:
                ours[pid] = (ppid, start, cpu)
        with open("/proc/self/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        me = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime (waited children)
        return time.monotonic(), self._busy(), me, ours

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                cur = self._scan()
            except OSError:
                continue
            t0, busy0, me0, ours0 = self._prev
            t1, busy1, me1, ours1 = cur
            ours = me1 - me0
            for pid, (_pp, start, cpu) in ours1.items():
                old = ours0.get(pid)
                ours += cpu - old[2] if old and old[1] == start else cpu
            for pid, (ppid, _start, cpu) in ours0.items():
                if pid not in ours1 and ppid == self.me:
                    ours -= cpu  # a waited child: its whole CPU is in cutime now
            self.samples.append((t1, max(0.0, (busy1 - busy0 - ours) / CLK_TCK / (t1 - t0))))
            self._prev = cur

    def mean_since(self, t0):
        v = [c for t, c in self.samples if t >= t0]
        return round(sum(v) / len(v), 2) if v else None

    def max_since(self, t0):
        v = [c for t, c in self.samples if t >= t0]
        return round(max(v), 2) if v else None

    def close(self):
        self._stop.set()


FOREIGN = None  # the run's ForeignCpu


# ---------------------------------------------------------------------------
# Nodes and clusters


class Node(Process):
    """A node of a benchmark cluster on fixed ports; the process lifecycle (pid, alive, SIGTERM,
    SIGKILL, waiting for the exit) is harness.procs.Process."""

    def __init__(self, cluster, node_id):
        super().__init__()
        self.cluster, self.id = cluster, node_id
        self.label = f"{cluster.system} node {node_id}"
        self.dir = cluster.dir / f"n{node_id}"
        b = cluster.base_port
        self.port, self.cport, self.hport = b + node_id - 1, b + 100 + node_id - 1, b + 200 + node_id - 1
        self.bootstrap = f"127.0.0.1:{self.port}"

    def spawn_node(self):
        """Start the process (not waiting); returns time.monotonic_ns() just before."""
        raise NotImplementedError

    def terminate(self, timeout=120, quiet=False):
        """SIGTERM and wait; returns ms to exit (SIGKILL after timeout: returns None)."""
        ms = super().terminate(timeout, quiet)
        if ms is None and not quiet:
            log(f"{self.cluster.system} node {self.id}: no exit {timeout} s after SIGTERM; SIGKILL")
        return ms

    def wait_api(self, deadline):
        """Poll ApiVersions every 20 ms; returns monotonic ns of the first answer."""
        last = None
        while True:
            try:
                probe.api_versions("127.0.0.1", self.port, timeout=1.0)
                return now_ns()
            except (OSError, ValueError, struct.error) as e:
                last = e
            if not self.alive():
                raise RuntimeError(f"{self.cluster.system} node {self.id} exited during start\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.cluster.system} node {self.id} does not answer ApiVersions ({last})\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def wait_http_ready(self, deadline):
        """Fjord: poll GET /ready every 20 ms; returns monotonic ns of the first 200 (Kafka: None)."""
        return None


class FjordNode(Node):
    def config(self):
        c = self.cluster
        return {
            "node.id": str(self.id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": c.voters,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.cport}",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.dir / "data"),
            "fjord.http.listen": f"127.0.0.1:{self.hport}",
            "cluster.id": c.cluster_id,
            **SHARED,
            **c.extra,
        }

    def spawn_node(self):
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        cmd = [str(self.cluster.fjord_bin), "broker"]
        for k, v in self.config().items():
            cmd += ["--override", f"{k}={v}"]
        header = f"bench: node {self.id} start #{self.starts + 1} at {time.strftime('%H:%M:%S')}"
        self.spawn(cmd, self.dir / "fjord.log", header)
        return self.spawned_ns

    def wait_http_ready(self, deadline):
        while True:
            try:
                if http_status(f"http://127.0.0.1:{self.hport}/ready", timeout=1.0) == 200:
                    return now_ns()
            except (OSError, ValueError):
                pass
            if not self.alive():
                raise RuntimeError(f"fjord node {self.id} exited during start\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fjord node {self.id}: /ready not 200 in time\n{self.log_tail()}")
            time.sleep(0.02)

    def log_files(self):
        return [self.dir / "fjord.log"]


class KafkaNode(Node):
    def __init__(self, cluster, node_id):
        super().__init__(cluster, node_id)
        self.pid_file = self.dir / "pid"  # e2e/kafka/start writes the JVM's pid there

    def settings(self):
        return {**SHARED, **KAFKA_EXTRA, **self.cluster.extra}

    def spawn_node(self):
        """e2e/kafka/start as e2e/kafka/start-cluster calls it (the first start formats the storage)."""
        self.starts += 1
        c = self.cluster
        env = kafka.cluster_env(self.id, c.cluster_id, c.voters, KAFKA_HEAP)
        cmd = kafka.start_command(self.dir, self.port, self.cport, self.settings())
        self.pid_file.unlink(missing_ok=True)
        t0 = now_ns()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"e2e/kafka/start for node {self.id} failed: {(p.stderr or p.stdout)[-1500:]}")
        return t0

    def _after_exit(self):
        self.pid_file.unlink(missing_ok=True)

    def log_files(self):
        return [self.dir / "logs" / "server.log", self.dir / "logs" / "stdout.log"]


class Cluster:
    def __init__(self, system, root, base_port, fjord_bin=None):
        """base_port: this system's own (a client of the previous system's cluster that outlived it
        must not reach this one: a producer's metadata refresh would auto-create its topics)."""
        self.system = system
        self.kind, self.extra, self.scenarios, self.label = SYSTEMS[system]
        self.dir = root / system
        self.base_port = base_port
        self.fjord_bin = fjord_bin
        self.cluster_id = new_cluster_id()
        cls = FjordNode if self.kind == "fjord" else KafkaNode
        self.nodes = [cls(self, i) for i in (1, 2, 3)]
        self.voters = ",".join(f"{n.id}@127.0.0.1:{n.cport}" for n in self.nodes)
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)
        self._admin = None
        session = SESSION_DEFAULTS[self.kind]
        self.session_timeout_ms = int(self.extra.get("broker.session.timeout.ms", session[0]))
        self.heartbeat_ms = int(self.extra.get("broker.heartbeat.interval.ms", session[1]))

    def node(self, node_id):
        return next(n for n in self.nodes if n.id == node_id)

    def settings_text(self):
        s = dict(SHARED)
        if self.kind == "kafka":
            s.update(KAFKA_EXTRA)
            s["JVM heap"] = KAFKA_HEAP
        s.update(self.extra)
        return ", ".join(f"{k}={v}" for k, v in s.items())

    # --- lifecycle -----------------------------------------------------
    def start(self, timeout=240):
        """Start the three nodes together; ready when each answers ApiVersions (Fjord: and /ready is
        200) and Metadata lists all three brokers. Returns seconds."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for n in self.nodes:
            (n.dir / "logs").mkdir(parents=True)
        busy = [p for n in self.nodes for p in (n.port, n.cport, n.hport) if port_in_use(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (another benchmark running? use --port)")
        t0 = time.monotonic()
        deadline = t0 + timeout
        errors = []

        def spawn(n):
            try:
                n.spawn_node()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=spawn, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("; ".join(map(str, errors)))
        for n in self.nodes:
            n.wait_api(deadline)
            n.wait_http_ready(deadline)
        self.wait_brokers({1, 2, 3}, deadline)
        return time.monotonic() - t0

    def stop(self):
        """SIGTERM every node at once; SIGKILL after 3 s (nodes stopping together can't finish a
        controlled shutdown without a quorum, and the data is thrown away)."""
        self.reset_admin()
        threads = [threading.Thread(target=n.terminate, args=(3, True)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def kill_all(self):
        for n in self.nodes:
            try:
                n.kill9(missing_ok=True)
            except OSError:
                pass

    # --- admin views ---------------------------------------------------
    def admin(self):
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            live = ",".join(n.bootstrap for n in self.nodes if n.alive()) or self.bootstrap
            # log_level 2: no "connect failed" noise about nodes that are down on purpose
            self._admin = AdminClient(
                {"bootstrap.servers": live, "socket.timeout.ms": 5000, "reconnect.backoff.max.ms": 500, "log_level": 2}
            )
        return self._admin

    def reset_admin(self):
        """Drop the admin client: librdkafka sends describe_topics to the broker Metadata named
        controller and keeps waiting for it when that node has been killed; a new client asks
        the live nodes."""
        self._admin = None
        gc.collect()

    def wait_brokers(self, want, deadline):
        last = None
        while True:
            try:
                md = self.admin().list_topics(timeout=5)
                if set(md.brokers) == set(want):
                    return
                last = f"Metadata lists brokers {sorted(md.brokers)}"
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.system}: Metadata does not list brokers {sorted(want)}: {last}")
            time.sleep(0.2)

    def describe(self, topics, timeout=5, retry_s=60):
        """{(topic, partition): (leader, replicas, isr)} via AdminClient.describe_topics, retried
        for up to retry_s (a request can time out while a node is down or just restarted)."""
        from confluent_kafka import TopicCollection

        deadline = time.monotonic() + retry_s
        while True:
            try:
                out = {}
                futs = self.admin().describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
                for name, f in futs.items():
                    td = f.result(timeout + 1)
                    for p in td.partitions:
                        out[(name, p.id)] = (
                            p.leader.id if p.leader is not None else -1,
                            [r.id for r in p.replicas],
                            [r.id for r in p.isr],
                        )
                return out
            except Exception:  # noqa: BLE001
                self.reset_admin()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def wait_partitions(self, topics, cond, timeout, what, poll=0.2):
        """Poll describe() until cond(state) holds for every partition; returns ns when it did."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                d = self.describe(topics, retry_s=0)
                bad = [(k, v) for k, v in d.items() if not cond(v)]
                if d and not bad:
                    return now_ns()
                last = f"{len(bad)} of {len(d)} partitions not yet, e.g. {bad[:2]}"
            except Exception as e:  # noqa: BLE001 - transient while nodes come and go
                last = e
                self.reset_admin()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.system}: {what} not reached in {timeout} s: {last}")
            time.sleep(poll)

    def create_topics(self, spec, batch=20, timeout=120):
        """spec: {name: partitions}; RF 3, min.insync.replicas=2; waits for leaders everywhere."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        names = list(spec)
        for i in range(0, len(names), batch):
            nts = [
                NewTopic(t, num_partitions=spec[t], replication_factor=3, config={"min.insync.replicas": "2"})
                for t in names[i : i + batch]
            ]
            for t, f in self.admin().create_topics(nts, operation_timeout=60, request_timeout=90).items():
                try:
                    f.result(timeout)
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    log(f"{self.system}: topic {t} already exists")
        self.wait_partitions(names, lambda v: v[0] >= 0, timeout, "a leader for every partition")

    def wait_full_isr(self, topics, timeout=120):
        self.wait_partitions(topics, lambda v: v[0] >= 0 and sorted(v[2]) == sorted(v[1]), timeout, "full ISRs")

    def active_controller(self):
        """The metadata quorum leader: Fjord's DescribeCluster controller id; for Kafka (which
        answers DescribeCluster with a random broker) DescribeQuorum on a controller listener."""
        try:
            if self.kind == "fjord":
                res = self.admin().describe_cluster(request_timeout=5).result(5)
                return res.controller.id if res.controller is not None else None
            for n in self.nodes:
                if n.alive():
                    try:
                        return kafka.quorum_leader("127.0.0.1", n.cport, timeout=3.0)
                    except (OSError, ValueError, struct.error, ConnectionError):
                        continue
        except Exception:  # noqa: BLE001 - informational only
            return None
        return None

    def restart_node(self, node, timeout=180):
        """Start a stopped node; returns (t0, api_ns, http_ready_ns or None)."""
        t0 = node.spawn_node()
        deadline = time.monotonic() + timeout
        api = node.wait_api(deadline)
        ready = node.wait_http_ready(deadline)
        self.reset_admin()
        return t0, api, ready


# ---------------------------------------------------------------------------
# Scenarios


class ProcSamplers:
    """RSS and CPU of the three broker processes during a scenario (summed over the nodes)."""

    def __init__(self, cluster):
        self.pids = [n.pid for n in cluster.nodes]
        self.samplers = [bench.RssSampler(p) for p in self.pids]
        self.cpu0 = [proc_cpu_s(p) for p in self.pids]

    def finish(self):
        cpu = sum(proc_cpu_s(p) - c for p, c in zip(self.pids, self.cpu0, strict=True))
        peak = sum(s.window_peak_mb() for s in self.samplers)
        for s in self.samplers:
            s.close()
        return dict(cpu_s=round(cpu, 2), peak_rss_mb=round(peak, 1))


def base_row(cl, scenario, partitions=None, since=None, **kw):
    """A result row; since (time.monotonic() at the scenario's start) adds other_cpu_cores: the
    mean number of cores other work used meanwhile (ForeignCpu)."""
    other = FOREIGN.mean_since(since) if FOREIGN and since is not None else None
    return bench.row(
        scenario,
        cl.system,
        partitions,
        nodes=3,
        replication_factor=3,
        min_insync_replicas=2,
        session_timeout_ms=cl.session_timeout_ms,
        heartbeat_interval_ms=cl.heartbeat_ms,
        load_1m=bench.loadavg(),
        other_cpu_cores=other,
        **kw,
    )


def scenario_produce(cl, tools, prof):
    rows = []
    topics = {f"bench-cluster-acksall-p{p}": p for p in PARTITIONS}
    cl.create_topics(topics)
    cl.wait_full_isr(list(topics))
    for p in PARTITIONS:
        n = prof["n_1k"]
        log(f"{cl.system}: cluster-produce-1k-acksall partitions={p} records={n}")
        since = time.monotonic()
        s = ProcSamplers(cl)
        try:
            res = bench.producer_perf(
                tools, cl.bootstrap, f"bench-cluster-acksall-p{p}", n, RECORD, "all", prof["tool_timeout"]
            )
        except Exception as e:  # noqa: BLE001
            s.finish()
            rows.append(
                base_row(
                    cl,
                    "cluster-produce-1k-acksall",
                    p,
                    acks="all",
                    records=n,
                    record_size=RECORD,
                    error=f"{type(e).__name__}: {e}"[:2000],
                )
            )
            continue
        rows.append(
            base_row(
                cl,
                "cluster-produce-1k-acksall",
                p,
                since=since,
                acks="all",
                records=n,
                record_size=RECORD,
                **{k: v for k, v in res.items() if k in bench.FIELDS},
                **s.finish(),
            )
        )
        log(f"{cl.system}: {bench.fmt_row_short(rows[-1])}")
    return rows


class FailoverProducer:
    """BenchTools failover in a JVM: a steady idempotent acks=all producer; reads its progress lines."""

    def __init__(self, tools, cl, rate, ack_file, max_seconds):
        env = dict(os.environ, KAFKA_CLASSPATH=f"{tools.classes}:{tools.cp}", KAFKA_HEAP_OPTS="-Xmx512M")
        self.err_path = ack_file.with_suffix(".stderr")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [
                str(kafka.RUN_CLASS),
                "BenchTools",
                "failover",
                cl.bootstrap,
                FAILOVER_TOPIC,
                str(rate),
                str(RECORD),
                str(ack_file),
                str(max_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            env=env,
        )
        self.ready = None
        self.count, self.last_ack, self.errors = 0, 0, 0
        self.final = None
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            f = line.split()
            with self.cv:
                if f and f[0] == "ready":
                    self.ready = int(f[1])
                elif f and f[0] == "acks" and len(f) == 4:
                    self.count, self.last_ack, self.errors = int(f[1]), int(f[2]), int(f[3])
                elif line.startswith("{"):
                    self.final = json.loads(line)
                self.cv.notify_all()

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not cond():
                if self.proc.poll() is not None and not self.t.is_alive():
                    raise RuntimeError(
                        f"failover producer exited ({self.proc.returncode}) waiting for {what}: "
                        f"{self.err_path.read_text()[-1500:]}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"failover producer: {what} not within {timeout} s")
                self.cv.wait(min(left, 0.1))

    def finish(self, timeout=200):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.t.join(5)
        self.err.close()
        return self.final

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def analyse_kill(acks, t_kill, t_end):
    """Longest gap between consecutive acks from 2 s before the kill to t_end (the restart of the
    killed node), the time from the kill to the ack that ended it, the largest gap in the 2 s
    before the kill (the steady-state baseline) and the time to the very first ack after the kill
    (one already on its way when the leader died can beat the stall)."""
    i0 = bisect.bisect_left(acks, t_kill - 2_000_000_000)
    i1 = bisect.bisect_right(acks, t_end)
    seg = acks[i0:i1]
    best, end, base = 0, None, 0
    for a, b in zip(seg, seg[1:], strict=False):  # consecutive pairs: one fewer than seg
        if b - a > best:
            best, end = b - a, b
        if b <= t_kill:
            base = max(base, b - a)
    if end is None:
        raise RuntimeError("no acks around the kill")
    j = bisect.bisect_right(acks, t_kill)
    first = (acks[j] - t_kill) / 1e6 if j < len(acks) else None
    return best / 1e6, (end - t_kill) / 1e6, base / 1e6, first


def scenario_failover(cl, tools, prof, work):
    rate, runs = prof["failover_rate"], prof["failover_runs"]
    since = time.monotonic()
    cl.create_topics({FAILOVER_TOPIC: 1})
    cl.wait_full_isr([FAILOVER_TOPIC])
    ack_file = work / f"failover-acks-{cl.system}.txt"
    prod = FailoverProducer(tools, cl, rate, ack_file, max_seconds=runs * 150 + 60)
    kills = []
    try:
        prod.wait(lambda: prod.ready is not None, 90, "the first ack")
        time.sleep(2 * prof["failover_settle_s"])
        for r in range(runs):
            leader, _replicas, isr = cl.describe([FAILOVER_TOPIC])[(FAILOVER_TOPIC, 0)]
            ctrl = cl.active_controller()
            node = cl.node(leader)
            with prod.cv:
                c0 = prod.count
            node.note(f"kill -9 (failover run {r + 1}, leader of {FAILOVER_TOPIC}-0)")
            t_kill = now_ns()
            node.kill9(missing_ok=True)
            cl.reset_admin()
            # acks flow again: half a second's worth acknowledged after the kill
            prod.wait(
                lambda c0=c0, t_kill=t_kill: prod.count >= c0 + rate // 2 and prod.last_ack > t_kill,
                120,
                "acks after the kill",
            )
            flowing_ms = ms_since(t_kill)
            new_leader = cl.describe([FAILOVER_TOPIC])[(FAILOVER_TOPIC, 0)][0]
            time.sleep(0.5)
            t_restart = now_ns()
            _t0, api, ready = cl.restart_node(node)
            t_isr = cl.wait_partitions([FAILOVER_TOPIC], lambda v: len(v[2]) == 3, 120, "the ISR back to 3", poll=0.1)
            kills.append(
                dict(
                    run=r + 1,
                    node=leader,
                    was_controller=(ctrl == leader) if ctrl else None,
                    isr_before=isr,
                    new_leader=new_leader,
                    t_kill=t_kill,
                    t_restart=t_restart,
                    restart_api_ms=round((api - t_restart) / 1e6, 1),
                    isr_full_after_restart_ms=round((t_isr - t_restart) / 1e6, 1),
                    flowing_seen_ms=round(flowing_ms, 1),
                )
            )
            log(
                f"{cl.system}: failover run {r + 1}: killed node {leader}"
                f"{' (the active controller)' if ctrl == leader else ''}; acks flowing again within "
                f"{flowing_ms:.0f} ms (new leader {new_leader}); node back in the ISR "
                f"{(t_isr - t_restart) / 1e6:.0f} ms after its restart"
            )
            time.sleep(prof["failover_settle_s"])
    except BaseException:
        prod.kill()
        raise
    final = prod.finish()
    if not final:
        raise RuntimeError(f"failover producer gave no summary: {prod.err_path.read_text()[-1500:]}")
    acks = sorted(int(x) for x in ack_file.read_text().split())
    stalls, recov = [], []
    for k in kills:
        stall, rec, base, first = analyse_kill(acks, k["t_kill"], k["t_restart"])
        k.update(
            stall_ms=round(stall, 1),
            recovery_ms=round(rec, 1),
            baseline_gap_ms=round(base, 1),
            first_ack_after_kill_ms=None if first is None else round(first, 1),
        )
        stalls.append(stall)
        recov.append(rec)
    for k in kills:
        del k["t_kill"], k["t_restart"]
    # kills of a leader that was not also the active controller (no metadata quorum election)
    lo = [k["stall_ms"] for k in kills if k["was_controller"] is False]
    leader_only = round(pct(lo, 50), 1) if lo else None
    return [
        base_row(
            cl,
            "cluster-failover-stall",
            1,
            since=since,
            acks="all",
            record_size=RECORD,
            runs=len(kills),
            rate=rate,
            records=final["acked"],
            delivery_errors=final["errors"],
            first_error=final.get("first_error"),
            sent=final["sent"],
            stall_p50_ms=round(pct(stalls, 50), 1),
            stall_max_ms=round(max(stalls), 1),
            stall_leader_only_p50_ms=leader_only,
            controller_kills=sum(bool(k["was_controller"]) for k in kills),
            recovery_p50_ms=round(pct(recov, 50), 1),
            recovery_max_ms=round(max(recov), 1),
            baseline_gap_max_ms=max(k["baseline_gap_ms"] for k in kills),
            kills=kills,
            error=(f"{final['errors']} records failed: {final.get('first_error')}" if final["errors"] else None),
        )
    ]


def scenario_restart(cl, prof):
    nt, npart = prof["restart_topics"], prof["restart_partitions"]
    topics = [f"bench-restart-{i:03d}" for i in range(nt)]
    log(f"{cl.system}: cluster-restart-1000-partitions: creating {nt} topics x {npart} partitions, RF 3")
    since = time.monotonic()
    t0 = now_ns()
    cl.create_topics({t: npart for t in topics})
    create_ms = ms_since(t0)
    from confluent_kafka import Producer

    errs = []
    pr = Producer({"bootstrap.servers": cl.bootstrap, "acks": "all", "linger.ms": 5, "log_level": 2})
    seed = prof["seed_per_partition"]
    value = b"x" * 100
    for t in topics:
        for p in range(npart):
            for _ in range(seed):
                pr.produce(t, value=value, partition=p, on_delivery=lambda e, m: e and errs.append(e))
        pr.poll(0)
    left = pr.flush(120)
    del pr
    gc.collect()
    if left or errs:
        raise RuntimeError(f"seeding {nt * npart} partitions: {left} unsent, {len(errs)} failed ({errs[:1]})")
    seeded_ms = ms_since(t0)
    cl.wait_full_isr(topics, timeout=180)
    log(
        f"{cl.system}: {nt * npart} partitions created in {create_ms:.0f} ms, {seed} records each after "
        f"{seeded_ms:.0f} ms, ISRs full after {ms_since(t0):.0f} ms"
    )
    time.sleep(prof["failover_settle_s"])
    runs = []
    for r in range(prof["restart_runs"]):
        ctrl = cl.active_controller()
        others = [n for n in cl.nodes if n.id != ctrl]
        node = others[r % len(others)]
        node.note(f"SIGTERM (restart run {r + 1})")
        shutdown_ms = node.terminate(120)
        cl.reset_admin()
        me = node.id
        # how many of its partitions the stopped node had left the ISR of (0 would make "back in
        # every ISR" trivial)
        try:
            out_of_isr = sum(1 for v in cl.describe(topics, retry_s=10).values() if me in v[1] and me not in v[2])
        except Exception:  # noqa: BLE001 - informational
            out_of_isr = None
        t0, api, http_ready = cl.restart_node(node)
        t_isr = cl.wait_partitions(
            topics,
            lambda v, me=me: me not in v[1] or me in v[2],
            300,
            f"node {me} in the ISR of all {nt * npart} partitions",
            poll=0.1,
        )
        run = dict(
            run=r + 1,
            node=me,
            active_controller=ctrl,
            out_of_isr_when_stopped=out_of_isr,
            shutdown_ms=None if shutdown_ms is None else round(shutdown_ms, 1),
            api_versions_ms=round((api - t0) / 1e6, 1),
            http_ready_ms=None if http_ready is None else round((http_ready - t0) / 1e6, 1),
            ready_ms=round((t_isr - t0) / 1e6, 1),
        )
        runs.append(run)
        log(
            f"{cl.system}: restart run {r + 1}: node {me} (controller: {ctrl}) stopped in {run['shutdown_ms']} ms; "
            f"ApiVersions after {run['api_versions_ms']} ms, "
            + (f"/ready after {run['http_ready_ms']} ms, " if http_ready else "")
            + f"in every ISR after {run['ready_ms']} ms (it was out of {out_of_isr} ISRs when stopped)"
        )
        if r + 1 < prof["restart_runs"]:
            time.sleep(2)

    def agg(key, fn):
        v = [x[key] for x in runs if x[key] is not None]
        return round(fn(v), 1) if v else None

    return [
        base_row(
            cl,
            "cluster-restart-1000-partitions",
            None,
            since=since,
            partitions_total=nt * npart,
            topics=nt,
            records=nt * npart * seed,
            runs=len(runs),
            create_ms=round(create_ms, 1),
            ready_p50_ms=agg("ready_ms", statistics.median),
            ready_max_ms=agg("ready_ms", max),
            http_ready_p50_ms=agg("http_ready_ms", statistics.median),
            http_ready_max_ms=agg("http_ready_ms", max),
            api_versions_p50_ms=agg("api_versions_ms", statistics.median),
            shutdown_p50_ms=agg("shutdown_ms", statistics.median),
            shutdown_max_ms=agg("shutdown_ms", max),
            restarts=runs,
        )
    ]


# ---------------------------------------------------------------------------
# One system

LOG_LINE = re.compile(r"^\S+\s+(WARN|ERROR)\s+(.*)$")


def scan_fjord_logs(cl):
    """WARN/ERROR lines and panics in the Fjord nodes' logs, grouped with digits blanked."""
    groups = collections.Counter()
    example = {}
    counts = collections.Counter()
    for n in cl.nodes:
        try:
            text = (n.dir / "fjord.log").read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if m:
                level, msg = m.groups()
            elif "panicked" in line or line.startswith("fjord: error"):
                level, msg = "PANIC", line
            else:
                continue
            counts[level] += 1
            key = (level, re.sub(r"\d+", "N", msg)[:160])
            groups[key] += 1
            example.setdefault(key, f"n{n.id}: {line[:300]}")
    return counts, [(lvl, c, example[(lvl, k)]) for (lvl, k), c in groups.most_common()]


def keep_logs(cl, out_dir):
    dest = out_dir / "cluster-logs" / cl.system
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for n in cl.nodes:
        for f in n.log_files():
            if f.exists():
                shutil.copy(f, dest / f"n{n.id}-{f.name}")
    return dest


def run_system(cl, tools, prof, work):
    rows = []
    log(f"{cl.system}: starting 3 nodes ({cl.label})")
    secs = cl.start()
    log(f"{cl.system}: cluster ready in {secs:.1f} s (bootstrap {cl.bootstrap})")
    cl.start_seconds = secs

    def guarded(kind, fn):
        try:
            rows.extend(fn())
        except Exception as e:  # noqa: BLE001 - an error row; go on with the next scenario
            log(f"{cl.system}: {kind} FAILED: {type(e).__name__}: {e}")
            have = {(r["scenario"], r["partitions"]) for r in rows}
            for scn, p in SCENARIO_ROWS[kind]:
                if (scn, p) not in have:
                    rows.append(base_row(cl, scn, p, error=f"{type(e).__name__}: {e}"[:2000]))
            dead = [n.id for n in cl.nodes if not n.alive()]
            for n in cl.nodes:  # a node down (killed by the scenario or crashed): bring it back
                if not n.alive():
                    log(f"{cl.system}: node {n.id} is down after {kind}; starting it again")
                    cl.restart_node(n)
            if dead:
                cl.wait_brokers({1, 2, 3}, time.monotonic() + 120)

    if "produce" in cl.scenarios:
        guarded("produce", lambda: scenario_produce(cl, tools, prof))
    if "failover" in cl.scenarios:
        log(
            f"{cl.system}: cluster-failover-stall: {prof['failover_runs']} kills under "
            f"{prof['failover_rate']} records/s (session timeout {cl.session_timeout_ms} ms)"
        )
        guarded("failover", lambda: scenario_failover(cl, tools, prof, work))
    if "restart" in cl.scenarios:
        guarded("restart", lambda: scenario_restart(cl, prof))
    return rows


# ---------------------------------------------------------------------------
# Reporting


def f1(v, d=0):
    if v is None:
        return "-"
    return f"{v:,.{d}f}"


def add_ratios(rows):
    """vs_kafka on every non-Kafka row; the Fjord failover row also gets vs_kafka_session2500."""

    def index(system):
        return {(r["scenario"], r["partitions"]): r for r in rows if r["system"] == system and not r.get("error")}

    bases = {"kafka": index("kafka"), "kafka_session2500": index("kafka-session2500")}
    for r in rows:
        if r["system"] == "kafka" or r.get("error"):
            continue
        for key, base in bases.items():
            if r["system"] == "kafka-session2500" and key != "kafka":
                continue
            k = base.get((r["scenario"], r["partitions"]))
            if not k:
                continue
            r[f"vs_{key}"] = {
                f: round(r[f] / k[f], 3) for f in RATIO_FIELDS if r.get(f) is not None and k.get(f) not in (None, 0)
            }


def report(rows, prof_name, elapsed, loads, clusters):
    out = []
    p = out.append
    p("")
    p(
        f"Fjord cluster benchmark, profile {prof_name}, {elapsed:.0f} s; 3 nodes each (broker+controller), "
        "RF 3, min.insync.replicas 2; 1-min load average "
        f"{loads[0]} at the start, max {max(x for x in loads if x is not None)} sampled, {loads[-1]} at the end; "
        f"other work took {FOREIGN.mean_since(0)} cores on average, {FOREIGN.max_since(0)} at most "
        "(CPU outside the benchmark's processes, per 2 s; above ~0.2 the figures are disturbed)"
    )
    for cl in clusters:
        p(f"  {cl.system}: {cl.label}; cluster start {getattr(cl, 'start_seconds', 0):.1f} s")
    body = []
    for r in rows:
        if r["scenario"] != "cluster-produce-1k-acksall":
            continue
        if r.get("error"):
            body.append([r["scenario"], str(r["partitions"]), r["system"], "ERROR"] + ["-"] * 7)
            continue
        body.append(
            [
                r["scenario"],
                str(r["partitions"]),
                r["system"],
                f1(r["records_per_sec"]),
                f1(r["mb_per_sec"], 1),
                f1(r["p50_ms"], 1),
                f1(r["p99_ms"], 1),
                f1(r["p999_ms"], 1),
                f1(r["cpu_s"], 1),
                f1(r["peak_rss_mb"]),
                f1(r["other_cpu_cores"], 2),
            ]
        )
    p("")
    p(
        f"cluster-produce-1k-acksall: Kafka's ProducerPerformance, {prof_name} {PROFILES[prof_name]['n_1k']:,} "
        "records of 1 KiB, acks=all, unthrottled; CPU and peak RSS summed over the 3 nodes"
    )
    p(
        bench.text_table(
            [
                "scenario",
                "parts",
                "system",
                "records/s",
                "MB/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "CPU s",
                "peak RSS MB",
                "other cores",
            ],
            body,
        )
    )
    body = []
    for r in rows:
        if r["scenario"] != "cluster-failover-stall":
            continue
        if r.get("error") and r.get("stall_p50_ms") is None:
            body.append([r["scenario"], "1", r["system"], "ERROR"] + ["-"] * 10)
            continue
        killed = " ".join(f"{k['node']}{'*' if k['was_controller'] else ''}" for k in r["kills"])
        body.append(
            [
                r["scenario"],
                "1",
                r["system"],
                f"{r['session_timeout_ms']}/{r['heartbeat_interval_ms']}",
                str(r["runs"]),
                f1(r["stall_p50_ms"]),
                f1(r["stall_max_ms"]),
                f1(r.get("stall_leader_only_p50_ms")),
                f1(r["recovery_p50_ms"]),
                f1(r["recovery_max_ms"]),
                f1(r["baseline_gap_max_ms"]),
                killed,
                str(r["delivery_errors"]),
                f1(r["other_cpu_cores"], 2),
            ]
        )
    p("")
    p(
        f"cluster-failover-stall: idempotent acks=all producer (Java client defaults otherwise), "
        f"{PROFILES[prof_name]['failover_rate']} records/s of 1 KiB, 1 partition RF 3; kill -9 of its leader, "
        "restart, ISR full again, repeat. stall = longest gap between consecutive acks around the kill; "
        "kill->ack = kill to the ack ending that gap; baseline = largest gap in the 2 s before a kill; "
        "killed: node ids, * = it was also the active controller (a metadata quorum election too); "
        "p50 not ctrl = stall p50 of the other kills"
    )
    p(
        bench.text_table(
            [
                "scenario",
                "parts",
                "system",
                "session/hb ms",
                "runs",
                "stall p50",
                "stall max",
                "p50 not ctrl",
                "kill->ack p50",
                "kill->ack max",
                "baseline",
                "killed",
                "errors",
                "other cores",
            ],
            body,
        )
    )
    body = []
    for r in rows:
        if r["scenario"] != "cluster-restart-1000-partitions":
            continue
        if r.get("error") and r.get("ready_p50_ms") is None:
            body.append([r["scenario"], "-", r["system"], "ERROR"] + ["-"] * 7)
            continue
        body.append(
            [
                r["scenario"],
                str(r["partitions_total"]),
                r["system"],
                str(r["runs"]),
                f1(r["ready_p50_ms"]),
                f1(r["ready_max_ms"]),
                f1(r["http_ready_p50_ms"]),
                f1(r["api_versions_p50_ms"]),
                f1(r["shutdown_p50_ms"]),
                f1(r["create_ms"]),
                f1(r["other_cpu_cores"], 2),
            ]
        )
    p("")
    p(
        "cluster-restart-1000-partitions: SIGTERM one node (not the active controller), start it again; "
        "ready = process start -> the node is in the ISR of every partition it hosts (AdminClient "
        "describe_topics every 100 ms); Fjord's /ready separately; shutdown = SIGTERM -> exit"
    )
    p(
        bench.text_table(
            [
                "scenario",
                "parts",
                "system",
                "runs",
                "ready p50 ms",
                "ready max ms",
                "/ready p50 ms",
                "ApiVersions ms",
                "shutdown ms",
                "create ms",
                "other cores",
            ],
            body,
        )
    )
    rr = []
    show = {
        "cluster-produce-1k-acksall": ["records_per_sec", "mb_per_sec", "p50_ms", "p99_ms", "cpu_s", "peak_rss_mb"],
        "cluster-failover-stall": [
            "stall_p50_ms",
            "stall_max_ms",
            "stall_leader_only_p50_ms",
            "recovery_p50_ms",
            "recovery_max_ms",
        ],
        "cluster-restart-1000-partitions": ["ready_p50_ms", "ready_max_ms", "api_versions_p50_ms", "shutdown_p50_ms"],
    }
    for r in rows:
        for key, peer in (("vs_kafka", "kafka"), ("vs_kafka_session2500", "kafka-session2500")):
            v = r.get(key)
            if v:
                rr.append(
                    [
                        r["scenario"],
                        str(r["partitions"] or "-"),
                        f"{r['system']}/{peer}",
                        ", ".join(f"{k} {v[k]:.2f}x" for k in show[r["scenario"]] if k in v),
                    ]
                )
    if rr:
        p("")
        p("Ratios (above 1 means more: better for records/s and MB/s, worse for latency, stall, time, CPU, RSS)")
        p(bench.text_table(["scenario", "parts", "ratio", "figures"], rr))
    errs = [r for r in rows if r.get("error")]
    if errs:
        p("")
        p("Errors:")
        for r in errs:
            p(f"  {r['system']} {r['scenario']} p={r['partitions']}: {r['error'].splitlines()[0][:300]}")
    return "\n".join(out)


def merge_results(path, rows):
    """Replace the cluster-* rows of an existing results.json, keep the other rows."""
    old = []
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, list):
            old = []
    except (OSError, ValueError):
        pass
    keep = [r for r in old if not str(r.get("scenario", "")).startswith("cluster-")]
    path.write_text(json.dumps(keep + rows, indent=1) + "\n")


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="Fjord vs Apache Kafka on 3-node clusters (e2e/bench/run --cluster)")
    ap.add_argument("--quick", action="store_true", help="small counts, 1 kill, 1 restart: ~3 minutes")
    ap.add_argument(
        "--systems",
        default=None,
        help="comma-separated: kafka, kafka-session2500, fjord (default: all three; --quick: kafka,fjord)",
    )
    ap.add_argument("--fjord-bin", default=str(ROOT / "target" / "release" / "fjord"))
    ap.add_argument(
        "--port",
        type=int,
        default=27192,
        help="node i: Kafka protocol PORT+i-1, controller PORT+100+i-1, Fjord HTTP PORT+200+i-1; "
        "kafka-session2500 adds 10, fjord 20",
    )
    ap.add_argument("--data-dir", default=str(ROOT / "target" / "bench" / "cluster-data"))
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "results.json"))
    ap.add_argument("--failover-runs", type=int, help="kills per system (default 5; --quick 1)")
    ap.add_argument("--restart-runs", type=int, help="restarts per system (default 3; --quick 1)")
    ap.add_argument("--keep-data", action="store_true", help="keep the nodes' data directories")
    ap.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated subset of produce, failover, restart (default: each system's own)",
    )
    a = ap.parse_args()

    prof_name = "quick" if a.quick else "default"
    prof = dict(PROFILES[prof_name])
    if a.failover_runs:
        prof["failover_runs"] = a.failover_runs
    if a.restart_runs:
        prof["restart_runs"] = a.restart_runs
    names = [s.strip() for s in (a.systems or prof["systems"]).split(",") if s.strip()]
    for n in names:
        if n not in SYSTEMS:
            ap.error(f"unknown system {n!r} ({', '.join(SYSTEMS)})")
    data = Path(a.data_dir).resolve()
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    fjord_bin = None
    if "fjord" in names:
        src = Path(a.fjord_bin)
        if not os.access(src, os.X_OK):
            ap.error(f"fjord binary not found: {src} (cargo build --release -p fjord)")
        # a private copy: a rebuild of target/release/fjord during the run must not change the
        # binary a restarted node runs
        fjord_bin = data / "fjord-bin"
        shutil.copy2(src, fjord_bin)

    tools = bench.Tools(out.parent)
    tools.compile()

    global FOREIGN
    FOREIGN = ForeignCpu(str(data))
    loads = [bench.loadavg()]
    stop_load = threading.Event()

    def sample_load():
        while not stop_load.wait(5):
            loads.append(bench.loadavg())

    threading.Thread(target=sample_load, daemon=True).start()

    rows, clusters, log_notes = [], [], []
    for name in names:
        cl = Cluster(name, data, a.port + 10 * list(SYSTEMS).index(name), fjord_bin)
        if a.scenarios:
            cl.scenarios = tuple(k for k in cl.scenarios if k in a.scenarios.split(","))
        clusters.append(cl)
        try:
            rows += run_system(cl, tools, prof, data)
        except Exception as e:  # noqa: BLE001 - the cluster did not start (or broke): error rows
            log(f"{name}: FAILED: {type(e).__name__}: {e}")
            have = {(r["scenario"], r["partitions"]) for r in rows if r["system"] == name}
            for kind in cl.scenarios:
                for scn, p in SCENARIO_ROWS[kind]:
                    if (scn, p) not in have:
                        rows.append(base_row(cl, scn, p, error=f"{type(e).__name__}: {e}"[:2000]))
        except BaseException:
            cl.kill_all()
            raise
        finally:
            t_stop = time.monotonic()
            try:
                cl.stop()
            finally:
                cl.kill_all()
            log(f"{name}: stopped in {time.monotonic() - t_stop:.1f} s")
            dest = keep_logs(cl, out.parent)
            if cl.kind == "fjord":
                counts, groups = scan_fjord_logs(cl)
                log_notes.append((cl, dest, counts, groups))
            if not a.keep_data:
                shutil.rmtree(cl.dir, ignore_errors=True)
    stop_load.set()
    FOREIGN.close()
    loads.append(bench.loadavg())
    if not a.keep_data:
        if fjord_bin:
            fjord_bin.unlink(missing_ok=True)
        for f in data.glob("failover-acks-*"):
            f.unlink()

    for r in rows:
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 3)
        r["profile"] = f"cluster-{prof_name}"
    add_ratios(rows)
    merge_results(out, rows)
    elapsed = time.monotonic() - t_start
    print(report(rows, prof_name, elapsed, loads, clusters))
    for cl, dest, counts, groups in log_notes:
        print(
            f"\n{cl.system} node logs ({bench.scrub(dest)}): "
            + (", ".join(f"{c} {lvl}" for lvl, c in sorted(counts.items())) or "no WARN/ERROR lines")
        )
        for _lvl, c, ex in groups[:15]:
            print(f"  {c:5d} x {ex}")
    print(f"\nresults: {out}")

    bad = []
    for cl in clusters:
        have = {(r["scenario"], r["partitions"]): r for r in rows if r["system"] == cl.system}
        for kind in cl.scenarios:
            for scn, p in SCENARIO_ROWS[kind]:
                r = have.get((scn, p))
                if r is None:
                    bad.append(f"{cl.system} {scn} p={p}: missing")
                elif r.get("error"):
                    bad.append(f"{cl.system} {scn} p={p}: {r['error'].splitlines()[0][:200]}")
    if bad:
        print(f"\n{len(bad)} cluster row(s) missing or failed:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    print(f"all cluster rows present for {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
