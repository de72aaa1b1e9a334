#!/usr/bin/env python3
"""Fjord vs Apache Kafka benchmark driver (Fjord issue 3).

Starts each system in turn on the same ports with the same settings, drives the
same load with the same (Java) tools, measures the broker process, stops it.
Run it through e2e/bench/run, which provisions the tools first.

Output: a table on stdout, target/bench/results.json, and with --write-docs
docs/benchmarks.md. Exit status 1 if any scenario row is missing or failed for
any system (a smoke check: no speed thresholds).
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from harness import kafka, probe
from harness.clients import Producer, create_topic, produce, produce_waiting, wait_for
from harness.paths import REPO as ROOT
from harness.ports import port_in_use
from harness.procs import Process, proc_cpu_s, proc_status_kb
from harness.streams import WORDCOUNT_SRC, CountWatcher, StreamsInstance, make_lines, split_words

HERE = Path(__file__).resolve().parent

FJORD_CACHE = Path(os.environ.get("FJORD_CACHE", Path.home() / ".cache" / "fjord"))
MIB = 1024 * 1024


def versions():
    out = {}
    for line in (ROOT / "e2e" / "provision" / "versions").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


KAFKA_VERSION = versions()["KAFKA_VERSION"]
KAFKA_HOME = Path(os.environ.get("KAFKA_HOME", FJORD_CACHE / f"kafka-{KAFKA_VERSION}"))

# ---------------------------------------------------------------------------
# Profiles. Counts are per run; each produce scenario runs once per partition count.
PROFILES = {
    # ~10 minutes for kafka+fjord on 2 cores
    "default": dict(
        n_100b=2_000_000,
        n_1k=400_000,
        idle_s=5,
        lat_rate=1000,
        lat_s=20,
        lat_warmup_s=3,
        topics=1000,
        topic_batch=100,
        dd_mib=1024,
        iperf_s=5,
        tool_timeout=300,
        wc_lines=300_000,
        wc_lat_rate=1000,
    ),
    # ~2 minutes: smoke check for CI
    "quick": dict(
        n_100b=50_000,
        n_1k=10_000,
        idle_s=1,
        lat_rate=500,
        lat_s=3,
        lat_warmup_s=1,
        topics=1000,
        topic_batch=100,
        dd_mib=128,
        iperf_s=1,
        tool_timeout=120,
        wc_lines=20_000,
        wc_lat_rate=500,
    ),
}
PARTITIONS = (1, 6)
# The transactional row: ProducerPerformance commits a transaction every 100 ms (the issue's
# `produce-1k-txn`); its transactional id is unique per run.
TXN_ARGS = ("--transactional-id", "bench-txn", "--transaction-duration-ms", "100")
PRODUCE = [  # scenario, record size, acks, count key, extra ProducerPerformance arguments
    ("produce-100b-acks1", 100, "1", "n_100b", ()),
    ("produce-1k-acks1", 1024, "1", "n_1k", ()),
    ("produce-1k-acksall", 1024, "all", "n_1k", ()),
    ("produce-1k-txn", 1024, "all", "n_1k", TXN_ARGS),
]
# The Kafka Streams row: e2e/tests/java/WordCount.java with exactly_once_v2 over input, repartition
# and output topics of this many partitions, committing as often as in test_streams.py.
WC_PARTS = 3
WC_COMMIT_MS = 100
# (scenario, partitions) rows every system must produce
EXPECTED = (
    [("startup-ready", None), ("idle-rss", None)]
    + [(s, p) for s, *_ in PRODUCE for p in PARTITIONS]
    + [("loaded-rss", None)]
    + [("consume-1k", p) for p in PARTITIONS]
    + [("e2e-latency-1k", 1), ("streams-wordcount-eos", WC_PARTS), ("topics-create-1000", None)]
)
SCENARIOS = list(dict.fromkeys(s for s, _ in EXPECTED))
# What --scenarios adds to a scenario: it reads what these wrote or measures across them.
NEEDS = {"consume-1k": ["produce-1k-acks1"], "loaded-rss": [s for s, *_ in PRODUCE]}

# Broker settings shared by every system (Kafka's property names; Fjord reads the same).
# Neither system fsyncs per message: Kafka's log.flush.interval.* stay unset (its
# default: the OS page cache decides), and so do Fjord's.
SHARED_SETTINGS = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "true",
    "num.network.threads": "3",
    "num.io.threads": "8",
}
FIELDS = [
    "scenario",
    "system",
    "partitions",
    "records",
    "record_size",
    "records_per_sec",
    "mb_per_sec",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "peak_rss_mb",
    "rss_mb",
    "cpu_s",
    "duration_ms",
    "ops_per_sec",
    "disk_fraction",
    "net_fraction",
    "error",
]
RATIO_FIELDS = [
    "records_per_sec",
    "mb_per_sec",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "peak_rss_mb",
    "rss_mb",
    "cpu_s",
    "duration_ms",
    "ops_per_sec",
]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(scenario, system, partitions=None, **kw):
    r = dict.fromkeys(FIELDS)
    r.update(scenario=scenario, system=system, partitions=partitions, **kw)
    return r


# ---------------------------------------------------------------------------
# Process measurement


# proc_cpu_s, proc_status_kb: harness.procs


class RssSampler:
    """Samples VmRSS every 50 ms; window_peak_mb() is the peak since the last reset()."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval = pid, interval
        self._peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                kb = proc_status_kb(self.pid, "VmRSS") or 0
            except (FileNotFoundError, ProcessLookupError):
                return
            with self._lock:
                self._peak = max(self._peak, kb)
            self._stop.wait(self.interval)

    def rss_mb(self):
        return (proc_status_kb(self.pid, "VmRSS") or 0) / 1024

    def reset(self):
        with self._lock:
            self._peak = proc_status_kb(self.pid, "VmRSS") or 0

    def window_peak_mb(self):
        with self._lock:
            return max(self._peak, proc_status_kb(self.pid, "VmRSS") or 0) / 1024

    def close(self):
        self._stop.set()


