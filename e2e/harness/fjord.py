"""Fjord processes: `fjord broker --override k=v ...`, our child, its output in broker.log.

A Fjord node is ready when ApiVersions answers (it binds its Kafka listener once it has joined
the cluster) and GET /ready returns 200.
"""

import os
import time

from harness import kproto
from harness.broker import NODE_ID, Broker
from harness.cluster import COMMON_DEFAULTS, Node
from harness.paths import fjord_bin_path, fjord_bin_problem
from harness.ports import free_port
from harness.procs import StartError, http_status, http_text


def command(binary, config):
    cmd = [str(binary), "broker"]
    for k, v in config.items():
        cmd += ["--override", f"{k}={v}"]
    return cmd


def child_env():
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    return env


class FjordBroker(Broker):
    """A single-node Fjord (broker and controller) on free ports."""

    target = "fjord"

    def __init__(self, root, overrides):
        super().__init__(root, overrides)
        binary = fjord_bin_path()
        problem = fjord_bin_problem(binary)
        if problem:
            raise StartError(problem)
        self.binary = binary
        self.http_port = free_port()
        self.http_base = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"{self.http_base}/metrics"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "broker.log"

    def command(self):
        cfg = {
            "node.id": NODE_ID,
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": self.data_dir,
            "fjord.http.listen": f"127.0.0.1:{self.http_port}",
        }
        cfg.update(self.listener_settings())
        cmd = command(self.binary, cfg)
        for k, v in self.overrides.items():  # the test's own, after the harness's
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def _start(self, timeout=None):
        timeout = timeout or 30
        cmd = self.command()
        header = f"e2e: start #{self.starts + 1} at {time.strftime('%H:%M:%S')}: {' '.join(map(str, cmd))}"
        self.spawn(cmd, self.log_path, header, env=child_env())
        kproto.wait_fjord_ready(
            self.proc,
            self.host,
            self.port,
            http_status,
            self.http_base + "/ready",
            time.monotonic() + timeout,
            "fjord",
            self.log_tail,
            StartError,
        )

    def stop(self, timeout=20):
        return self.terminate(timeout)

    def log_files(self):
        return [self.log_path]


class FjordNode(Node):
    """Fjord node i of a cluster.Cluster: node.id=i, process.roles=broker,controller (broker only
    for ids above the number of voters, still with a CONTROLLER listener of its own),
    controller.quorum.voters, listeners=PLAINTEXT://127.0.0.1:Ki,CONTROLLER://127.0.0.1:Ci,
    cluster.id, log.dirs, fjord.http.listen=127.0.0.1:Hi, cluster.COMMON_DEFAULTS and the
    caller's overrides."""

    target = "fjord"

    def __init__(self, cluster, node_id, root, ports, voter):
        super().__init__(cluster, node_id, root, ports, voter)
        self.binary = cluster.fjord_bin
        self.http_base = f"http://{self.host}:{self.http_port}"
        self.metrics_url = f"{self.http_base}/metrics"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "broker.log"

    def config(self):
        c = self.cluster
        cfg = {
            "node.id": str(self.id),
            "process.roles": "broker,controller" if self.voter else "broker",
            "controller.quorum.voters": c.quorum_voters,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.host}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "cluster.id": c.cluster_id,
            "log.dirs": str(self.data_dir),
            "fjord.http.listen": f"{self.host}:{self.http_port}",
        }
        cfg.update(COMMON_DEFAULTS)
        cfg.update(c.overrides)
        return cfg

    def command(self):
        return command(self.binary, self.config())

    def _spawn(self):
        cmd = self.cluster.wrap(self.id, self.command())
        header = f"e2e: node {self.id} start #{self.starts + 1} at {time.strftime('%H:%M:%S')}: {' '.join(cmd)}"
        self.spawn(cmd, self.log_path, header, env=child_env())
        (self.root / "pid").write_text(f"{self.proc.pid}\n")  # for the watchdog

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
            StartError,
        )

    def metrics(self, timeout=5.0):
        """Parsed /metrics: [(name, labels, value)]."""
        from harness.clients import parse_prometheus

        return parse_prometheus(http_text(self.metrics_url, timeout))

    def log_files(self):
        return [self.log_path]
