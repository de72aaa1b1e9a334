"""The compaction benchmark (issue 14), `e2e/bench/run --compaction`: row `compact-1m-keys`.

Per system and dedupe buffer: a topic of one partition with cleanup.policy=delete gets
KEYS distinct keys of 1 KiB records, UPDATES times over (update by update); then
IncrementalAlterConfigs sets cleanup.policy=compact, and the clock runs until the
partition's segment files hold no more than 1.1x (one update's bytes + the active
segment's bytes) and stop changing, with min.cleanable.dirty.ratio=0.01 set with it: the active segment is never cleaned, and the keys it updates also keep
their older value in the closed segments, in both systems. Reported: the time to that
point, MB/s (bytes of the log before cleaning over that time), the broker's RSS before the
change and its peak while cleaning (sampled every 50 ms).

Both systems run with log.cleaner.backoff.ms=1000 (Kafka's 15 s default would add up to
15 s of waiting to a run) and, for Kafka, log.segment.delete.delay.ms=1000, so replaced
segments leave the disk as soon as Fjord's do. The dedupe buffers: each system's default
(128 MiB for both), then 16 MiB, which holds fewer keys than the log has (both clean it in
several passes).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

import bench
from bench import FjordSystem, KafkaSystem, RssSampler, log
from harness.clients import admin, produce_waiting
from harness.paths import REPO as ROOT
from harness.paths import segment_files

VALUE_BYTES = 1024
SEGMENT_BYTES = 64 * 1024 * 1024
TOPIC = "compact-bench"


def produce(bootstrap, keys, updates):
    """Update by update: every key once per update, acks=1, no compression."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "1",
            "linger.ms": 20,
            "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 512 * 1024,
            "log_level": 2,
        }
    )
    errors = []

    def dr(err, _msg):
        if err is not None:
            errors.append(str(err))

    base = os.urandom(VALUE_BYTES)
    for u in range(updates):
        for k in range(keys):
            key = b"key-%08d" % k
            value = b"%08d-%02d" % (k, u) + base[11:]
            produce_waiting(p, TOPIC, key=key, value=value, partition=0, on_delivery=dr)
        log(f"  update {u + 1}/{updates} queued")
    left = p.flush(600)
    if errors or left:
        raise RuntimeError(f"produce failed: {left} undelivered, errors {errors[:5]}")


def segment_bytes(part_dir):
    return sum(segment_files(part_dir).values())


def active_segment_bytes(part_dir):
    files = segment_files(part_dir)
    return files[max(files, key=lambda f: int(f.name.split(".")[0]))]