# ---------------------------------------------------------------------------
# Systems under test


class System(Process):
    """A single broker under test; its process lifecycle is harness.procs.Process."""

    name = "?"

    def __init__(self, data_dir, port, http_port):
        super().__init__()
        self.label = self.name
        self.dir = Path(data_dir) / self.name
        self.port, self.http_port = port, http_port
        self.bootstrap = f"127.0.0.1:{port}"

    def fresh_dir(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True)

    def settings(self):
        """The broker settings this system is started with (for the docs)."""
        raise NotImplementedError

    def start(self):
        """Start the broker, wait for ApiVersions; returns ms from process start to ready."""
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def version(self):
        return "?"


class KafkaSystem(System):
    name = "kafka"
    heap = "-Xmx1G -Xms1G"

    def settings(self):
        return {
            "process.roles": "broker,controller (KRaft, single node)",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.port + 1}",
            "log.dirs": str(self.dir / "data"),
            **SHARED_SETTINGS,
            "JVM heap": self.heap,
        }

    def start(self):
        self.fresh_dir()
        env = dict(os.environ, KAFKA_HEAP_OPTS=self.heap)
        self.pid_file = self.dir / "pid"  # e2e/kafka/start writes the JVM's pid there
        p = subprocess.run(
            kafka.start_command(self.dir, self.port, self.port + 1, SHARED_SETTINGS),
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        sys.stderr.write(p.stdout)
        if p.returncode != 0:
            raise RuntimeError(f"e2e/kafka/start failed: {p.stderr.strip()[-2000:]}")
        m = re.search(r"ready on \S+ pid=(\d+) in (\d+) ms", p.stdout)
        if not m:
            raise RuntimeError(f"unexpected e2e/kafka/start output: {p.stdout!r}")
        if int(m.group(1)) != self.pid:
            raise RuntimeError(f"e2e/kafka/start printed pid {m.group(1)}, its pid file says {self.pid}")
        return float(m.group(2))

    def stop(self):
        subprocess.run([str(kafka.STOP), str(self.dir)], timeout=120, check=False, stdout=sys.stderr)
        self.pid_file = None

    def version(self):
        return KAFKA_VERSION


class ChildSystem(System):
    """A broker run as a child process of the benchmark (Fjord, Tansu)."""

    def log_files(self):
        return [self.dir / "logs" / f"{self.name}.log"]

    def start_child(self, cmd, cwd=None):
        """Start `cmd` with its output in logs/NAME.log; returns ms until ApiVersions answers."""
        log_path = self.log_files()[0]
        self.spawn(cmd, log_path, cwd=cwd)
        try:
            return probe.wait_ready(
                "127.0.0.1", self.port, timeout=60, pid=self.proc.pid, since_ns=self.spawned_wall_ns
            )
        except (TimeoutError, ProcessLookupError) as e:
            tail = log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {e}\n{tail}") from None

    def stop(self):
        if self.terminate(30) is None:
            log(f"{self.name} did not exit 30 s after SIGTERM; SIGKILL")
        self.proc = None


class FjordSystem(ChildSystem):
    name = "fjord"

    def __init__(self, data_dir, port, http_port, binary):
        super().__init__(data_dir, port, http_port)
        self.binary = Path(binary)

    def overrides(self):
        return {
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.dir / "data"),
            "fjord.http.listen": f"127.0.0.1:{self.http_port}",
            **SHARED_SETTINGS,
        }

    def settings(self):
        return self.overrides()

    def start(self):
        self.fresh_dir()
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"fjord binary not found: {self.binary} (cargo build --release -p fjord)")
        cmd = [str(self.binary), "broker"]
        for k, v in self.overrides().items():
            cmd += ["--override", f"{k}={v}"]
        return self.start_child(cmd)

    def version(self):
        try:
            out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=10)
            v = out.stdout.strip() or out.stderr.strip()
        except OSError:
            v = "?"
        return f"{v} ({git_rev()})"


TANSU_VERSION = os.environ.get("TANSU_VERSION", "0.6.0")
TANSU_BIN = FJORD_CACHE / f"tansu-{TANSU_VERSION}" / "bin" / "tansu"


class TansuSystem(ChildSystem):
    """Tansu (a Kafka-compatible broker in Rust, from the Rust package registry), built by
    e2e/provision/tansu with its local storage engine (libsql: one SQLite file in the data
    directory). It has no broker properties: it takes a listener URL and a storage URL."""

    name = "tansu"

    def settings(self):
        return {
            "listener": f"tcp://127.0.0.1:{self.port}",
            "storage-engine": "sqlite://tansu.db (in its data dir)",
            "build": "cargo install tansu --no-default-features --features libsql",
        }

    def start(self):
        self.fresh_dir()
        if not os.access(TANSU_BIN, os.X_OK):
            raise RuntimeError(f"tansu is not built ({TANSU_BIN}); run e2e/provision/tansu")
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(TANSU_BIN),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--storage-engine",
            "sqlite://tansu.db",
        ]
        # the sqlite URL is relative: run in the data directory
        return self.start_child(cmd, cwd=data)

    def version(self):
        return f"tansu {TANSU_VERSION}"


# ---------------------------------------------------------------------------
# Tools


