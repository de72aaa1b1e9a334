"""Multi-node clusters for the replication tests and the checker (e2e/checker).

    factory = ClusterFactory(tmp_root, label)           # target from FJORD_TEST_TARGET
    cluster = factory.start(n=3, overrides={...})       # or start(n=4, voters=3)
    cluster.bootstrap                                   # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    node = cluster.node(2)                              # 1-based ids; cluster.nodes is the list
    node.kill9(); node.restart(); node.sigstop(); node.sigcont(); node.stop(); node.alive()
    factory.close()                                     # SIGKILLs every node; returns the nodes
                                                        # that died although they should be running

How node i starts: fjord.FjordNode and kafka.KafkaNode (with replication defaults RF 3, min
ISR 2, and the caller's overrides); the process lifecycle is procs.Process.
Nodes are started concurrently (they need each other for the quorum); a cluster is ready when
every node is ready and Metadata lists all n brokers.

No pytest dependency: e2e/tests/conftest.py wraps this in the `cluster_factory` fixture and
the checker uses it directly.
"""

import base64
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

from harness.paths import fjord_bin_path, fjord_bin_problem
from harness.ports import free_ports
from harness.procs import Process, StartError, Watchdog

TARGET = os.environ.get("FJORD_TEST_TARGET", "fjord").strip().lower()

# Every node of every cluster, whatever the target.
COMMON_DEFAULTS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "group.initial.rebalance.delay.ms": "0",
}
# The old name: the tests and the checker catch it.
ClusterStartError = StartError


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


class Node(Process):
    """One broker (and, for voters, controller) process of a cluster; subclasses: fjord.FjordNode,
    kafka.KafkaNode (_spawn, _wait_ready, log_files)."""

    target = None

    def __init__(self, cluster, node_id, root, ports, voter):
        super().__init__()
        self.cluster = cluster
        self.id = node_id
        self.label = f"node {node_id}"
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        self.host = cluster.host_of(node_id)
        self.port, self.controller_port, self.http_port = ports
        self.bootstrap = f"{self.host}:{self.port}"
        self.voter = voter
        self.metrics_url = None
        self.http_base = None

    # --- lifecycle (kill9, sigstop, sigcont, alive: procs.Process) -----
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

    def stop(self, timeout=30):
        """SIGTERM and wait (SIGKILL after timeout s)."""
        return self.terminate(timeout)

    # --- readiness -----------------------------------------------------
    def wait_registered(self, deadline):
        """Metadata asked of this node lists this node."""
        a = _admin(self.bootstrap)
        last = None
        while True:
            if not self.alive():
                raise StartError(f"node {self.id} exited while waiting to be listed in Metadata\n{self.log_tail()}")
            try:
                md = a.list_topics(timeout=5)
                if self.id in md.brokers:
                    return
                last = f"Metadata lists brokers {sorted(md.brokers)}"
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise StartError(
                    f"node {self.id} ({self.bootstrap}) not listed in Metadata in time: {last}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def __repr__(self):
        return f"<{self.target} node {self.id} {self.bootstrap} pid={self.pid}>"


# ---------------------------------------------------------------------------
# Cluster


def node_class(target):
    """fjord.FjordNode or kafka.KafkaNode (imported here: those modules build on Node above)."""
    if target == "fjord":
        from harness.fjord import FjordNode

        return FjordNode
    from harness.kafka import KafkaNode

    return KafkaNode


class Cluster:
    def __init__(self, root, n, voters, overrides, target, net=None):
        self.root = Path(root)
        self.target = target
        self.net = net  # a netns.Network: each node in a namespace of its own (None: 127.0.0.1)
        self.overrides = {k: str(v) for k, v in (overrides or {}).items()}
        self.cluster_id = new_cluster_id()
        self.n_voters = voters
        if target == "fjord":
            self.fjord_bin = fjord_bin_path()
            problem = fjord_bin_problem(self.fjord_bin)
            if problem:
                raise StartError(problem)
        ports = free_ports(3 * n)
        self.nodes = []
        for i in range(1, n + 1):
            node_ports = ports[3 * (i - 1) : 3 * i]
            self.nodes.append(node_class(target)(self, i, self.root / f"n{i}", node_ports, i <= voters))
        self.quorum_voters = ",".join(f"{nd.id}@{nd.host}:{nd.controller_port}" for nd in self.nodes if nd.voter)
        self.bootstrap = ",".join(nd.bootstrap for nd in self.nodes)

    def host_of(self, node_id):
        return self.net.node_ip(node_id) if self.net else "127.0.0.1"

    def wrap(self, node_id, cmd):
        """The command that runs `cmd` for node `node_id` (inside its namespace, with a network)."""
        return self.net.wrap(node_id, cmd) if self.net else cmd

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
            raise StartError("; ".join(map(str, errors)))
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
                    raise StartError(f"node {nd.id} died while waiting for brokers {sorted(want)}\n{nd.log_tail()}")
            try:
                md = self.metadata(timeout=5, exclude=exclude)
                if set(md.brokers) == want:
                    return md
                last = f"Metadata lists brokers {sorted(md.brokers)}"
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() > deadline:
                raise StartError(
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
            self.wait_partition(
                topic, p, lambda lead, r, i: lead >= 0 and set(i) == set(r), timeout=timeout, what="full ISR"
            )

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
            self.wait_partition(topic, p, lambda lead, r, i: lead >= 0, timeout=timeout, what="a leader")
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
        from harness import kafka

        errors = []
        for nd in self.nodes:
            if nd.voter and nd.alive() and not nd.paused:
                try:
                    return kafka.quorum_leader(nd.host, nd.controller_port, timeout=min(timeout, 5))
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


class ClusterFactory:
    def __init__(self, tmp_root, label, target=None, registry=None):
        self.tmp_root = Path(tmp_root)
        self.label = label
        self.target = target or TARGET
        self.clusters = []
        self.registry = registry  # a list every node is added to (conftest's _LIVE_BROKERS)
        self.base = None  # this factory's directory; every cluster of it lives below
        self.watchdog = None

    def start(self, n=3, overrides=None, voters=None, timeout=240, net=None):
        voters = n if voters is None else voters
        assert 1 <= voters <= n, f"voters must be 1..{n}"
        if self.base is None:
            self.base = Path(tempfile.mkdtemp(prefix=f"{self.target}-{self.label}-", dir=self.tmp_root)).resolve()
            self.watchdog = Watchdog(self.base)
        root = Path(tempfile.mkdtemp(prefix="cluster-", dir=self.base))
        c = Cluster(root, n, voters, overrides, self.target, net)
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
