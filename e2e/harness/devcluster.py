"""`fjord dev --nodes 3` run as a user runs it, for the observability test and the metrics
cost benchmark: free ports picked, readiness from its "is ready" line, nodes found by their
node.id for kill -9.

    dev = DevCluster(fjord_binary, root)    # starts it; dev.bootstrap, dev.http (host:port list)
    dev.wait_ready()
    os.kill(dev.node_pid(3), signal.SIGKILL)
    dev.close()                              # SIGKILLs the whole process group

No pytest dependency."""

import os
import random
import signal
import subprocess
from pathlib import Path

from harness.clients import wait_for
from harness.ports import can_bind
from harness.procs import Watchdog


def base_ports():
    """A Kafka port base P (P..P+2 and controllers P+100..P+102) and an HTTP base, all free."""
    for _ in range(200):
        p, h = random.randrange(20000, 40000), random.randrange(40000, 60000)
        if all(can_bind(x) for x in (p, p + 1, p + 2, p + 100, p + 101, p + 102, h, h + 1, h + 2)):
            return p, h
    raise AssertionError("no free ports for a dev cluster")


class DevCluster:
    """`fjord dev --nodes 3` as a user runs it."""

    def __init__(self, binary, root):
        self.root = Path(root)
        self.port, self.http_port = base_ports()
        self.log = open(self.root / "fjord-dev.out", "w")
        self.proc = subprocess.Popen(
            [
                binary,
                "dev",
                "--nodes",
                "3",
                "--dir",
                str(self.root / "data"),
                "--port",
                str(self.port),
                "--http-port",
                str(self.http_port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Should this process die, the watchdog kills every pid recorded under root.
        (self.root / "pid").write_text(str(self.proc.pid))
        self.watchdog = Watchdog(self.root)
        self.bootstrap = ",".join(f"127.0.0.1:{self.port + i}" for i in range(3))
        self.http = [f"127.0.0.1:{self.http_port + i}" for i in range(3)]

    def wait_ready(self, timeout=120):
        out = self.root / "fjord-dev.out"
        wait_for(
            lambda: "is ready" in out.read_text() or self.proc.poll() is not None,
            timeout,
            what="fjord dev to print that it is ready",
        )
        assert self.proc.poll() is None, f"fjord dev exited:\n{out.read_text()[-3000:]}"
        for i in (1, 2, 3):
            d = self.root / f"node-{i}"
            d.mkdir(exist_ok=True)
            (d / "pid").write_text(str(self.node_pid(i)))

    def node_pid(self, i):
        """The pid of node i: the child `fjord broker` process with node.id=i."""
        for pid in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if f"node.id={i}".encode() in args:
                return int(pid)
        raise AssertionError(f"node {i} of fjord dev not found")

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.log.close()
        self.watchdog.close()