class Tools:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.classes = out_dir / "classes"
        self.cp = (KAFKA_HOME / "classpath").read_text().strip()

    def compile(self):
        for src in (HERE / "BenchTools.java", WORDCOUNT_SRC):
            cls = self.classes / f"{src.stem}.class"
            if cls.exists() and cls.stat().st_mtime >= src.stat().st_mtime:
                continue
            self.classes.mkdir(parents=True, exist_ok=True)
            log(f"compiling {src.relative_to(ROOT)}")
            subprocess.run(
                ["javac", "-nowarn", "--release", "17", "-d", str(self.classes), "-cp", self.cp, str(src)], check=True
            )

    def java(self, cls, args, timeout, heap="-Xmx512M"):
        env = dict(os.environ, KAFKA_CLASSPATH=f"{self.classes}:{self.cp}", KAFKA_HEAP_OPTS=heap)
        p = subprocess.run(
            [str(kafka.RUN_CLASS), cls, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise RuntimeError(
                f"{cls.rsplit('.', 1)[-1]} exited {p.returncode}: {(p.stderr.strip() or p.stdout.strip())[-1500:]}"
            )
        return p.stdout

    def bench_json(self, args, timeout):
        out = self.java("BenchTools", args, timeout)
        return json.loads(out.strip().splitlines()[-1])


PP_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


def producer_perf(tools, bootstrap, topic, n, size, acks, timeout, extra=()):
    if extra:
        extra = [f"{a}-{topic}-{time.time_ns()}" if a == "bench-txn" else a for a in extra]
    out = tools.java(
        "org.apache.kafka.tools.ProducerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--num-records",
            n,
            "--record-size",
            size,
            "--throughput",
            "-1",
            "--command-property",
            f"acks={acks}",
            *extra,
        ],
        timeout,
    )
    summaries = list(PP_RE.finditer(out))
    m = summaries[-1] if summaries else None  # the last summary line is the final one
    if not m or int(m.group(1)) != n:
        raise RuntimeError(f"ProducerPerformance: no final summary for {n} records in: {out[-800:]!r}")
    rps = float(m.group(2))
    return dict(
        records_per_sec=rps,
        mb_per_sec=float(m.group(3)),
        duration_ms=n / rps * 1000 if rps else None,
        max_ms=float(m.group(5)),
        p50_ms=float(m.group(6)),
        p99_ms=float(m.group(8)),
        p999_ms=float(m.group(9)),
    )


def consumer_perf(tools, bootstrap, topic, n, group, timeout):
    out = tools.java(
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", topic, "--num-records", n, "--group", group, "--timeout", 30000],
        timeout,
    )
    lines = [ln for ln in out.splitlines() if ln.count(",") >= 9 and not ln.startswith("start.time")]
    if not lines:
        raise RuntimeError(f"ConsumerPerformance: no result line in {out[-800:]!r}")
    f = [x.strip() for x in lines[-1].split(",")]
    consumed = int(f[4])
    if consumed < n:
        raise RuntimeError(f"ConsumerPerformance consumed {consumed} of {n} records")
    # fetch.* excludes the group join (rebalance.time.ms), reported separately as duration_ms
    return dict(
        records=consumed,
        records_per_sec=float(f[9]),
        mb_per_sec=float(f[8]),
        duration_ms=float(f[6]) + float(f[7]),
        rebalance_ms=float(f[6]),
    )


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    if q == 50:
        return statistics.median(v)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


# ---------------------------------------------------------------------------
# Kafka Streams: streams-wordcount-eos


class WordCount:
    """The streams-wordcount-eos row: e2e/tests/java/WordCount.java (the acceptance test's Kafka
    Streams application) with processing.guarantee=exactly_once_v2 and commit.interval.ms 100 over
    WC_PARTS-partition topics. setup() pre-produces the lines and is not measured; run() starts one
    instance and measures:
    - throughput: from its RUNNING line (joined, tasks assigned) until a read_committed consumer of
      the output has read every word's final count: lines/s;
    - latency: then lines at a fixed rate for lat_s seconds; a line is visible when every one of
      its words has been read with a count that includes it; p50/p99/p99.9 of visible - intended
      send time (the first lat_warmup_s seconds are not counted).
    The output must hold the exact counts (a wrong count is an error row, not a figure)."""

    INPUT, OUTPUT, APP = "bench-wc-lines", "bench-wc-output", "bench-wc"

    def __init__(self, tools, sysobj, prof):
        self.tools, self.bootstrap, self.prof = tools, sysobj.bootstrap, prof
        self.tmo = prof["tool_timeout"]
        self.root = sysobj.dir / "streams"
        # the data directory goes after the run; the log stays for reading
        self.log_copy = tools.out_dir / f"streams-{sysobj.name}.log"
        self.watcher = self.streams = None

    def setup(self):
        for t in (self.INPUT, self.OUTPUT):
            create_topic(self.bootstrap, t, WC_PARTS, timeout=60)
        n = self.prof["wc_lines"]
        self.lines, self.expected = make_lines(n)
        produce(
            self.bootstrap,
            self.INPUT,
            self.lines,
            keys=[str(i) for i in range(n)],
            conf={"log_level": 2},  # quiet: it retries while the broker creates its internal topics
            timeout=self.tmo,
        )
        self.watcher = CountWatcher(self.bootstrap, self.OUTPUT, WC_PARTS).start()
        self.streams = StreamsInstance(
            "wc",
            self.root,
            self.tools.classes,
            self.bootstrap,
            self.APP,
            "exactly_once_v2",
            self.INPUT,
            self.OUTPUT,
            WC_COMMIT_MS,
            replication_factor=1,
            classpath=self.tools.cp,
            heap="-Xmx512M",
        )

    def wait_counts(self, want, what):
        def done():
            self.streams.check_alive()
            return self.watcher.reached(want)

        def details():
            latest = self.watcher.latest()
            behind = {w: (latest.get(w), n) for w, n in want.items() if latest.get(w) != n}
            return (
                f"(word: got, want) {dict(list(behind.items())[:8])}; consumer errors: {self.watcher.errors[-3:]}\n"
                f"{self.streams.log_tail(30)}"
            )

        return wait_for(done, self.tmo, interval=0.05, what=what, fatal=(AssertionError,), details=details)

    def run(self):
        n = len(self.lines)
        s = self.streams.start()
        s.wait_running(min(self.tmo, 120))
        running = s.running_ms() / 1000
        done = self.wait_counts(self.expected, f"the counts of {n} lines")
        lat, total = self.latency()
        self.watcher.check(total)
        return dict(
            records=n,
            records_per_sec=n / (done - running),
            duration_ms=(done - s.spawned_wall_ns / 1e9) * 1000,
            start_to_running_ms=round((running - s.spawned_wall_ns / 1e9) * 1000, 1),
            p50_ms=pct(lat, 50),
            p99_ms=pct(lat, 99),
            p999_ms=pct(lat, 99.9),
            max_ms=max(lat),
            latency_lines=len(lat),
            latency_rate=self.prof["wc_lat_rate"],
            output_records=self.watcher.records,
            streams_warn_lines=len(self.warnings()),
        )

    def latency(self):
        """Lines at wc_lat_rate/s for lat_s s into the caught-up application: ([latency ms of each
        line after the warm-up], the expected final counts)."""
        rate, secs = self.prof["wc_lat_rate"], self.prof["lat_s"]
        lines, _ = make_lines(int(rate * secs), seed=2424)
        total = Counter(self.expected)
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "log_level": 2,
            }
        )
        base = len(self.lines)
        sent = []  # (intended send time, {word: the count that includes this line})
        t0 = time.time() + 0.1
        for i, line in enumerate(lines):
            due = t0 + i / rate
            while (wait := due - time.time()) > 0:
                p.poll(wait)
            produce_waiting(p, self.INPUT, key=str(base + i).encode(), value=line.encode(), partition=i % WC_PARTS)
            p.poll(0)
            words = split_words(line)
            total.update(words)
            sent.append((due, {w: total[w] for w in words}))
        left = p.flush(self.tmo)
        if left:
            raise RuntimeError(f"{left} latency lines not acknowledged")
        self.wait_counts(total, f"the counts of {len(lines)} more lines at {rate}/s")
        lat = [
            (max(self.watcher.visible_at(w, c) for w, c in need.items()) - due) * 1000
            for due, need in sent
            if due >= t0 + self.prof["lat_warmup_s"]
        ]
        return lat, total

    def warnings(self):
        """The WARN and ERROR lines of the Streams log, without their timestamps."""
        log_path = self.streams.log_path if self.streams else None
        if not log_path or not log_path.exists():
            return []
        text = log_path.read_text(errors="replace")
        return re.findall(r"^\[[^\]]*\] ((?:WARN|ERROR) .*)$", text, re.M)

    def close(self):
        if self.streams is not None and self.streams.terminate(30, quiet=True) is None:
            log("the Streams instance did not exit 30 s after SIGTERM; SIGKILL")
        if self.watcher is not None:
            self.watcher.close()
        if self.streams is not None and self.streams.log_path.exists():
            shutil.copyfile(self.streams.log_path, self.log_copy)
            warn = self.warnings()
            shown = self.log_copy.relative_to(ROOT) if self.log_copy.is_relative_to(ROOT) else self.log_copy
            log(f"Streams log: {len(warn)} WARN/ERROR lines, in {shown}")
            for line in list(dict.fromkeys(warn))[:5]:
                log(f"  {line[:300]}")


