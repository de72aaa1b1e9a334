"""Apache Kafka processes, started by e2e/kafka/start (a KRaft node as a daemon that writes its pid
to DIR/pid), and the Kafka Java tools runner.

A Kafka node of a cluster is started like e2e/kafka/start-cluster does it (KAFKA_NODE_ID,
KAFKA_CLUSTER_ID, KAFKA_QUORUM_VOTERS, -Xmx512M) and is ready when ApiVersions answers.
"""

import os
import struct
import subprocess
import time

from harness import kproto
from harness.broker import Broker
from harness.cluster import COMMON_DEFAULTS, Node
from harness.paths import KAFKA_SCRIPTS
from harness.ports import free_port
from harness.procs import StartError

START = KAFKA_SCRIPTS / "start"
STOP = KAFKA_SCRIPTS / "stop"
RUN_CLASS = KAFKA_SCRIPTS / "run-class"
# What e2e/kafka/start-cluster sets besides cluster.COMMON_DEFAULTS (Fjord rejects unknown keys).
KAFKA_EXTRA_DEFAULTS = {
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
}
KAFKA_HEAP = "-Xmx512M -Xms512M"  # e2e/kafka/start-cluster's default


def start_command(root, port, controller_port, settings):
    """e2e/kafka/start DIR PORT CONTROLLER_PORT k=v ... (the first start formats the storage)."""
    return [str(START), str(root), str(port), str(controller_port), *[f"{k}={v}" for k, v in settings.items()]]


def cluster_env(node_id, cluster_id, quorum_voters, heap):
    """The environment e2e/kafka/start reads for node `node_id` of a multi-node cluster; it starts
    Kafka in the background without waiting (the nodes need each other for the quorum)."""
    return dict(
        os.environ,
        KAFKA_NODE_ID=str(node_id),
        KAFKA_CLUSTER_ID=cluster_id,
        KAFKA_QUORUM_VOTERS=quorum_voters,
        KAFKA_START_NOWAIT="1",
        KAFKA_HEAP_OPTS=heap,
    )


def run_class(cls, *args, timeout=120, input=None, check=True, env=None):
    """Run a Kafka Java tool class through e2e/kafka/run-class (KAFKA_HOME, KAFKA_CLASSPATH)."""
    from harness.clients import run

    return run([RUN_CLASS, cls, *args], timeout=timeout, input=input, check=check, env=env)


class KafkaBroker(Broker):
    """A single KRaft node (broker and controller) on free ports, started and stopped by the scripts."""

    target = "kafka"

    def __init__(self, root, overrides):
        super().__init__(root, overrides)
        self.controller_port = free_port()
        self.pid_file = self.root / "pid"
        if not START.exists():
            raise StartError(f"{START} is missing")

    def _after_exit(self):
        # The JVM is dead (maybe a zombie until init reaps it, which `kill -0` in
        # e2e/kafka/start would take for alive): drop the pid file.
        self.pid_file.unlink(missing_ok=True)

    def _start(self, timeout=None):
        self.starts += 1
        # e2e/kafka/start appends these after its own lines, which they override.
        settings = self.listener_settings(controller=f"CONTROLLER://{self.host}:{self.controller_port}")
        settings.update(self.overrides)
        cmd = start_command(self.root, self.port, self.controller_port, settings)
        env = dict(os.environ)
        env["KAFKA_START_TIMEOUT"] = str(timeout or 120)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=(timeout or 120) + 60)
        if p.returncode != 0:
            raise StartError(f"e2e/kafka/start failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{self.log_tail()}")

    def stop(self, timeout=30):
        self.expect_running = False
        if not self.alive():
            return None
        env = dict(os.environ, KAFKA_STOP_TIMEOUT=str(timeout))
        subprocess.run([str(STOP), str(self.root)], capture_output=True, text=True, env=env, timeout=timeout + 30)
        return 0

    def log_files(self):
        return [self.root / "logs" / "stdout.log", self.root / "logs" / "server.log"]


