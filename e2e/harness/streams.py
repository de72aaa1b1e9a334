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
from collections import Counter
from pathlib import Path

from harness import kafka
from harness.clients import wait_for
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