# ---------------------------------------------------------------------------
# Machine limits


def disk_write_mib_s(data_dir, mib):
    data_dir.mkdir(parents=True, exist_ok=True)
    f = data_dir / ".dd-bench"
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"], check=True)
    el = time.monotonic() - t0
    f.unlink()
    return mib / el


def loopback_mib_s(port, seconds):
    srv = subprocess.Popen(
        ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):  # wait for the listener without connecting to it
            if f":{port:04X} " in Path("/proc/net/tcp").read_text():
                break
            time.sleep(0.05)
        p = subprocess.run(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        )
        bps = json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"]
        return bps / 8 / MIB
    finally:
        srv.terminate()
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


# ---------------------------------------------------------------------------
# One system, all scenarios


def run_system(sysobj, tools, prof, limits, scenarios=SCENARIOS):
    rows = []
    want = set(scenarios).__contains__
    name = sysobj.name
    tmo = prof["tool_timeout"]

    def add(r):
        mb = r.get("mb_per_sec")
        if mb is not None and r["scenario"].startswith(("produce", "consume", "e2e")):
            if limits.get("disk") and r["scenario"].startswith("produce"):
                r["disk_fraction"] = round(mb / limits["disk"], 4)
            if limits.get("net"):
                r["net_fraction"] = round(mb / limits["net"], 4)
        rows.append(r)
        log(f"{name}: {fmt_row_short(r)}")

    if port_in_use(sysobj.port):
        raise RuntimeError(f"port {sysobj.port} is already in use; stop whatever listens there")
    log(f"{name}: starting")
    startup_ms = sysobj.start()
    pid = sysobj.pid
    sampler = RssSampler(pid)
    try:
        if want("startup-ready"):
            add(
                row(
                    "startup-ready",
                    name,
                    duration_ms=round(startup_ms, 1),
                    cpu_s=proc_cpu_s(pid),
                    peak_rss_mb=(proc_status_kb(pid, "VmHWM") or 0) / 1024,
                    rss_mb=sampler.rss_mb(),
                )
            )

        if want("idle-rss"):
            sampler.reset()
            c0 = proc_cpu_s(pid)
            time.sleep(prof["idle_s"])
            add(
                row(
                    "idle-rss",
                    name,
                    rss_mb=sampler.rss_mb(),
                    peak_rss_mb=sampler.window_peak_mb(),
                    cpu_s=proc_cpu_s(pid) - c0,
                    duration_ms=prof["idle_s"] * 1000,
                )
            )

        def scenario(scn, parts, fn, setup=None, keep=(), **fixed):
            """fn()'s figures as the row (FIELDS and the `keep` keys); setup() runs first, unmeasured."""
            try:
                if setup:
                    setup()
                sampler.reset()
                c0 = proc_cpu_s(pid)
                res = fn()
                add(
                    row(
                        scn,
                        name,
                        parts,
                        **fixed,
                        **{k: v for k, v in res.items() if k in FIELDS or k in keep},
                        peak_rss_mb=sampler.window_peak_mb(),
                        cpu_s=proc_cpu_s(pid) - c0,
                    )
                )
            except Exception as e:  # noqa: BLE001 - a failed scenario becomes an error row
                add(row(scn, name, parts, **fixed, error=f"{type(e).__name__}: {e}"[:2000]))
                if not probe.alive(pid):
                    raise RuntimeError(f"{name} died during {scn}") from e

        topics = {f"bench-{scn}-p{p}": p for scn, *_ in PRODUCE if want(scn) for p in PARTITIONS}
        if want("e2e-latency-1k"):
            topics["bench-e2e-latency"] = 1
        try:
            if topics:
                tools.bench_json(["ensure-topics", sysobj.bootstrap, *[f"{t}:{p}" for t, p in topics.items()]], tmo)
        except Exception as e:  # noqa: BLE001 - the producers would auto-create; note and go on
            log(f"{name}: creating the benchmark topics failed ({e}); relying on auto-create")

        # produce
        produce_peak, produce_cpu = 0.0, 0.0
        for scn, size, acks, key, extra in PRODUCE:
            for p in PARTITIONS if want(scn) else ():
                n = prof[key]
                log(f"{name}: {scn} partitions={p} records={n}")
                scenario(
                    scn,
                    p,
                    # called before the next iteration; the defaults bind this one's values anyway
                    lambda scn=scn, p=p, n=n, size=size, acks=acks, extra=extra: producer_perf(
                        tools, sysobj.bootstrap, f"bench-{scn}-p{p}", n, size, acks, tmo, extra
                    ),
                    records=n,
                    record_size=size,
                )
                r = rows[-1]
                produce_peak = max(produce_peak, r["peak_rss_mb"] or 0)
                produce_cpu += r["cpu_s"] or 0
        if want("loaded-rss"):
            add(row("loaded-rss", name, rss_mb=sampler.rss_mb(), peak_rss_mb=produce_peak, cpu_s=round(produce_cpu, 2)))

        # consume what produce-1k-acks1 wrote, from the start
        for p in PARTITIONS if want("consume-1k") else ():
            n = prof["n_1k"]
            log(f"{name}: consume-1k partitions={p} records={n}")
            scenario(
                "consume-1k",
                p,
                lambda p=p, n=n: consumer_perf(
                    tools,
                    sysobj.bootstrap,
                    f"bench-produce-1k-acks1-p{p}",
                    n,
                    f"bench-consume-{p}-{time.time_ns()}",
                    tmo,
                ),
                record_size=1024,
            )

        # end-to-end latency at a fixed rate
        def latency():
            r = tools.bench_json(
                [
                    "latency",
                    sysobj.bootstrap,
                    "bench-e2e-latency",
                    prof["lat_rate"],
                    prof["lat_s"],
                    1024,
                    "1",
                    prof["lat_warmup_s"],
                ],
                tmo,
            )
            r["mb_per_sec"] = r["records_per_sec"] * 1024 / MIB
            r["records"] = r["received"]
            return r

        if want("e2e-latency-1k"):
            log(f"{name}: e2e-latency-1k rate={prof['lat_rate']}/s for {prof['lat_s']}s")
            scenario("e2e-latency-1k", 1, latency, record_size=1024)

        # Kafka Streams, exactly once; before the 1000 topics, which are not part of it
        if want("streams-wordcount-eos"):
            log(
                f"{name}: streams-wordcount-eos lines={prof['wc_lines']}, then {prof['wc_lat_rate']} lines/s "
                f"for {prof['lat_s']}s"
            )
            wc = WordCount(tools, sysobj, prof)
            try:
                scenario(
                    "streams-wordcount-eos",
                    WC_PARTS,
                    wc.run,
                    setup=wc.setup,
                    keep=(
                        "start_to_running_ms",
                        "latency_lines",
                        "latency_rate",
                        "output_records",
                        "streams_warn_lines",
                    ),
                )
            finally:
                wc.close()

        # topic creation through the admin API
        if want("topics-create-1000"):
            log(f"{name}: topics-create-1000 ({prof['topics']} topics, {prof['topic_batch']} per request)")
            scenario(
                "topics-create-1000",
                None,
                lambda: tools.bench_json(
                    ["create-topics", sysobj.bootstrap, "bench-many-", prof["topics"], prof["topic_batch"]], tmo
                ),
                records=prof["topics"],
            )
    finally:
        sampler.close()
        log(f"{name}: stopping")
        sysobj.stop()
    return rows


