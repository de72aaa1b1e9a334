"""Kafka Connect exactly-once source support (KIP-618) on a three-node cluster: a distributed
worker (ConnectDistributed, `exactly.once.source.support=enabled`) runs Apache Kafka's
FileStreamSource connector (`exactly.once.support=required`) over a file of known distinct lines.
Part way through, the worker is killed with SIGKILL inside a transaction that has records in the
topic, and a new one is started with the same worker config; more lines are then appended to the
file. Read with read_committed, the topic must hold every line exactly once.

What makes that possible, and so what the broker must get right: each poll of the task is one
transaction of a transactional producer (transactional.id `<group>-<connector>-0`) carrying the
records and the task's source offset (its position in the file) in the worker's offsets topic;
the new worker reads that topic with read_committed once the coordinator has aborted the killed
worker's transaction (producer transaction timeout 5 s), its task fences the old producer
(InitProducerId bumps the epoch) and resumes from the committed offset. The worker itself writes
its config topic with a transactional producer of its own and reads its internal topics with
read_committed.

Timings are printed: run with -s (or -rP) to see them.
"""

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import require_env, require_path

from harness import kafka
from harness.clients import http_get, latest_offsets, read_to_end, unique, wait_for
from harness.ports import free_port
from harness.procs import Process

N_LINES = 20_000
FIRST = 12_000  # lines in the file when the connector starts; the rest come after the restart
KILL_AT = FIRST // 4  # records in the topic (read_uncommitted) when the worker is killed
BATCH = 200  # lines per poll, so per transaction: the kill lands among many short transactions
PARTITIONS = 3
CONNECTOR = "file-source"
TASK_STARTED = re.compile(
    rf"ExactlyOnceWorkerSourceTask\{{id={CONNECTOR}-0\}} Source task finished initialization and start"
)

# The worker's INFO log (its config dumps and the producers' transactional state) to stdout,
# without the REST server's and the plugin scanner's chatter.
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.jetty.name = org.eclipse.jetty
logger.jetty.level = warn
logger.jersey.name = org.glassfish
logger.jersey.level = warn
logger.reflections.name = org.reflections
logger.reflections.level = error
"""


def line(i):
    return f"line-{i:06d}"


class Broken(AssertionError):
    """The worker died or the task failed: ends a wait at once (other failures inside a wait,
    such as a read that timed out, are retried until its deadline)."""


class ConnectWorker(Process):
    """A distributed Connect worker JVM (ConnectDistributed over a properties file), output in
    root/worker.log across restarts. root/worker/pid lets the cluster factory's watchdog kill it
    if the test process dies (the properties path under root is in its command line)."""

    label = "connect worker"

    def __init__(self, root, bootstrap, group):
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "worker.log"
        self.pid_dir = self.root / "worker"
        self.pid_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.group = group
        self.log4j = self.root / "log4j2.properties"
        self.log4j.write_text(LOG4J2)
        self.props = self.root / "worker.properties"
        settings = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "config.storage.topic": f"{group}-configs",
            "offset.storage.topic": f"{group}-offsets",
            "status.storage.topic": f"{group}-status",
            "config.storage.replication.factor": 3,
            "offset.storage.replication.factor": 3,
            "status.storage.replication.factor": 3,
            # Fewer partitions than the defaults (25, 5): less to create and read on 2 cores.
            "offset.storage.partitions": 3,
            "status.storage.partitions": 1,
            "exactly.once.source.support": "enabled",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "listeners": self.url,
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": self.port,
            "offset.flush.interval.ms": 500,
            # The new worker reads the offsets topic to its end with read_committed before it
            # runs anything, and the transaction the kill left open holds that end until the
            # coordinator aborts it on timeout (the default is a minute).
            "producer.transaction.timeout.ms": 5000,
            # The killed worker's connector and task go to the new worker as soon as the group
            # drops it (the default holds them for 5 minutes, waiting for it to come back), and
            # the group drops it after the broker's minimum session timeout.
            "scheduled.rebalance.max.delay.ms": 0,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            # Plugins from their ServiceLoader manifests only: the default also scans every class
            # of the whole Kafka classpath by reflection, CPU this 2-core machine is short of.
            "plugin.discovery": "service_load",
        }
        self.props.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def start(self):
        require_path("KAFKA_HOME")
        jars = [Path(j).name for j in require_env("KAFKA_CLASSPATH").split(":")]
        for prefix in ("connect-runtime-", "connect-file-"):
            if not any(j.startswith(prefix) for j in jars):
                pytest.fail(
                    f"KAFKA_CLASSPATH has no {prefix}*.jar; provision with: bash e2e/provision/all kafka", pytrace=False
                )
        env = dict(
            os.environ,
            KAFKA_HEAP_OPTS="-Xmx512M",
            KAFKA_LOG4J_OPTS=f"-Dlog4j2.configurationFile={self.log4j}",
        )
        proc = self.spawn(
            [kafka.RUN_CLASS, "org.apache.kafka.connect.cli.ConnectDistributed", self.props],
            self.log_path,
            header=f"start {self.starts + 1}",
            env=env,
        )
        (self.pid_dir / "pid").write_text(str(proc.pid))
        return self

    def log_files(self):
        return [self.log_path]

    def check_alive(self):
        if self.expect_running and not self.alive():
            raise Broken(f"{self.label} exited ({self.proc.returncode}):\n{self.log_tail(80)}")

    def rest(self, method, path, body=None, timeout=10):
        """(status, parsed JSON or text) of a REST call; connection errors raise OSError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def task_state(self, name):
        """(connector state, task 0 state) from GET /connectors/NAME/status."""
        status, text = http_get(f"{self.url}/connectors/{name}/status")
        if status != 200:
            return None, f"HTTP {status}: {text[:300]}"
        st = json.loads(text)
        tasks = {t["id"]: t for t in st.get("tasks", [])}
        task = tasks.get(0, {})
        return st["connector"]["state"], task.get("state", "no task") + (
            f": {task['trace'][:2000]}" if "trace" in task else ""
        )