class KafkaNode(Node):
    """Kafka node i of a cluster.Cluster."""

    target = "kafka"

    def __init__(self, cluster, node_id, root, ports, voter):
        super().__init__(cluster, node_id, root, ports, voter)
        self.pid_file = self.root / "pid"

    def config(self):
        cfg = dict(COMMON_DEFAULTS)
        cfg.update(KAFKA_EXTRA_DEFAULTS)
        if self.host != "127.0.0.1":  # in a namespace of its own (cluster.net)
            cfg["listeners"] = f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.host}:{self.controller_port}"
            cfg["advertised.listeners"] = f"PLAINTEXT://{self.bootstrap}"
        if not self.voter:
            # A Kafka broker-only node must not listen on a controller listener.
            cfg["process.roles"] = "broker"
            cfg["listeners"] = f"PLAINTEXT://{self.bootstrap}"
        cfg.update(self.cluster.overrides)
        return cfg

    def _spawn(self):
        self.starts += 1
        cmd = self.cluster.wrap(self.id, start_command(self.root, self.port, self.controller_port, self.config()))
        env = cluster_env(
            self.id,
            self.cluster.cluster_id,
            self.cluster.quorum_voters,
            os.environ.get("FJORD_TEST_KAFKA_HEAP", KAFKA_HEAP),
        )
        self.pid_file.unlink(missing_ok=True)
        # The script formats the storage (a JVM of its own) and starts Kafka in the background.
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        if p.returncode != 0:
            raise StartError(
                f"e2e/kafka/start for node {self.id} failed ({p.returncode}):\n"
                f"{p.stdout}\n{p.stderr}\n{self.log_tail()}"
            )
        self.expect_running = True
        self.paused = False

    def _wait_ready(self, deadline):
        last = None
        while True:
            if not self.alive():
                raise StartError(f"kafka node {self.id} exited during start\n{self.log_tail()}")
            try:
                kproto.api_versions_probe(self.host, self.port, timeout=1.0)
                return
            except (OSError, ValueError, ConnectionError) as e:
                last = e
            if time.monotonic() > deadline:
                raise StartError(
                    f"kafka node {self.id} does not answer ApiVersions in time ({last})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _after_exit(self):
        # The JVM is gone (perhaps a zombie until reaped, which `kill -0` in e2e/kafka/start
        # would take for alive): drop the pid file.
        self.pid_file.unlink(missing_ok=True)

    def log_files(self):
        return [self.root / "logs" / "stdout.log", self.root / "logs" / "server.log"]


def quorum_leader(host, controller_port, timeout=5.0):
    """The KRaft quorum leader id from a DescribeQuorum v0 request sent to a controller listener
    (what `MetadataQuorumCommand --bootstrap-controller ... describe --status` does, without a JVM).
    Kafka answers DescribeCluster in KRaft mode with a random alive broker, so this is how the
    active controller is found."""
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
        r = kproto.Reader(conn.request(kproto.header_v2(55, 0, cid) + body, timeout))
    got_cid = r.int()
    if got_cid != cid:
        raise ValueError(f"DescribeQuorum: correlation id {got_cid} != {cid}")
    if r.uvarint() != 0:
        raise ValueError("DescribeQuorum: unexpected tagged fields in the response header")
    err = r.int(">h")
    if err != 0:
        raise ValueError(f"DescribeQuorum: error_code {err}")
    if r.uvarint() != 2:
        raise ValueError("DescribeQuorum: expected one topic")
    r.skip(r.uvarint() - 1)  # the compact topic name
    if r.uvarint() != 2:
        raise ValueError("DescribeQuorum: expected one partition")
    _pidx, perr, leader = r.take(">ihi")
    if perr != 0 or leader < 0:
        raise ValueError(f"DescribeQuorum: partition error_code {perr}, leader {leader}")
    return leader
