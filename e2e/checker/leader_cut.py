"""How long producers stall when a partition leader is cut off from its peers but not from its
clients: the same scenario against Fjord or Apache Kafka, for figures side by side.

    e2e/checker/run-leader-cut [--target fjord|kafka] [--runs 3] [--hold 15] [--out report.json]

A three-node cluster (every node a broker and a controller, RF 3, min ISR 2, broker session
timeout 3 s, as the checker runs it), each node in a network namespace of its own and the
clients in another that reaches every node (harness/netns.py). An idempotent acks=all producer
writes 200 records/s to a one-partition topic. Each run cuts the partition's leader from the
other two nodes for --hold seconds and measures, from the cut, when the first record handed to
the producer after the cut is acknowledged (the resume time); then heals and waits for the full
ISR. Prints one line per run and the median; the JSON report has every figure. A run without an
acknowledgement before the heal reports the hold time as a lower bound ("> N s").
Exit 0 when every run finished (whatever the figures), 2 when the harness failed.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import cluster as cluster_mod
from harness import netns
from harness.workload import AckingProducer

OVERRIDES = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}


def log(msg):
    print(f"[leader-cut {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def one_run(c, net, topic, prod, hold):
    c.wait_full_isr(topic, 1, timeout=90)
    leader = c.leader(topic, 0)
    peers = set(c.ids) - {leader}
    seq_at_cut = prod.sent
    t_cut = time.monotonic()
    net.cut({leader}, peers)
    resumed = None
    try:
        while time.monotonic() - t_cut < hold:
            acks = [a for a in prod.acks_snapshot() if a.seq >= seq_at_cut and a.t >= t_cut]
            if acks:
                resumed = min(a.t for a in acks) - t_cut
                break
            time.sleep(0.05)
    finally:
        net.heal()
    t_heal = time.monotonic()
    if resumed is None:
        # Counted as the whole hold: a lower bound.
        first = [a.t for a in prod.acks_snapshot() if a.seq >= seq_at_cut]
        after_heal = round(min(first) - t_heal, 2) if first else None
    else:
        after_heal = None
    new_leader = c.wait_partition(topic, 0, lambda lead, r, i: lead >= 0 and set(i) == set(r), 90, "full ISR")[0]
    return {
        "leader": leader,
        "new_leader": new_leader,
        "resume_s": round(resumed, 2) if resumed is not None else None,
        "first_ack_after_heal_s": after_heal,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=os.environ.get("FJORD_TEST_TARGET", "fjord"), choices=("fjord", "kafka"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hold", type=float, default=15.0, help="seconds each cut lasts (default 15)")
    ap.add_argument("--out", default="leader-cut-report.json")
    ap.add_argument("--tmp", default=os.environ.get("FJORD_TEST_TMP"))
    ap.add_argument("--netns", default=None, help=argparse.SUPPRESS)  # set when re-run inside the client namespace
    a = ap.parse_args(argv)
    if not a.netns:
        return netns.run_inside(__file__, argv if argv is not None else sys.argv[1:], 3)
    os.environ["FJORD_TEST_TARGET"] = a.target
    cluster_mod.TARGET = a.target

    tmp = Path(a.tmp) if a.tmp else Path(tempfile.gettempdir())
    tmp.mkdir(parents=True, exist_ok=True)
    factory = cluster_mod.ClusterFactory(tmp, "leader-cut", a.target)
    net = netns.Network(a.netns, 3)
    report = {"target": a.target, "hold_s": a.hold, "overrides": OVERRIDES, "runs": []}
    prod = None
    rc = 0
    try:
        c = factory.start(n=3, overrides=OVERRIDES, net=net)
        topic = c.create_topic("leader-cut", 1, replication_factor=3)
        prod = AckingProducer(c.bootstrap, topic, 1, rate=200).start()
        prod.wait_acks(200, 60, what="warm-up")
        for i in range(a.runs):
            r = one_run(c, net, topic, prod, a.hold)
            report["runs"].append(r)
            shown = f"{r['resume_s']}s" if r["resume_s"] is not None else f"> {a.hold}s (none during the cut)"
            log(f"run {i}: leader {r['leader']} cut off; produce resumed {shown}; new leader {r['new_leader']}")
            time.sleep(3)
    except Exception as e:  # noqa: BLE001 - reported
        report["harness_error"] = f"{type(e).__name__}: {e}"
        rc = 2
    finally:
        if prod is not None:
            prod.stop(flush_timeout=30)
        factory.close()
    figures = [r["resume_s"] if r["resume_s"] is not None else a.hold for r in report["runs"]]
    if figures:
        median = statistics.median(figures)
        bound = "> " if all(r["resume_s"] is None for r in report["runs"]) else ""
        report["median_resume_s"] = median
        print(
            f"leader-cut {a.target}: median resume {bound}{median:.2f}s over {len(figures)} cut(s): "
            + ", ".join(f"{f:.2f}s" for f in figures),
            flush=True,
        )
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    if rc:
        print(f"leader-cut ERROR: {report['harness_error']}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