class FileWriter:
    """The connector's input file; lines are appended whole and flushed, so the task never reads
    half a line."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.write_text("")
        self.written = 0

    def append_to(self, n):
        with open(self.path, "a") as f:
            f.write("".join(line(i) + "\n" for i in range(self.written + 1, n + 1)))
        self.written = max(self.written, n)


def test_file_source_exactly_once_across_worker_kill(cluster_factory):
    t_start = time.monotonic()
    times = {}

    def mark(what):
        times[what] = time.monotonic() - t_start
        print(f"{times[what]:6.1f}s {what}")

    c = cluster_factory.start(3)
    mark("cluster up")
    topic = c.create_topic(unique("connect-lines"), PARTITIONS)
    worker = ConnectWorker(c.root / "connect", c.bootstrap, unique("connect"))
    source = FileWriter(c.root / "connect" / "input.txt")
    source.append_to(FIRST)
    expected = {line(i) for i in range(1, N_LINES + 1)}
    state = {}

    def details():
        return f"last: {state}\n{worker.log_tail(80)}"

    def task_running():
        """Raises Broken when the worker died or the connector or its task FAILED: a Connect task
        that failed is not restarted."""
        worker.check_alive()
        state["status"] = worker.task_state(CONNECTOR)
        if any(str(st).startswith("FAILED") for st in state["status"]):
            raise Broken(f"connector or task FAILED: {state['status']}\n{worker.log_tail(80)}")
        return state["status"] == ("RUNNING", "RUNNING")

    def committed_lines():
        """The lines in the topic, read with read_committed: a Counter."""
        recs = read_to_end(c.bootstrap, topic, PARTITIONS, committed=True)
        return Counter(v.decode() for part in recs.values() for _, _, v in part)

    try:
        worker.start()

        # 1. The connector, created as soon as the worker has joined its group (before that the
        #    REST API answers 409/500, or nothing while the server starts).
        config = {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1",
            "file": str(source.path),
            "topic": topic,
            "batch.size": str(BATCH),
            # Refused unless the worker can give this connector exactly-once delivery.
            "exactly.once.support": "required",
            "transaction.boundary": "poll",
        }

        def created():
            worker.check_alive()
            try:
                state["put"] = worker.rest("PUT", f"/connectors/{CONNECTOR}/config", config)
            except OSError as e:
                state["put"] = repr(e)
                return False
            return state["put"][0] in (200, 201)

        wait_for(
            created,
            120,
            interval=0.5,
            what="the worker to accept the connector",
            fatal=(Broken,),
            details=details,
        )
        mark("connector created")
        wait_for(task_running, 60, interval=0.2, what="connector and task RUNNING", fatal=(Broken,), details=details)
        mark("task RUNNING")

        # 2. SIGKILL the worker inside a transaction that already has records in the topic. The
        #    worker is frozen first, so that what the broker shows (a last stable offset below
        #    the high watermark) is still so at the kill; it is let go again when it was
        #    frozen between transactions.
        def frozen_in_transaction():
            task_running()
            if sum(latest_offsets(c.bootstrap, topic, PARTITIONS, committed=False).values()) < KILL_AT:
                return False
            worker.sigstop()
            try:
                looks = []
                for _ in range(2):
                    # Long enough for what was sent before the SIGSTOP (an EndTxn) to finish.
                    time.sleep(0.5)
                    hw = latest_offsets(c.bootstrap, topic, PARTITIONS, committed=False)
                    lso = latest_offsets(c.bootstrap, topic, PARTITIONS, committed=True)
                    looks.append((hw, lso))
                state["hw, lso"] = looks
                if looks[0] == looks[1] and any(lso[p] < hw[p] for p in hw):
                    return True
            except BaseException:
                worker.sigcont()
                raise
            worker.sigcont()
            return False

        wait_for(
            frozen_in_transaction,
            60,
            interval=0.05,
            what=f"{KILL_AT} records in {topic} and the worker frozen in an open transaction",
            fatal=(Broken,),
            details=details,
        )
        worker.kill9()
        first_log = worker.output()
        sent = sum(len(r) for r in read_to_end(c.bootstrap, topic, PARTITIONS, committed=False).values())
        kept = sum(committed_lines().values())
        mark(f"SIGKILL worker: {sent} records written, {kept} of them committed (file {FIRST} lines)")
        assert TASK_STARTED.search(first_log), f"the first worker never started an exactly-once task:\n{details()}"
        # Otherwise the kill did not land mid-stream, and the new worker would only have to resume.
        assert sent < FIRST, f"the first worker had delivered the whole file ({sent} records) before the kill"
        assert kept < sent, f"no open transaction's records at the kill: {sent} written, {kept} committed"

        # 3. A new worker with the same config takes the task over; then more lines.
        worker.start()

        def restarted():
            worker.check_alive()
            return TASK_STARTED.search(worker.output()) and task_running()

        wait_for(
            restarted,
            120,
            interval=0.2,
            what="the new worker to run the task",
            fatal=(Broken,),
            details=details,
        )
        mark("new worker runs the task")
        source.append_to(N_LINES)

        def all_committed():
            task_running()
            got = committed_lines()
            state["committed"] = f"{len(got)} distinct of {N_LINES}, {sum(got.values())} records"
            return expected <= set(got)

        wait_for(
            all_committed,
            90,
            interval=1.0,
            what=f"all {N_LINES} lines read_committed",
            fatal=(Broken,),
            details=details,
        )
        mark(f"all {N_LINES} lines committed")
        second_log = worker.output()
        worker.terminate(timeout=30)

        # 4. Exactly once: every line once, nothing else.
        got = committed_lines()
        everything = sum(len(r) for r in read_to_end(c.bootstrap, topic, PARTITIONS, committed=False).values())
        dups = {v: n for v, n in got.items() if n > 1}
        missing = sorted(expected - set(got))
        unknown = sorted(set(got) - expected)
        summary = (
            f"read_committed {sum(got.values())} records, {len(got)} distinct; duplicates {len(dups)} "
            f"{sorted(dups.items())[:10]}; missing {len(missing)} {missing[:10]}; unknown {unknown[:10]}; "
            f"read_uncommitted {everything} (aborted {everything - sum(got.values())})"
        )
        print(summary)
        assert not dups and not missing and not unknown, f"{summary}\n{worker.log_tail(80)}"

        # 5. The worker really ran with exactly-once support: its config, and a transactional
        #    producer for the task in both runs, the second one fencing the first (a new epoch).
        txid = f"{worker.group}-{CONNECTOR}-0"
        for n, log in enumerate((first_log, second_log), 1):
            assert re.search(r"exactly\.once\.source\.support = enabled", log), f"worker {n}: EOS not enabled"
            assert TASK_STARTED.search(log), f"worker {n}: no exactly-once source task"
            assert f"transactional.id = {txid}" in log, f"worker {n}: no producer with transactional.id {txid}"
        epochs = [
            [
                (int(p), int(e))
                for p, e in re.findall(
                    rf"transactionalId={re.escape(txid)}\] ProducerId set to (\d+) with epoch (\d+)", log
                )
            ]
            for log in (first_log, second_log)
        ]
        print(f"task producer (id, epoch): first worker {epochs[0]}, second worker {epochs[1]}")
        assert epochs[0] and epochs[1], f"no 'ProducerId set' for {txid} in both workers' logs: {epochs}"
        (pid1, epoch1), (pid2, epoch2) = epochs[0][-1], epochs[1][-1]
        # The same transactional.id again: the same producer id with a higher epoch (a new id only
        # once the epoch is exhausted), which is what fences the killed worker's producer.
        assert pid2 != pid1 or epoch2 > epoch1, f"the second worker's producer did not fence the first: {epochs}"
    finally:
        worker.terminate(timeout=20, quiet=True)
    print(f"timeline: {', '.join(f'{k} {v:.1f}s' for k, v in times.items())}")