def run_one(sysobj, keys, updates, buffer_bytes, timeout):
    extra = {"log.cleaner.backoff.ms": "1000"}
    if buffer_bytes:
        extra["log.cleaner.dedupe.buffer.size"] = str(buffer_bytes)
    if isinstance(sysobj, KafkaSystem):
        extra["log.segment.delete.delay.ms"] = "1000"
    saved = dict(bench.SHARED_SETTINGS)
    bench.SHARED_SETTINGS.update(extra)
    try:
        sysobj.start()
    finally:
        bench.SHARED_SETTINGS.clear()
        bench.SHARED_SETTINGS.update(saved)
    try:
        a = admin(sysobj.bootstrap)
        cfg = {"cleanup.policy": "delete", "retention.ms": "-1", "segment.bytes": str(SEGMENT_BYTES)}
        a.create_topics([NewTopic(TOPIC, 1, 1, config=cfg)])[TOPIC].result(60)
        t = time.monotonic()
        produce(sysobj.bootstrap, keys, updates)
        produce_s = time.monotonic() - t
        part = sysobj.dir / "data" / f"{TOPIC}-0"
        before = segment_bytes(part)
        target = 1.1 * (before / updates + active_segment_bytes(part))
        log(f"  {sysobj.name}: {before / 1e6:.0f} MB written in {produce_s:.0f} s; waiting for {target / 1e6:.0f} MB")
        sampler = RssSampler(sysobj.pid)
        time.sleep(2)
        rss_before = sampler.rss_mb()
        sampler.reset()
        r = ConfigResource(
            ResourceType.TOPIC,
            TOPIC,
            incremental_configs=[
                ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
                # With a buffer smaller than the keys, each pass leaves the rest of the log
                # dirty: the default ratio (0.5) would stop the cleaner before the end.
                ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET),
            ],
        )
        t0 = time.monotonic()
        a.incremental_alter_configs([r])[r].result(60)
        # Done when within the target and unchanged for 3 s; timed to the last change (the
        # size drops as each cleaned group is swapped in).
        size, t_change = before, t0
        while size > target or time.monotonic() - t_change < 3:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(
                    f"{sysobj.name}: still {size / 1e6:.0f} MB after {timeout} s (target {target / 1e6:.0f} MB)"
                )
            time.sleep(0.1)
            now_size = segment_bytes(part)
            if now_size != size:
                size, t_change = now_size, time.monotonic()
        secs = t_change - t0
        peak = sampler.window_peak_mb()
        sampler.close()
        return {
            "scenario": "compact-1m-keys" if keys == 1_000_000 else f"compact-{keys}-keys",
            "system": sysobj.name,
            "dedupe_buffer_mib": (buffer_bytes or 128 * 1024 * 1024) // (1024 * 1024),
            "buffer": "default" if not buffer_bytes else f"{buffer_bytes // (1024 * 1024)} MiB",
            "keys": keys,
            "updates": updates,
            "log_mb": round(before / 1e6, 1),
            "compacted_mb": round(size / 1e6, 1),
            "clean_s": round(secs, 1),
            "mb_per_s": round(before / 1e6 / secs, 1),
            "rss_before_mb": round(rss_before, 1),
            "peak_rss_mb": round(peak, 1),
            "produce_s": round(produce_s, 1),
        }
    finally:
        sysobj.stop()


def main():
    ap = argparse.ArgumentParser(description="compact-1m-keys: Fjord's log cleaner against Kafka's")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--systems", default="kafka,fjord")
    ap.add_argument("--buffers", default="default,16", help="dedupe buffers: default and/or sizes in MiB")
    ap.add_argument("--fjord-bin", default=str(ROOT / "target" / "release" / "fjord"))
    ap.add_argument("--port", type=int, default=27092)
    ap.add_argument("--data-dir", default=str(ROOT / "target" / "bench" / "compaction"))
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "compaction.json"))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds a system may take to compact")
    a = ap.parse_args()
    data_dir = Path(a.data_dir).resolve()
    rows = []
    for buf in [b.strip() for b in a.buffers.split(",") if b.strip()]:
        buffer_bytes = 0 if buf == "default" else int(buf) * 1024 * 1024
        for name in [s.strip() for s in a.systems.split(",") if s.strip()]:
            if name == "kafka":
                s = KafkaSystem(data_dir, a.port, a.port + 2)
            elif name == "fjord":
                s = FjordSystem(data_dir, a.port, a.port + 2, a.fjord_bin)
            else:
                ap.error(f"unknown system {name!r} (kafka, fjord)")
            log(f"{name}, dedupe buffer {buf}: {a.keys} keys x {a.updates} updates of {VALUE_BYTES} B")
            r = run_one(s, a.keys, a.updates, buffer_bytes, a.timeout)
            log(f"  {json.dumps(r)}")
            rows.append(r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")

    head = ["scenario", "buffer", "system", "log MB", "after MB", "clean s", "MB/s", "RSS before MB", "peak RSS MB"]
    keys = [
        "scenario",
        "buffer",
        "system",
        "log_mb",
        "compacted_mb",
        "clean_s",
        "mb_per_s",
        "rss_before_mb",
        "peak_rss_mb",
    ]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    by = {(r["buffer"], r["system"]): r for r in rows}
    for buf in sorted({r["buffer"] for r in rows}):
        k, f = by.get((buf, "kafka")), by.get((buf, "fjord"))
        if k and f:
            print(
                f"ratio fjord/kafka, buffer {buf}: cleaning speed {f['mb_per_s'] / k['mb_per_s']:.2f}x, "
                f"peak RSS {f['peak_rss_mb'] / k['peak_rss_mb']:.3f}x"
            )


if __name__ == "__main__":
    sys.exit(main())
