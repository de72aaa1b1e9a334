"""How long producers stall when a partition leader is cut off from its peers but not from its
clients: the same scenario against Fjord or Apache Kafka, for figures side by side.

    e2e/checker/run --leader-cut [--target fjord|kafka] [--runs 3] [--partitions 3] [--hold 15] [--out report.json]

A three-node cluster (every node a broker and a controller, RF 3, min ISR 2, broker session
timeout 3 s, as the checker runs it), each node in a network namespace of its own and the
clients in another that reaches every node (harness/netns.py). An idempotent acks=all producer
writes 300 records/s over a topic of --partitions partitions (3). Each run picks a partition
whose leader is not also the active controller when there is one (a leader and controller lost
together is the checker's cut-controller fault), cuts that leader from the other two nodes for --hold seconds and
measures, from the cut, when the first record handed to the producer after the cut is
acknowledged on that partition (the resume time); then heals and waits for the full ISR. Prints one line per run and the median; the JSON report has every figure. A run without an
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


def one_run(c, net, topic, partitions, prod, hold):
    c.wait_full_isr(topic, partitions, timeout=90)
    # The partition led by a node that is not also the active controller: the scenario is a
    # cut-off leader; losing the controller with it is the checker's cut-controller fault.
    controller = c.active_controller()
    leaders = {p: c.leader(topic, p) for p in range(partitions)}
    part = next((p for p, lead in leaders.items() if lead != controller), 0)
    leader = leaders[part]
    peers = set(c.ids) - {leader}
    net.cut({leader}, peers)
    # From when every rule is in place: a record handed over while they were being added could
    # still have been replicated.
    seq_at_cut = prod.sent
    t_cut = time.monotonic()
    resumed = None
    try:
        while time.monotonic() - t_cut < hold:
            acks = [a for a in prod.acks_snapshot() if a.partition == part and a.seq >= seq_at_cut and a.t >= t_cut]
            if acks:
                resumed = min(a.t for a in acks) - t_cut
                break
            time.sleep(0.05)
    finally:
        net.heal()
    t_heal = time.monotonic()
    if resumed is None:
        # Counted as the whole hold: a lower bound.
        first = [a.t for a in prod.acks_snapshot() if a.partition == part and a.seq >= seq_at_cut]
        after_heal = round(min(first) - t_heal, 2) if first else None
    else:
        after_heal = None
    new_leader = c.wait_partition(topic, part, lambda lead, r, i: lead >= 0 and set(i) == set(r), 90, "full ISR")[0]
    return {
        "partition": part,
        "leader": leader,
        "controller": controller,
        "new_leader": new_leader,
        "resume_s": round(resumed, 2) if resumed is not None else None,
        "first_ack_after_heal_s": after_heal,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=os.environ.get("FJORD_TEST_TARGET", "fjord"), choices=("fjord", "kafka"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--partitions",
        type=int,
        default=3,
        help="of the topic (default 3); with 1 the producer is connected to the cut-off leader alone",
    )
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
    report = {"target": a.target, "hold_s": a.hold, "partitions": a.partitions, "overrides": OVERRIDES, "runs": []}
    prod = None
    rc = 0
    try:
        c = factory.start(n=3, overrides=OVERRIDES, net=net)
        topic = c.create_topic("leader-cut", a.partitions, replication_factor=3)
        prod = AckingProducer(c.bootstrap, topic, a.partitions, rate=300).start()
        prod.wait_acks(200, 60, what="warm-up")
        for i in range(a.runs):
            r = one_run(c, net, topic, a.partitions, prod, a.hold)
            report["runs"].append(r)
            shown = f"{r['resume_s']}s" if r["resume_s"] is not None else f"> {a.hold}s (none during the cut)"
            also = " (the active controller too)" if r["controller"] == r["leader"] else ""
            log(f"run {i}: leader {r['leader']}{also} cut off; produce resumed {shown}; new leader {r['new_leader']}")
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