# ---------------------------------------------------------------------------
# Reporting


def fnum(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def fmt_row_short(r):
    if r.get("error"):
        return f"{r['scenario']} p={r['partitions']}: ERROR {r['error'][:300]}"
    parts = [f"{r['scenario']}" + (f" p={r['partitions']}" if r["partitions"] else "")]
    for k in (
        "records_per_sec",
        "mb_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "duration_ms",
        "ops_per_sec",
        "rss_mb",
        "peak_rss_mb",
        "cpu_s",
    ):
        if r.get(k) is not None:
            parts.append(f"{k}={fnum(r[k], 2)}")
    return " ".join(parts)


COLS = [
    ("scenario", "scenario", None),
    ("partitions", "parts", None),
    ("system", "system", None),
    ("records_per_sec", "records/s", 0),
    ("mb_per_sec", "MB/s", 1),
    ("disk_fraction", "%disk", "pct"),
    ("net_fraction", "%net", "pct"),
    ("p50_ms", "p50 ms", 1),
    ("p99_ms", "p99 ms", 1),
    ("p999_ms", "p99.9 ms", 1),
    ("duration_ms", "time ms", 0),
    ("rss_mb", "RSS MB", 0),
    ("peak_rss_mb", "peak RSS MB", 0),
    ("cpu_s", "CPU s", 2),
]


def cell(r, key, spec):
    v = r.get(key)
    if v is None:
        return "-"
    if spec == "pct":
        return f"{100 * v:.1f}%"
    if spec is None:
        return str(v)
    if spec == 0:
        return f"{v:,.0f}"
    return f"{v:,.{spec}f}"


def table_rows(rows):
    out = []
    for r in rows:
        if r.get("error"):
            out.append(
                [
                    str(r["scenario"]),
                    str(r["partitions"] or "-"),
                    r["system"],
                    "ERROR: " + r["error"].splitlines()[0][:100],
                ]
                + [""] * (len(COLS) - 4)
            )
        else:
            out.append([cell(r, k, s) if k != "partitions" else str(r["partitions"] or "-") for k, _, s in COLS])
    return out


def ratio_rows(rows):
    out = []
    for r in rows:
        for peer in ("kafka", "tansu"):
            v = r.get(f"vs_{peer}")
            if v:
                out.append(
                    [r["scenario"], str(r["partitions"] or "-"), f"{r['system']}/{peer}"]
                    + [f"{v[k]:.2f}x" if k in v else "-" for k in RATIO_FIELDS]
                )
    return out


RATIO_HEAD = [
    "scenario",
    "parts",
    "ratio",
    "records/s",
    "MB/s",
    "p50",
    "p99",
    "p99.9",
    "peak RSS",
    "RSS",
    "CPU s",
    "time",
    "ops/s",
]


def text_table(head, body):
    w = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head)), "  ".join("-" * x for x in w)]
    for b in body:
        lines.append("  ".join(c.rjust(w[i]) if i >= 3 else c.ljust(w[i]) for i, c in enumerate(b)))
    return "\n".join(lines)


