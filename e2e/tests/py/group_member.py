"""One member of a consumer group (confluent-kafka), run as its own process.

    group_member.py BOOTSTRAP TOPIC GROUP OUT_FILE STOP_FILE [MAX_SECONDS]

Subscribes, consumes until STOP_FILE exists (or MAX_SECONDS pass), then closes (which
commits). Writes to OUT_FILE:
  "R <partition> <offset> <value>" for each record,
  "E <json>" for events: assign/revoke (partition lists), error, closed.
"""

import json
import os
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, out_path, stop_path = sys.argv[1:6]
max_seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 300.0
out = open(out_path, "w")


def event(**kw):
    kw["t"] = round(time.time(), 3)
    out.write("E " + json.dumps(kw) + "\n")
    out.flush()


def on_assign(consumer, partitions):
    event(ev="assign", parts=sorted(p.partition for p in partitions))


def on_revoke(consumer, partitions):
    event(ev="revoke", parts=sorted(p.partition for p in partitions))


c = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": os.path.basename(out_path),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "error_cb": lambda err: event(ev="error", err=str(err)),
    }
)
c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
event(ev="subscribed")
deadline = time.monotonic() + max_seconds
while not os.path.exists(stop_path) and time.monotonic() < deadline:
    msgs = c.consume(num_messages=2000, timeout=0.3)
    lines = []
    for m in msgs:
        if m.error():
            event(ev="error", err=str(m.error()))
            continue
        lines.append(f"R {m.partition()} {m.offset()} {m.value().decode()}\n")
    if lines:
        out.write("".join(lines))
        out.flush()
c.close()
event(ev="closed", timed_out=not os.path.exists(stop_path))
out.close()
