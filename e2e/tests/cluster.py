"""Multi-node clusters for the replication tests and the checker (e2e/checker).

    factory = ClusterFactory(tmp_root, label)           # target from FJORD_TEST_TARGET
    cluster = factory.start(n=3, overrides={...})       # or start(n=4, voters=3)
    cluster.bootstrap                                   # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    node = cluster.node(2)                              # 1-based ids; cluster.nodes is the list
    node.kill9(); node.restart(); node.sigstop(); node.sigcont(); node.stop(); node.alive()
    factory.close()                                     # SIGKILLs every node; returns the nodes
                                                        # that died although they should be running

Fjord node i runs `fjord broker --override k=v ...` with node.id=i, process.roles=broker,controller
(broker only for ids above the number of voters, still with a CONTROLLER listener of its own),
controller.quorum.voters for the voters, listeners=PLAINTEXT://127.0.0.1:Ki,CONTROLLER://127.0.0.1:Ci,
controller.listener.names=CONTROLLER, cluster.id (one random id for the cluster), log.dirs,
fjord.http.listen=127.0.0.1:Hi, replication defaults (RF 3, min ISR 2) and the caller's overrides.
It is ready when ApiVersions answers and GET /ready returns 200.
Kafka node i is started like e2e/kafka/start-cluster does it (KAFKA_NODE_ID, KAFKA_CLUSTER_ID,
KAFKA_QUORUM_VOTERS, e2e/kafka/start, -Xmx512M) with the same overrides.
Nodes are started concurrently (they need each other for the quorum); a cluster is ready when
every node is ready and Metadata lists all n brokers.

No pytest dependency: conftest.py wraps this in the `cluster_factory` fixture and the checker
uses it directly.
"""

import base64
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent.parent

import kproto  # noqa: E402

TARGET = os.environ.get("FJORD_TEST_TARGET", "fjord").strip().lower()

# Every node of every cluster, whatever the target.
COMMON_DEFAULTS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "group.initial.rebalance.delay.ms": "0",
}
# Kafka only (what e2e/kafka/start-cluster sets besides the above; Fjord rejects unknown keys).
KAFKA_EXTRA_DEFAULTS = {
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
}
KAFKA_HEAP = "-Xmx512M -Xms512M"


class ClusterStartError(AssertionError):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_state(pid):
    """The process state letter from /proc (R, S, T, Z, ...) or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError, OSError):
        return None


def pid_alive(pid):
    st = pid_state(pid)
    return st is not None and st not in ("Z", "X")


def http_status(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def http_text(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


def new_cluster_id():
    """22-character base64url id (16 random bytes), like `kafka-storage random-uuid`, which
    never starts with '-' either (command-line tools would take it for an option)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _admin(bootstrap, **conf):
    from confluent_kafka.admin import AdminClient

    # log_level 2: no "Connect ... failed" noise for nodes that are down on purpose.
    cfg = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "reconnect.backoff.max.ms": 1000, "log_level": 2}
    cfg.update(conf)
    return AdminClient(cfg)


# ---------------------------------------------------------------------------
# Nodes


