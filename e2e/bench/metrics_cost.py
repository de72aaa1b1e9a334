"""What the metrics cost, at the scale the observability issue names: a three-node
`fjord dev` cluster with 10 000 partitions (100 topics x 100) and 1000 consumer groups, each
with committed offsets on every partition of one topic, under a produce load, at the default
(per-topic) granularity. The topics have one replica by default (`--rf`): every partition
keeps its segment and index files open, and 10 000 replicas per node need more descriptors
than the 20 000 this machine's hard limit allows. Prints, per node and in total:

- series in one scrape of /metrics (target: under 5 000 per scrape);
- scrape time, p50 and max of 20 scrapes (target: under 100 ms);
- CPU a scrape costs, and what that adds at a 15 s scrape interval, as a share of one core and
  of the broker's own CPU under the load (target: under 2 %).

    e2e/bench/metrics_cost [--topics 100] [--partitions 100] [--groups 1000] [--seconds 20]

A benchmark, not a test: it asserts nothing and prints figures for docs/benchmarks.md."""

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness.devcluster import DevCluster
from harness.procs import proc_cpu_s as cpu_seconds


def scrape(addr):
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=30) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def series(body):
    return sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def create_topics(bootstrap, topics, partitions, rf):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"cost-{i:03d}" for i in range(topics)]
    for i in range(0, len(names), 10):
        fs = admin.create_topics([NewTopic(n, partitions, rf) for n in names[i : i + 10]], operation_timeout=120)
        for f in fs.values():
            f.result(timeout=180)
        print(f"  created {min(i + 10, len(names))}/{len(names)} topics", flush=True)
    return names


def fill(bootstrap, names, partitions, per_partition):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "1",
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1000000,
        }
    )
    for n in names:
        for part in range(partitions):
            for _ in range(per_partition):
                while True:
                    try:
                        p.produce(n, value=b"v" * 100, partition=part)
                        break
                    except BufferError:
                        p.poll(0.1)
        p.poll(0)
    assert p.flush(300) == 0


def commit_groups(bootstrap, names, partitions, groups, offset):
    for g in range(groups):
        topic = names[g % len(names)]
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cost-group-{g:04d}", "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, p, offset) for p in range(partitions)], asynchronous=False)
        c.close()
        if (g + 1) % 100 == 0:
            print(f"  committed {g + 1}/{groups} groups", flush=True)


class Load:
    """A producer at full speed, 1 KiB records, acks=all, on a 6-partition topic (the
    produce benchmark's shape)."""

    def __init__(self, bootstrap):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("cost-load", 6)])["cost-load"].result(60)
        self.bootstrap, self.stop, self.sent = bootstrap, threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        value = b"x" * 1024

        def acked(err, _msg):
            if err is None:
                self.sent += 1

        while not self.stop.is_set():
            try:
                p.produce("cost-load", value=value, on_delivery=acked)
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.flush(30)

    def close(self):
        self.stop.set()
        self.thread.join(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--rf", type=int, default=1, help="replicas of the 10 000 partitions")
    ap.add_argument("--seconds", type=float, default=20, help="length of each CPU window")
    ap.add_argument("--fjord", default=str(Path(__file__).resolve().parents[2] / "target" / "release" / "fjord"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fjord-metrics-cost-") as root:
        dev = DevCluster(a.fjord, root)
        try:
            dev.wait_ready()
            t0 = time.time()
            print(f"creating {a.topics} topics x {a.partitions} partitions ...", flush=True)
            names = create_topics(dev.bootstrap, a.topics, a.partitions, a.rf)
            fill(dev.bootstrap, names, a.partitions, 10)
            print(f"committing offsets of {a.groups} groups ...", flush=True)
            commit_groups(dev.bootstrap, names, a.partitions, a.groups, 5)
            print(f"set up in {time.time() - t0:.0f} s", flush=True)
            idle = []
            for addr in dev.http:
                took = [scrape(addr)[0] for _ in range(20)]
                idle.append((statistics.median(took) * 1000, max(took) * 1000))
            print("starting the load", flush=True)
            load = Load(dev.bootstrap)
            time.sleep(5)
            pids = [dev.node_pid(i) for i in (1, 2, 3)]
            rows = []
            for i, (addr, pid) in enumerate(zip(dev.http, pids, strict=True), 1):
                # The broker's CPU under load, without scrapes.
                c0, w0 = cpu_seconds(pid), time.monotonic()
                time.sleep(a.seconds)
                base = (cpu_seconds(pid) - c0) / (time.monotonic() - w0)
                # 20 scrapes back to back; what they cost above that rate.
                c1, w1 = cpu_seconds(pid), time.monotonic()
                took = []
                for _ in range(20):
                    d, body = scrape(addr)
                    took.append(d)
                per_scrape = max(0.0, (cpu_seconds(pid) - c1) - base * (time.monotonic() - w1)) / 20
                n = series(body)
                rows.append(
                    (
                        i,
                        n,
                        idle[i - 1][0],
                        idle[i - 1][1],
                        statistics.median(took) * 1000,
                        max(took) * 1000,
                        per_scrape * 1000,
                        per_scrape / 15 * 100,
                        (per_scrape / 15) / base * 100 if base else float("nan"),
                        base * 100,
                    )
                )
            load.close()
            print(f"\nload: {load.sent:,} records of 1 KiB acknowledged (acks=all) while measuring\n")
            print(
                "| node | series | scrape p50 / max ms, idle | scrape p50 / max ms, under load | CPU per scrape ms | at 15 s: % of a core | at 15 s: % of broker CPU | broker CPU % of a core |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(
                    f"| {r[0]} | {r[1]:,} | {r[2]:.1f} / {r[3]:.1f} | {r[4]:.1f} / {r[5]:.1f} | {r[6]:.1f} | {r[7]:.3f} | {r[8]:.2f} | {r[9]:.0f} |"
                )
            print(f"\ntotal series over the three nodes: {sum(r[1] for r in rows):,}")
        finally:
            dev.close()


if __name__ == "__main__":
    main()
