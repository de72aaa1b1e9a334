"""The Kafka Streams word count (e2e/tests/java/WordCount.java) as a process, and its input: shared by
the acceptance test (tests/test_streams.py) and the benchmark row streams-wordcount-eos
(bench/bench.py), so both run the same application on the same kind of lines.

    lines, expected = make_lines(n)           # n lines of known words, the exact count of each word
    s = StreamsInstance("a", root, classes, bootstrap, app, "exactly_once_v2", inp, out).start()
    s.wait_running(180); s.running_ms()       # the RUNNING line it printed (epoch ms)
"""

import os
import random
import re
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING

from harness import kafka
from harness.clients import Consumer, TopicPartition, wait_for
from harness.paths import E2E
from harness.procs import Process

WORDCOUNT_SRC = E2E / "tests" / "java" / "WordCount.java"

VOCABULARY = (
    "the quick brown fox jumps over lazy dog kafka stream table record offset partition leader "
    "replica broker topic commit abort marker fjord river mountain valley north south east west "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
).split()


def split_words(line):
    """The words WordCount.java counts in a line: lower-cased, split on non-word characters."""
    return [w for w in re.split(r"\W+", line.lower(), flags=re.ASCII) if w]


def make_lines(n, seed=4242):
    """n lines of 1-10 words from VOCABULARY (Zipf-like frequencies), some capitalised, with
    punctuation; and the exact count of every word (as WordCount.java counts them)."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(VOCABULARY))]
    lines = []
    for _ in range(n):
        words = rng.choices(VOCABULARY, weights, k=rng.randint(1, 10))
        words = [w.capitalize() if rng.random() < 0.1 else w for w in words]
        line = " ".join(w + ("," if rng.random() < 0.1 else "") for w in words)
        lines.append(line[0].upper() + line[1:] + rng.choice([".", "!", "", "?"]))
    expected = Counter(w for line in lines for w in split_words(line))
    return lines, expected


class StreamsInstance(Process):
    """One WordCount.java process (a Kafka Streams client), output in root/streams-NAME.log, state
    in root/state-NAME (kept across restarts). A file root/NAME/pid lets the cluster factory's
    watchdog kill it if the test process dies. `classes` holds the compiled WordCount; `classpath`
    (default $KAFKA_CLASSPATH) the Kafka jars; `replication_factor` that of its internal topics
    (WordCount's default: 3)."""

    def __init__(
        self,
        name,
        root,
        classes,
        bootstrap,
        app,
        guarantee,
        inp,
        out,
        commit_ms=100,
        replication_factor=None,
        classpath=None,
        heap=None,
    ):
        super().__init__()
        self.name = name
        self.label = f"streams instance {name}"
        self.root = Path(root)
        self.log_path = self.root / f"streams-{name}.log"
        self.state_dir = self.root / f"state-{name}"
        self.pid_dir = self.root / name
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.classes = classes
        self.classpath = classpath
        self.heap = heap
        self.args = [bootstrap, app, guarantee, self.state_dir, inp, out, commit_ms]
        if replication_factor is not None:
            self.args.append(replication_factor)

    def start(self):
        env = dict(os.environ, KAFKA_CLASSPATH=f"{self.classes}:{self.classpath or os.environ['KAFKA_CLASSPATH']}")
        if self.heap:
            env["KAFKA_HEAP_OPTS"] = self.heap
        proc = self.spawn(
            [kafka.RUN_CLASS, "WordCount", *self.args], self.log_path, header=f"start {self.starts + 1}", env=env
        )
        (self.pid_dir / "pid").write_text(str(proc.pid))
        return self

    def log_files(self):
        return [self.log_path]

    def running_ms(self):
        """The epoch ms of the first RUNNING line of this start, None before it."""
        m = re.search(r"^RUNNING (\d+)$", self.output(), re.M)
        return int(m.group(1)) if m else None

    def check_alive(self):
        if self.expect_running and not self.alive():
            raise AssertionError(f"{self.label} exited ({self.proc.returncode}):\n{self.log_tail(60)}")

    def wait_running(self, timeout):
        def running():
            self.check_alive()
            return self.running_ms() is not None

        wait_for(running, timeout, interval=0.1, what=f"{self.label} to be RUNNING", fatal=(AssertionError,))


class CountWatcher:
    """Reads the word count's output with read_committed in a thread (the benchmark's latency and
    the acceptance test's "output quiet" check) and keeps every count of every
    word with the wall time it was read, so the time a line's counts became visible can be looked
    up. One record per poll: a batch read would hold a record until the batch is full."""

    def __init__(self, bootstrap, topic, partitions):
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-wc-watch-{time.time_ns()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                # the acceptance test kills brokers: reconnect within a second once they are back
                "reconnect.backoff.max.ms": 1000,
                "log_level": 2,
            }
        )
        # from the beginning without asking a group coordinator for committed offsets
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.lock = threading.Lock()
        self.seen = defaultdict(lambda: ([], []))  # word -> ([count, ...], [wall time, ...]) in log order
        self.records = 0
        self.errors = []
        self.changed = time.monotonic()  # when some word's count last changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            m = self.c.poll(0.1)
            now = time.time()
            if m is None:
                continue
            if m.error() is not None:
                self.errors.append(str(m.error()))
                continue
            with self.lock:
                counts, times = self.seen[m.key().decode()]
                n = int.from_bytes(m.value(), "big", signed=True)
                if not counts or counts[-1] != n:
                    self.changed = time.monotonic()
                counts.append(n)
                times.append(now)
                self.records += 1

    def start(self):
        self._thread.start()
        return self

    def visible_at(self, word, n):
        """When the count of `word` was first read at n or more; None if not yet."""
        with self.lock:
            counts, times = self.seen.get(word, ((), ()))
            # exactly-once output only goes up (check() says whether it did), so it is sorted
            i = bisect_left(counts, n)
            return times[i] if i < len(counts) else None

    def reached(self, want):
        """When every word of `want` had reached its count; None if one has not yet."""
        t = 0.0
        for w, n in want.items():
            at = self.visible_at(w, n)
            if at is None:
                return None
            t = max(t, at)
        return t

    def quiet_for(self):
        """Seconds since some word's count last changed."""
        return time.monotonic() - self.changed

    def latest(self):
        with self.lock:
            return {w: c[-1] for w, (c, _) in self.seen.items() if c}

    def check(self, want):
        """Exactly once: the last count of every word is the exact one and no count went down."""
        with self.lock:
            bad = {w: c[-1] for w, (c, _) in self.seen.items() if w not in want or c[-1] != want[w]}
            down = sorted(w for w, (c, _) in self.seen.items() if any(b < a for a, b in zip(c, c[1:], strict=False)))
        missing = sorted(set(want) - set(self.latest()))
        if bad or down or missing:
            raise RuntimeError(
                f"word counts read with read_committed are wrong: (word: got) {bad}, want "
                f"{ {w: want.get(w) for w in bad} }, went down: {down}, missing: {missing}"
            )

    def close(self):
        self._stop.set()
        self._thread.join(10)
        self.c.close()