class Node:
    """One broker (and, for voters, controller) process of a cluster."""

    target = None

    def __init__(self, cluster, node_id, root, ports, voter):
        self.cluster = cluster
        self.id = node_id
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        self.host = "127.0.0.1"
        self.port, self.controller_port, self.http_port = ports
        self.bootstrap = f"{self.host}:{self.port}"
        self.voter = voter
        self.metrics_url = None
        self.http_base = None
        self.expect_running = False
        self.paused = False
        self.starts = 0

    # --- lifecycle -----------------------------------------------------
    def start(self, timeout=120, wait_registered=True):
        """Start this node alone (the rest of the cluster is up) and wait until it is ready
        and Metadata (asked of this node) lists it."""
        self._spawn()
        deadline = time.monotonic() + timeout
        self._wait_ready(deadline)
        if wait_registered:
            self.wait_registered(deadline)
        return self

    def restart(self, timeout=120):
        """Start again on the same data dir and ports (stopping it first if it runs)."""
        if self.alive():
            self.stop()
        return self.start(timeout)

    def kill9(self):
        """SIGKILL (continuing a stopped process is not needed: SIGKILL ends it anyway)."""
        pid = self.pid
        assert pid is not None and self.alive(), f"kill9: node {self.id} is not running"
        self.expect_running = False
        os.kill(pid, signal.SIGKILL)
        self.paused = False
        self._reap(pid, 30)
        self._after_exit()

    def stop(self, timeout=30):
        """SIGTERM and wait (SIGKILL after timeout s). Returns 'killed' if it had to be killed."""
        self.expect_running = False
        pid = self.pid
        if pid is None or not self.alive():
            self._after_exit()
            return None
        if self.paused:
            self.sigcont()
        os.kill(pid, signal.SIGTERM)
        try:
            self._reap(pid, timeout)
            res = 0
        except AssertionError:
            self._log_note(f"no exit {timeout}s after SIGTERM, sending SIGKILL")
            os.kill(pid, signal.SIGKILL)
            self._reap(pid, 30)
            res = "killed"
        self._after_exit()
        return res

    def sigstop(self):
        pid = self.pid
        assert pid is not None and self.alive(), f"sigstop: node {self.id} is not running"
        os.kill(pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 5
        while pid_state(pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.01)

    def sigcont(self):
        pid = self.pid
        assert pid is not None, f"sigcont: node {self.id} has no process"
        os.kill(pid, signal.SIGCONT)
        self.paused = False

    def alive(self):
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def _reap(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.id} pid {pid} still alive {timeout}s after the signal")
            time.sleep(0.02)

    def _after_exit(self):
        pass

    def _log_note(self, text):
        pass

    # --- readiness -----------------------------------------------------
    def wait_registered(self, deadline):
        """Metadata asked of this node lists this node."""
        a = _admin(self.bootstrap)
        last = None
        while True:
            if not self.alive():
                raise ClusterStartError(
                    f"node {self.id} exited while waiting to be listed in Metadata\n{self.log_tail()}"
                )
            try:
                md = a.list_topics(timeout=5)
                if self.id in md.brokers:
                    return
                last = f"Metadata lists brokers {sorted(md.brokers)}"
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"node {self.id} ({self.bootstrap}) not listed in Metadata in time: {last}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    # --- logs ----------------------------------------------------------
    def log_tail(self, lines=40):
        return kproto.log_tail(self.log_files(), lines, f"node {self.id}")

    def __repr__(self):
        return f"<{self.target} node {self.id} {self.bootstrap} pid={self.pid}>"


class FjordNode(Node):
    target = "fjord"

    def __init__(self, cluster, node_id, root, ports, voter):
        super().__init__(cluster, node_id, root, ports, voter)
        self.binary = cluster.fjord_bin
        self.http_base = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"{self.http_base}/metrics"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "broker.log"
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def config(self):
        c = self.cluster
        cfg = {
            "node.id": str(self.id),
            "process.roles": "broker,controller" if self.voter else "broker",
            "controller.quorum.voters": c.quorum_voters,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "cluster.id": c.cluster_id,
            "log.dirs": str(self.data_dir),
            "fjord.http.listen": f"127.0.0.1:{self.http_port}",
        }
        cfg.update(COMMON_DEFAULTS)
        cfg.update(c.overrides)
        return cfg

    def command(self):
        cmd = [self.binary, "broker"]
        for k, v in self.config().items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def _spawn(self):
        self.starts += 1
        cmd = self.command()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab") as log:
            log.write(
                f"\n===== e2e: node {self.id} start #{self.starts} at {time.strftime('%H:%M:%S')}: "
                f"{' '.join(cmd)}\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        (self.root / "pid").write_text(f"{self.proc.pid}\n")  # for the watchdog
        self.expect_running = True
        self.paused = False

    def _wait_ready(self, deadline):
        kproto.wait_fjord_ready(
            self.proc,
            self.host,
            self.port,
            http_status,
            self.http_base + "/ready",
            deadline,
            f"fjord node {self.id}",
            self.log_tail,
            ClusterStartError,
        )

    def kill9(self):
        assert self.alive(), f"kill9: node {self.id} is not running"
        self.expect_running = False
        self.proc.kill()
        self.proc.wait(30)
        self.paused = False

    def _log_note(self, text):
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== e2e: node {self.id}: {text}\n".encode())

    def stop(self, timeout=30):
        res = super().stop(timeout)
        if self.proc is not None:
            self.proc.wait(30)
        return res

    def metrics(self, timeout=5.0):
        """Parsed /metrics: [(name, labels, value)]."""
        from kclients import parse_prometheus

        return parse_prometheus(http_text(self.metrics_url, timeout))

    def log_files(self):
        return [self.log_path]


class KafkaNode(Node):
    target = "kafka"

    def __init__(self, cluster, node_id, root, ports, voter):
        super().__init__(cluster, node_id, root, ports, voter)
        self.start_script = REPO / "e2e" / "kafka" / "start"
        self._start_proc = None

    @property
    def pid(self):
        try:
            return int((self.root / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def config(self):
        cfg = dict(COMMON_DEFAULTS)
        cfg.update(KAFKA_EXTRA_DEFAULTS)
        if not self.voter:
            # A Kafka broker-only node must not listen on a controller listener.
            cfg["process.roles"] = "broker"
            cfg["listeners"] = f"PLAINTEXT://{self.bootstrap}"
        cfg.update(self.cluster.overrides)
        return cfg

    def _spawn(self):
        self.starts += 1
        cmd = [str(self.start_script), str(self.root), str(self.port), str(self.controller_port)]
        cmd += [f"{k}={v}" for k, v in self.config().items()]
        env = dict(os.environ)
        env.update(
            KAFKA_NODE_ID=str(self.id),
            KAFKA_CLUSTER_ID=self.cluster.cluster_id,
            KAFKA_QUORUM_VOTERS=self.cluster.quorum_voters,
            KAFKA_START_NOWAIT="1",
            KAFKA_HEAP_OPTS=os.environ.get("FJORD_TEST_KAFKA_HEAP", KAFKA_HEAP),
        )
        (self.root / "pid").unlink(missing_ok=True)
        # The script formats the storage (a JVM of its own) and starts Kafka in the background.
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        if p.returncode != 0:
            raise ClusterStartError(
                f"e2e/kafka/start for node {self.id} failed ({p.returncode}):\n"
                f"{p.stdout}\n{p.stderr}\n{self.log_tail()}"
            )
        self.expect_running = True
        self.paused = False

    def _wait_ready(self, deadline):
        last = None
        while True:
            if not self.alive():
                raise ClusterStartError(f"kafka node {self.id} exited during start\n{self.log_tail()}")
            try:
                kproto.api_versions_probe(self.host, self.port, timeout=1.0)
                return
            except (OSError, ValueError, ConnectionError) as e:
                last = e
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"kafka node {self.id} does not answer ApiVersions in time ({last})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _after_exit(self):
        # The JVM is gone (perhaps a zombie until reaped, which `kill -0` in e2e/kafka/start
        # would take for alive): drop the pid file.
        (self.root / "pid").unlink(missing_ok=True)

    def _log_note(self, text):
        try:
            with open(self.root / "logs" / "stdout.log", "ab") as log:
                log.write(f"\n===== e2e: node {self.id}: {text}\n".encode())
        except OSError:
            pass

    def log_files(self):
        return [self.root / "logs" / "stdout.log", self.root / "logs" / "server.log"]


NODE_CLASSES = {"fjord": FjordNode, "kafka": KafkaNode}


def kafka_quorum_leader(host, controller_port, timeout=5.0):
    """The KRaft quorum leader id from a DescribeQuorum v0 request sent to a controller listener
    (what `MetadataQuorumCommand --bootstrap-controller ... describe --status` does, without a JVM)."""
    body = (
        kproto.uvarint(2)
        + kproto.compact_string("__cluster_metadata")
        + kproto.uvarint(2)
        + struct.pack(">i", 0)
        + kproto.uvarint(0)  # partition 0, no tags
        + kproto.uvarint(0)  # topic tags
        + kproto.uvarint(0)
    )  # request tags
    cid = 0x51D
    with kproto.RawConn(host, controller_port, timeout) as conn:
        resp = conn.request(kproto.header_v2(55, 0, cid) + body, timeout)
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return vals

    def uvarint():
        nonlocal pos
        shift = n = 0
        while True:
            b = resp[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    (got_cid,) = take(">i")
    if got_cid != cid:
        raise ValueError(f"DescribeQuorum: correlation id {got_cid} != {cid}")
    if uvarint() != 0:
        raise ValueError("DescribeQuorum: unexpected tagged fields in the response header")
    (err,) = take(">h")
    if err != 0:
        raise ValueError(f"DescribeQuorum: error_code {err}")
    if uvarint() != 2:
        raise ValueError("DescribeQuorum: expected one topic")
    name_len = uvarint() - 1  # (read before `pos +=` takes pos)
    pos += name_len
    if uvarint() != 2:
        raise ValueError("DescribeQuorum: expected one partition")
    _pidx, perr, leader = take(">ihi")
    if perr != 0 or leader < 0:
        raise ValueError(f"DescribeQuorum: partition error_code {perr}, leader {leader}")
    return leader


# ---------------------------------------------------------------------------
# Cluster


class Cluster:
    def __init__(self, root, n, voters, overrides, target):
        self.root = Path(root)
        self.target = target
        self.overrides = {k: str(v) for k, v in (overrides or {}).items()}
        self.cluster_id = new_cluster_id()
        self.n_voters = voters
        if target == "fjord":
            self.fjord_bin = os.environ.get("FJORD_BIN") or str(REPO / "target" / "release" / "fjord")
            if not (Path(self.fjord_bin).is_file() and os.access(self.fjord_bin, os.X_OK)):
                raise ClusterStartError(
                    f"fjord binary {self.fjord_bin} not found: build it with "
                    "`cargo build --release -p fjord` or set FJORD_BIN"
                )
        ports = free_ports(3 * n)
        self.nodes = []
        for i in range(1, n + 1):
            node_ports = ports[3 * (i - 1) : 3 * i]
            self.nodes.append(NODE_CLASSES[target](self, i, self.root / f"n{i}", node_ports, i <= voters))
        self.quorum_voters = ",".join(f"{nd.id}@127.0.0.1:{nd.controller_port}" for nd in self.nodes if nd.voter)
        self.bootstrap = ",".join(nd.bootstrap for nd in self.nodes)

    def node(self, node_id):
        for nd in self.nodes:
            if nd.id == node_id:
                return nd
        raise KeyError(f"no node {node_id} in {[nd.id for nd in self.nodes]}")

    @property
    def ids(self):
        return [nd.id for nd in self.nodes]

    # --- start ---------------------------------------------------------
    def start(self, timeout=180):
        """Start every node concurrently; wait until each is ready and Metadata lists all."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        errors = []

        def spawn(nd):
            try:
                nd._spawn()
            except Exception as e:  # noqa: BLE001 - collected below
                errors.append(e)

        threads = [threading.Thread(target=spawn, args=(nd,)) for nd in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise ClusterStartError("; ".join(map(str, errors)))
        for nd in self.nodes:
            nd._wait_ready(deadline)
        self.wait_brokers(self.ids, timeout=max(5.0, deadline - time.monotonic()))
        self.start_seconds = time.monotonic() - t0
        return self

    # --- views ---------------------------------------------------------
    def running(self):
        """Nodes alive and not stopped with SIGSTOP."""
        return [nd for nd in self.nodes if nd.alive() and not nd.paused]

    def live_bootstrap(self, exclude=()):
        nodes = [nd for nd in self.running() if nd.id not in exclude]
        return ",".join(nd.bootstrap for nd in nodes) or self.bootstrap

    def admin(self, exclude=()):
        return _admin(self.live_bootstrap(exclude))

    def metadata(self, topic=None, timeout=10, exclude=()):
        return self.admin(exclude).list_topics(topic=topic, timeout=timeout)

    def wait_brokers(self, ids, timeout=60, exclude=()):
        """Wait until Metadata lists exactly the brokers `ids`."""
        want = set(ids)
        last = None
        deadline = time.monotonic() + timeout
        while True:
            for nd in self.nodes:
                if nd.expect_running and not nd.alive():
                    raise ClusterStartError(
                        f"node {nd.id} died while waiting for brokers {sorted(want)}\n{nd.log_tail()}"
                    )
            try:
                md = self.metadata(timeout=5, exclude=exclude)
                if set(md.brokers) == want:
                    return md
                last = f"Metadata lists brokers {sorted(md.brokers)}"
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"Metadata did not list brokers {sorted(want)} within {timeout:.0f}s: "
                    f"{last}\n" + "\n".join(nd.log_tail(15) for nd in self.nodes)
                )
            time.sleep(0.25)

    def partition(self, topic, partition, exclude=()):
        """(leader, replicas, isr) of a partition from Metadata (leader -1 when none)."""
        md = self.metadata(topic, timeout=5, exclude=exclude)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise AssertionError(f"topic {topic} not in Metadata: {t.error if t else 'missing'}")
        p = t.partitions[partition]
        return p.leader, list(p.replicas), list(p.isrs)

    def leader(self, topic, partition, exclude=()):
        return self.partition(topic, partition, exclude)[0]

    def wait_partition(self, topic, partition, cond, timeout=60, what="partition state", exclude=()):
        """Poll (leader, replicas, isr) until cond(leader, replicas, isr); returns that tuple."""
        last = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.partition(topic, partition, exclude)
                if cond(*st):
                    return st
                last = st
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}[{partition}]: timed out after {timeout}s waiting for {what}; "
                    f"last (leader, replicas, isr): {last}"
                )
            time.sleep(0.25)

    def wait_full_isr(self, topic, partitions, timeout=90):
        """Every partition has a leader and its ISR equals its replica set."""
        for p in range(partitions):
            self.wait_partition(topic, p, lambda l, r, i: l >= 0 and set(i) == set(r), timeout=timeout, what="full ISR")

    def create_topic(self, topic, partitions=1, replication_factor=3, config=None, replica_assignment=None, timeout=60):
        from confluent_kafka.admin import NewTopic

        if replica_assignment is not None:
            # confluent-kafka 2.16 wants the partition count with an assignment (-1 is refused).
            nt = NewTopic(
                topic,
                num_partitions=len(replica_assignment),
                replication_factor=-1,
                replica_assignment=replica_assignment,
                config=config or {},
            )
            partitions = len(replica_assignment)
        else:
            nt = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
        a = self.admin()  # keep the client referenced until the futures complete
        fs = a.create_topics([nt], operation_timeout=timeout)
        fs[topic].result(timeout)
        for p in range(partitions):
            self.wait_partition(topic, p, lambda l, r, i: l >= 0, timeout=timeout, what="a leader")
        return topic

    def topic_configs(self, topic, timeout=30):
        """{name: value} of a topic's configs (DescribeConfigs)."""
        from confluent_kafka.admin import ConfigResource

        res = ConfigResource("TOPIC", topic)
        a = self.admin()  # keep the client referenced until the future completes
        got = a.describe_configs([res])[res].result(timeout)
        return {k: v.value for k, v in got.items()}

    def active_controller(self, timeout=10):
        """Id of the active controller (the metadata quorum leader).

        Fjord: DescribeCluster's controller id. Kafka answers DescribeCluster in KRaft mode with
        a random alive broker, so for Kafka the quorum leader is the controller that answers
        DescribeQuorum on its controller listener (what `MetadataQuorumCommand
        --bootstrap-controller ... describe --status` asks). Raises AssertionError if none does."""
        if self.target == "fjord":
            a = self.admin()
            res = a.describe_cluster(request_timeout=timeout).result(timeout)
            return res.controller.id if res.controller is not None else -1
        errors = []
        for nd in self.nodes:
            if nd.voter and nd.alive() and not nd.paused:
                try:
                    return kafka_quorum_leader(nd.host, nd.controller_port, timeout=min(timeout, 5))
                except (OSError, ValueError, ConnectionError, struct.error) as e:
                    errors.append(f"node {nd.id}: {e}")
        raise AssertionError(f"no controller answered DescribeQuorum as the quorum leader: {errors}")

    def close(self):
        """SIGKILL every node (the data is thrown away). Returns the nodes that had died although
        they should have been running."""
        dead = [nd for nd in self.nodes if nd.expect_running and not nd.alive()]
        for nd in self.nodes:
            nd.expect_running = False
            if nd.alive():
                try:
                    nd.kill9()
                except (AssertionError, OSError):
                    pass
            nd._after_exit()
        return dead


# A watchdog process per factory: it waits for EOF on its stdin (the test process closed it or
# died, even by abort or SIGKILL) and then SIGKILLs every node process still running under the
# factory's directory (pid files n*/pid, checked against /proc/PID/cmdline so that a reused pid
# is never hit). Without it a crashed test run leaves JVMs / brokers behind on the machine.
_WATCHDOG = r"""
import os, signal, sys
from pathlib import Path
root = sys.argv[1]
sys.stdin.buffer.read()
for pidfile in Path(root).rglob("pid"):
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if root.encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
"""


class _Watchdog:
    def __init__(self, root):
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            pass


class ClusterFactory:
    def __init__(self, tmp_root, label, target=None, registry=None):
        self.tmp_root = Path(tmp_root)
        self.label = label
        self.target = target or TARGET
        self.clusters = []
        self.registry = registry  # a list every node is added to (conftest's _LIVE_BROKERS)
        self.base = None  # this factory's directory; every cluster of it lives below
        self.watchdog = None

    def start(self, n=3, overrides=None, voters=None, timeout=240):
        voters = n if voters is None else voters
        assert 1 <= voters <= n, f"voters must be 1..{n}"
        if self.base is None:
            self.base = Path(tempfile.mkdtemp(prefix=f"{self.target}-{self.label}-", dir=self.tmp_root)).resolve()
            self.watchdog = _Watchdog(self.base)
        root = Path(tempfile.mkdtemp(prefix="cluster-", dir=self.base))
        c = Cluster(root, n, voters, overrides, self.target)
        self.clusters.append(c)
        if self.registry is not None:
            self.registry.extend(c.nodes)
        c.start(timeout)
        return c

    def close(self):
        dead = []
        for c in self.clusters:
            dead += c.close()
            if self.registry is not None:
                for nd in c.nodes:
                    if nd in self.registry:
                        self.registry.remove(nd)
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        return dead