def md_table(head, body):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for b in body:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in b) + " |")
    return "\n".join(lines)


def add_ratios(rows):
    """Every system against Kafka (vs_kafka), and Fjord against Tansu where Tansu ran (vs_tansu)."""
    for peer in ("kafka", "tansu"):
        base = {(r["scenario"], r["partitions"]): r for r in rows if r["system"] == peer and not r.get("error")}
        for r in rows:
            if r["system"] in (peer, "machine") or r.get("error"):
                continue
            if peer == "tansu" and r["system"] != "fjord":
                continue
            k = base.get((r["scenario"], r["partitions"]))
            if not k:
                continue
            r[f"vs_{peer}"] = {
                f: round(r[f] / k[f], 3) for f in RATIO_FIELDS if r.get(f) is not None and k.get(f) not in (None, 0)
            }


def loadavg():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def git_rev():
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "broker"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (rev or "no commit") + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def machine_info(data_dir):
    info = {"cores": os.cpu_count(), "cpu": "?", "memory_gib": None, "disk": "?", "kernel": platform.release()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        p = subprocess.run(["df", "-T", "-B1", str(data_dir)], capture_output=True, text=True, timeout=10)
        dev, fstype, size = p.stdout.splitlines()[1].split()[:3]
        rot = "?"
        base = re.sub(r"^/dev/", "", dev)
        base = re.sub(r"(p?\d+)$", "", base) if not Path(f"/sys/block/{base}").exists() else base
        try:
            if re.match(r"x?vd[a-z]", base):
                rot = "virtio block device"
            else:
                rot = (
                    "rotational"
                    if Path(f"/sys/block/{base}/queue/rotational").read_text().strip() == "1"
                    else "non-rotational"
                )
        except OSError:
            pass
        info["disk"] = f"{fstype} on {base} ({int(size) / 2**30:.0f} GiB, {rot})"
    except (OSError, ValueError, IndexError):
        pass
    try:
        jv = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20).stderr.splitlines()[0]
        info["java"] = jv
    except (OSError, IndexError):
        info["java"] = "?"
    return info


def scrub(text):
    """No absolute path of this machine goes into a committed file: repo-relative, ~/..., or a basename."""

    def one(m):
        p = Path(m.group(0))
        try:
            return str(p.relative_to(ROOT)) or "."
        except ValueError:
            pass
        try:
            return "~/" + str(p.relative_to(Path.home()))
        except ValueError:
            return p.name

    return re.sub(r"(?<![\w.~:/])/[^\s`'\",;)]+", one, str(text))


