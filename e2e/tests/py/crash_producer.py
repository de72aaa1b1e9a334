"""Idempotent acks=all producer that keeps producing until told to stop, logging every
delivery report; used while the broker is killed with SIGKILL and restarted.

    crash_producer.py BOOTSTRAP TOPIC PARTITIONS OUT_FILE STOP_FILE [RATE_PER_SEC]

Values are increasing integers per partition (partition chosen round-robin).
OUT_FILE lines:
  "ACK <partition> <offset> <value>"   delivered (acknowledged) message
  "ERR <partition> <value> <error>"    delivery failed
  "FATAL <error>"                      fatal client error (e.g. idempotence violated)
  "DONE <undelivered>"                 after stop + flush
"""

import os
import sys
import time

from confluent_kafka import KafkaException, Producer

bootstrap, topic, n_parts, out_path, stop_path = sys.argv[1:6]
n_parts = int(n_parts)
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 20000.0
out = open(out_path, "w")


def on_error(err):
    if err.fatal():
        out.write(f"FATAL {err}\n")
        out.flush()


p = Producer(
    {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 180000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "error_cb": on_error,
    }
)


def dr(err, msg):
    if err is not None:
        out.write(f"ERR {msg.partition()} {msg.value().decode()} {err}\n")
    else:
        out.write(f"ACK {msg.partition()} {msg.offset()} {msg.value().decode()}\n")


counters = [0] * n_parts
sent = 0
t0 = time.monotonic()
last_flush = t0
try:
    while not os.path.exists(stop_path):
        if sent > rate * (time.monotonic() - t0):
            p.poll(0.005)
        else:
            part = sent % n_parts
            try:
                p.produce(topic, value=str(counters[part]).encode(), partition=part, on_delivery=dr)
            except BufferError:
                p.poll(0.05)
                continue
            counters[part] += 1
            sent += 1
            p.poll(0)
        now = time.monotonic()
        if now - last_flush > 0.1:
            out.flush()
            last_flush = now
    remaining = p.flush(150)
except KafkaException as e:
    out.write(f"FATAL {e}\n")
    remaining = len(p)
out.write(f"DONE {remaining}\n")
out.close()
