"""Exactly-once consume-transform-produce worker (confluent-kafka / librdkafka), run as its own
process by test_transactions.py, which SIGKILLs it midway and starts it again.

    txn_worker.py BOOTSTRAP INPUT OUTPUT GROUP TXID OUT_FILE [BATCH] [PAUSE_MS]

Consumes INPUT in GROUP (read_committed, no auto commit), produces each record's key with its
value uppercased to OUTPUT inside a transaction, and every BATCH records (default 100) commits
the consumed offsets with the transaction (send_offsets_to_transaction + commit_transaction).
PAUSE_MS (default 0) is slept with the transaction open and its records already acknowledged,
so that a SIGKILL most likely lands in an open transaction. Exits 0 once every assigned
partition is at its end with nothing uncommitted.
OUT_FILE lines:
  "INIT"                            init_transactions returned
  "ASSIGN <partitions>" / "REVOKE <partitions>"
  "OPEN <records>"                  the open transaction's records are acknowledged (then PAUSE_MS)
  "COMMIT <records> <total>"        a transaction with <records> records committed
  "DONE <total>"
"""

import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer

bootstrap, in_topic, out_topic, group, txid, out_path = sys.argv[1:7]
batch = int(sys.argv[7]) if len(sys.argv) > 7 else 100
pause = (int(sys.argv[8]) if len(sys.argv) > 8 else 0) / 1000.0
out = open(out_path, "a")


def note(line):
    out.write(line + "\n")
    out.flush()


producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid, "linger.ms": 5})
# Before the consumer joins: this fences a previous incarnation and aborts its open transaction,
# whose pending offset commit would otherwise hold the group's offset fetch back.
producer.init_transactions(60)
note("INIT")

assigned = set()
in_txn = False


def on_assign(consumer, partitions):
    assigned.update(p.partition for p in partitions)
    note(f"ASSIGN {sorted(p.partition for p in partitions)}")


def on_revoke(consumer, partitions):
    note(f"REVOKE {sorted(p.partition for p in partitions)}")
    if in_txn:
        # The single worker of the test is never rebalanced mid-run: fail loudly if it is.
        note("FATAL revoked with an open transaction")
        os._exit(3)
    assigned.difference_update(p.partition for p in partitions)


consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        # Static membership: the restarted worker takes its killed predecessor's place at once
        # instead of waiting for that member's session to expire.
        "group.instance.id": txid,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
)
consumer.subscribe([in_topic], on_assign=on_assign, on_revoke=on_revoke)

pending = 0
total = 0
at_end = set()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    for m in consumer.consume(num_messages=max(1, batch - pending), timeout=0.5):
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
                continue
            raise SystemExit(f"consume error: {err}")
        at_end.discard(m.partition())
        if not in_txn:
            producer.begin_transaction()
            in_txn = True
        producer.produce(out_topic, key=m.key(), value=m.value().upper())
        pending += 1
    caught_up = bool(assigned) and assigned <= at_end
    if pending and (pending >= batch or caught_up):
        producer.flush(30)
        note(f"OPEN {pending}")
        time.sleep(pause)
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        in_txn = False
        total += pending
        note(f"COMMIT {pending} {total}")
        pending = 0
    elif caught_up and not pending:
        note(f"DONE {total}")
        consumer.close()
        sys.exit(0)
raise SystemExit(f"not done within 120 s: {total} records committed, at end of {sorted(at_end)} of {sorted(assigned)}")