def write_docs(path, rows, systems, prof_name, prof, limits, minfo, argv, elapsed, note=""):
    now = dt.datetime.now(dt.UTC)
    shown = []
    skip = False
    for x in argv:  # the command line, without --note's text (it is printed below)
        if skip or x == "--note":
            skip = not skip and x == "--note"
            continue
        if not x.startswith("--note="):
            shown.append(scrub(x))
    cmd = shlex.join(["e2e/bench/run", *shown])
    sysrows = [r for r in rows if r["system"] != "machine"]
    lines = (
        [
            "# Benchmarks: Fjord vs Apache Kafka",
            "",
            f"Generated by `{cmd}` on {now:%Y-%m-%d %H:%M} UTC "
            f"(profile `{prof_name}`, {elapsed / 60:.1f} minutes). Regenerate with "
            "`e2e/bench/run --write-docs`; the raw figures are in `target/bench/results.json`.",
            "",
            "## Machine",
            "",
            f"- CPU: {minfo['cores']} cores, {minfo['cpu']}",
            f"- Memory: {minfo['memory_gib']} GiB",
            f"- Disk (data directories): {minfo['disk']}",
            f"- Kernel: Linux {minfo['kernel']}; {minfo.get('java', '?')}",
            f"- Sequential write with fsync at the end (dd, {prof['dd_mib']} MiB): **{fnum(limits.get('disk'))} MB/s**",
            f"- Loopback TCP (iperf3, one stream, {prof['iperf_s']} s): **{fnum(limits.get('net'))} MB/s**",
            f"- 1-minute load average: {limits['load'][0]} when the run started, {limits['load'][1]} when it ended "
            "(above ~0.5 something else was using the cores, and the figures are low and noisy)",
            "",
        ]
        + ([note, ""] if note else [])
        + [
            "The load tools run on the same 2 cores as the broker, so every figure is for broker and "
            "clients together; `%disk` and `%net` give each throughput as a fraction of the two limits above. "
            "MB = 2^20 bytes, as Kafka's tools print it.",
            "",
            "## Systems",
            "",
        ]
    )
    for s in systems:
        lines.append(
            f"- **{s.name}** {scrub(s.version())}: " + ", ".join(f"`{k}={scrub(v)}`" for k, v in s.settings().items())
        )
    lines += [
        "",
        "Both run as a single node on the same port and data disk, with the same partition counts and "
        "replication factor 1, and neither fsyncs per message (flushing is left to the OS page cache; "
        "Kafka's default). Kafka gets a 1 GiB heap.",
        "",
        "## Scenarios",
        "",
        f"- `produce-100b-acks1`, `produce-1k-acks1`, `produce-1k-acksall`, `produce-1k-txn`: Kafka's ProducerPerformance, "
        f"{prof['n_100b']:,} records of 100 B or {prof['n_1k']:,} records of 1024 B, unthrottled "
        "(`--throughput -1`), producer defaults otherwise (acks=all turns idempotence on; "
        "`produce-1k-txn` adds `--transactional-id` and `--transaction-duration-ms 100`), "
        f"into a topic of {' and '.join(map(str, PARTITIONS))} partitions; latency columns are the "
        "producer's send-to-ack percentiles.",
        "- `consume-1k`: Kafka's ConsumerPerformance reading the `produce-1k-acks1` topic from the start in a "
        "new group; records/s and MB/s exclude the group join, `time ms` includes it.",
        f"- `e2e-latency-1k`: one producer (linger.ms=0, acks=1) sending {prof['lat_rate']} records/s of 1024 B "
        f"for {prof['lat_s']} s, a consumer in the same JVM; latency = receive time - intended send time "
        f"(first {prof['lat_warmup_s']} s not counted).",
        f"- `streams-wordcount-eos`: the Kafka Streams word count of the acceptance tests "
        "(`e2e/tests/java/WordCount.java`: lines -> words -> repartition by word -> count -> output), one "
        f"instance, `processing.guarantee=exactly_once_v2`, `commit.interval.ms={WC_COMMIT_MS}`, input, "
        f"repartition and output topics of {WC_PARTS} partitions. {prof['wc_lines']:,} lines (1-10 known "
        "words each) are produced first; records/s is lines/s from the instance's RUNNING state (joined, "
        "tasks assigned) until a read_committed consumer of the output has read every word's exact final "
        "count, `time ms` is from the JVM's start to the same point. Then "
        f"{prof['wc_lat_rate']} lines/s for {prof['lat_s']} s (acks=all, linger.ms=0): the latency columns are "
        "from a line's intended send time until the read_committed consumer has read, for each of its words, "
        f"a count that includes it (first {prof['lat_warmup_s']} s not counted). Peak RSS and CPU s leave the "
        "pre-produce out. A wrong count fails the row.",
        f"- `topics-create-1000`: {prof['topics']} one-partition topics through the Admin API, "
        f"{prof['topic_batch']} per CreateTopics request; `time ms` is the total.",
        "- `startup-ready`: process start to the first answered ApiVersions request (Kafka: after its "
        "storage is formatted).",
        f"- `idle-rss`: resident memory after {prof['idle_s']} s idle; `loaded-rss`: resident memory at the "
        "end of the produce runs (peak RSS: the highest during them, CPU s: their total).",
        "",
        "Peak RSS is sampled every 50 ms during each scenario; CPU s is the broker process's utime+stime "
        "during the scenario (from /proc/PID/stat).",
        "",
        "## Results",
        "",
        md_table([h for _, h, _ in COLS], table_rows(sysrows)),
        "",
    ]
    rr = ratio_rows(sysrows)
    if rr:
        lines += [
            "## Ratios to Kafka",
            "",
            "Above 1 means more: better for records/s, MB/s and ops/s; worse for latency, memory, CPU and time.",
            "",
            md_table(RATIO_HEAD, rr),
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="Fjord vs Apache Kafka benchmark (issue 3)")
    ap.add_argument("--quick", action="store_true", help="small counts, ~2 minutes: the CI smoke check")
    ap.add_argument(
        "--systems",
        default=None,
        help="comma-separated: kafka, fjord, tansu (default: kafka,fjord,tansu; --quick: kafka,fjord)",
    )
    ap.add_argument("--fjord-bin", default=str(ROOT / "target" / "release" / "fjord"))
    ap.add_argument("--write-docs", action="store_true", help="regenerate docs/benchmarks.md from this run")
    ap.add_argument(
        "--port",
        type=int,
        default=27092,
        help="broker port (Kafka's controller uses PORT+1, Fjord's HTTP PORT+2, iperf3 PORT+3)",
    )
    ap.add_argument(
        "--data-dir",
        default=str(ROOT / "target" / "bench" / "data"),
        help="where the brokers keep their data (same disk for every system)",
    )
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "results.json"))
    ap.add_argument("--keep-data", action="store_true", help="keep the brokers' data directories")
    ap.add_argument("--skip-machine", action="store_true", help="don't measure disk and loopback bandwidth")
    ap.add_argument("--note", default="", help="a sentence to put in docs/benchmarks.md (e.g. what else ran)")
    ap.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated: run only these scenarios (consume-1k brings produce-1k-acks1, loaded-rss the "
        f"produce scenarios); default: all of {','.join(SCENARIOS)}",
    )
    a = ap.parse_args()
    scenarios = SCENARIOS
    if a.scenarios is not None:
        asked = {x.strip() for x in a.scenarios.split(",") if x.strip()}
        unknown = sorted(asked - set(SCENARIOS))
        if unknown or not asked:
            ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
        if a.write_docs:
            ap.error("--write-docs needs every scenario: leave --scenarios out")
        asked |= {n for x in asked for n in NEEDS.get(x, ())}
        scenarios = [x for x in SCENARIOS if x in asked]
    expected = [(scn, p) for scn, p in EXPECTED if scn in scenarios]

    prof_name = "quick" if a.quick else "default"
    prof = PROFILES[prof_name]
    data_dir = Path(a.data_dir).resolve()
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.systems is None:
        a.systems = "kafka,fjord" if a.quick else "kafka,fjord,tansu"
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    systems = []
    for n in names:
        if n == "kafka":
            systems.append(KafkaSystem(data_dir, a.port, a.port + 2))
        elif n == "fjord":
            systems.append(FjordSystem(data_dir, a.port, a.port + 2, a.fjord_bin))
        elif n == "tansu":
            systems.append(TansuSystem(data_dir, a.port, a.port + 2))
        else:
            ap.error(f"unknown system {n!r} (kafka, fjord, tansu)")
    t_start = time.monotonic()
    load_start = loadavg()

    tools = Tools(out.parent)
    tools.compile()

    rows, limits = [], {}
    if not a.skip_machine:
        log(f"machine: sequential write of {prof['dd_mib']} MiB with fsync in {data_dir}")
        limits["disk"] = disk_write_mib_s(data_dir, prof["dd_mib"])
        rows.append(
            row(
                "machine-disk-write-fsync",
                "machine",
                mb_per_sec=round(limits["disk"], 1),
                records=prof["dd_mib"],
                record_size=MIB,
            )
        )
        log(f"machine: disk {limits['disk']:.0f} MB/s; loopback TCP with iperf3 for {prof['iperf_s']} s")
        try:
            limits["net"] = loopback_mib_s(a.port + 3, prof["iperf_s"])
            rows.append(row("machine-loopback-tcp", "machine", mb_per_sec=round(limits["net"], 1)))
            log(f"machine: loopback {limits['net']:.0f} MB/s")
        except (OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
            log(f"machine: iperf3 failed: {e}")

    for s in systems:
        try:
            rows += run_system(s, tools, prof, limits, scenarios)
        except Exception as e:  # noqa: BLE001 - report, fill the missing rows with the error, go on
            log(f"{s.name}: FAILED: {e}")
            have = {(r["scenario"], r["partitions"]) for r in rows if r["system"] == s.name}
            for scn, p in expected:
                if (scn, p) not in have:
                    rows.append(row(scn, s.name, p, error=f"{type(e).__name__}: {e}"[:2000]))
        finally:
            if not a.keep_data and s.dir.exists():
                shutil.rmtree(s.dir, ignore_errors=True)

    for r in rows:  # round for readability
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 3)
    add_ratios(rows)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    elapsed = time.monotonic() - t_start
    limits["load"] = (load_start, loadavg())

    print()
    print(
        f"Fjord benchmark, profile {prof_name}, {elapsed:.0f} s; machine: disk "
        f"{fnum(limits.get('disk'))} MB/s (dd fsync), loopback {fnum(limits.get('net'))} MB/s (iperf3); "
        f"1-min load average {limits['load'][0]} at the start, {limits['load'][1]} at the end"
    )
    print(text_table([h for _, h, _ in COLS], table_rows([r for r in rows if r["system"] != "machine"])))
    rr = ratio_rows(rows)
    if rr:
        print()
        print(text_table(RATIO_HEAD, rr))
    print(f"\nresults: {out}")

    if a.write_docs:
        write_docs(
            ROOT / "docs" / "benchmarks.md",
            rows,
            systems,
            prof_name,
            prof,
            limits,
            machine_info(data_dir),
            sys.argv[1:],
            elapsed,
            a.note,
        )

    bad = []
    # Tansu is a reference point: scenarios it cannot run are reported, not fatal.
    for s in [s for s in systems if s.name != "tansu"]:
        have = {(r["scenario"], r["partitions"]): r for r in rows if r["system"] == s.name}
        for scn, p in expected:
            r = have.get((scn, p))
            if r is None:
                bad.append(f"{s.name} {scn} p={p}: missing")
            elif r.get("error"):
                bad.append(f"{s.name} {scn} p={p}: {r['error'].splitlines()[0][:200]}")
    if bad:
        print(f"\n{len(bad)} scenario row(s) missing or failed:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    print(f"all {len(expected)} scenario rows present for {', '.join(s.name for s in systems)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
