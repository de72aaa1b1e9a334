// Small Java load tools for e2e/bench/run, compiled at run time against the
// cached Kafka client jars (so both systems are driven by the same client).
//
//   BenchTools ensure-topics  BOOTSTRAP NAME:PARTITIONS ...
//   BenchTools create-topics  BOOTSTRAP PREFIX COUNT [BATCH]
//   BenchTools latency        BOOTSTRAP TOPIC RATE SECONDS SIZE ACKS WARMUP_SECONDS
//   BenchTools failover       BOOTSTRAP TOPIC RATE SIZE ACK_FILE MAX_SECONDS
//
// Each prints one JSON object on stdout as its last line.
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.HdrHistogram.Histogram;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class BenchTools {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) usage();
        switch (args[0]) {
            case "ensure-topics" -> ensureTopics(args[1], Arrays.copyOfRange(args, 2, args.length));
            case "create-topics" -> createTopics(args[1], args[2], Integer.parseInt(args[3]),
                    args.length > 4 ? Integer.parseInt(args[4]) : 100);
            case "latency" -> latency(args[1], args[2], Integer.parseInt(args[3]), Double.parseDouble(args[4]),
                    Integer.parseInt(args[5]), args[6], Double.parseDouble(args[7]));
            case "failover" -> failover(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                    args[5], Double.parseDouble(args[6]));
            default -> usage();
        }
    }

    static void usage() {
        System.err.println("usage: BenchTools ensure-topics BOOTSTRAP NAME:PARTITIONS... | "
                + "create-topics BOOTSTRAP PREFIX COUNT [BATCH] | "
                + "latency BOOTSTRAP TOPIC RATE SECONDS SIZE ACKS WARMUP_SECONDS | "
                + "failover BOOTSTRAP TOPIC RATE SIZE ACK_FILE MAX_SECONDS");
        System.exit(2);
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "60000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "120000");
        return Admin.create(p);
    }

    /** Create topics (ignoring "already exists") and wait until every partition has a leader. */
    static void ensureTopics(String bootstrap, String[] specs) throws Exception {
        long t0 = System.nanoTime();
        Map<String, Integer> want = new LinkedHashMap<>();
        for (String s : specs) {
            int i = s.lastIndexOf(':');
            want.put(s.substring(0, i), Integer.parseInt(s.substring(i + 1)));
        }
        try (Admin a = admin(bootstrap)) {
            List<NewTopic> nts = new ArrayList<>();
            want.forEach((n, p) -> nts.add(new NewTopic(n, p, (short) 1)));
            for (var e : a.createTopics(nts).values().entrySet()) {
                try {
                    e.getValue().get();
                } catch (ExecutionException ex) {
                    if (!(ex.getCause() instanceof TopicExistsException)) throw ex;
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (true) {
                boolean ok = true;
                try {
                    var d = a.describeTopics(want.keySet()).allTopicNames().get();
                    for (var e : want.entrySet()) {
                        var td = d.get(e.getKey());
                        if (td == null || td.partitions().size() != e.getValue()) { ok = false; break; }
                        for (var tp : td.partitions()) if (tp.leader() == null || tp.leader().id() < 0) ok = false;
                    }
                } catch (ExecutionException ex) {
                    ok = false;
                }
                if (ok) break;
                if (System.nanoTime() > deadline) throw new RuntimeException("topics not ready: " + want);
                Thread.sleep(50);
            }
        }
        System.out.printf(Locale.ROOT, "{\"topics\": %d, \"duration_ms\": %.1f}%n", want.size(),
                (System.nanoTime() - t0) / 1e6);
    }

    /** Time creating COUNT one-partition topics through the admin API, BATCH per CreateTopics request. */
    static void createTopics(String bootstrap, String prefix, int count, int batch) throws Exception {
        try (Admin a = admin(bootstrap)) {
            a.describeCluster().nodes().get(); // connect + metadata before the clock starts
            long t0 = System.nanoTime();
            int created = 0;
            for (int i = 0; i < count; i += batch) {
                List<NewTopic> nts = new ArrayList<>();
                for (int j = i; j < Math.min(count, i + batch); j++)
                    nts.add(new NewTopic(String.format("%s%05d", prefix, j), 1, (short) 1));
                a.createTopics(nts).all().get();
                created += nts.size();
            }
            double ms = (System.nanoTime() - t0) / 1e6;
            System.out.printf(Locale.ROOT, "{\"topics\": %d, \"batch\": %d, \"duration_ms\": %.1f, \"ops_per_sec\": %.1f}%n",
                    created, batch, ms, created / (ms / 1000.0));
        }
    }

    /**
     * End-to-end latency at a fixed rate: one producer sends RATE records/s (linger.ms=0) for SECONDS,
     * each carrying its intended send time (System.nanoTime, so no coordinated omission); a consumer
     * in the same JVM (same clock), assigned to every partition from the end, records receive - intended.
     * The first WARMUP_SECONDS are not counted.
     */
    static void latency(String bootstrap, String topic, int rate, double seconds, int size, String acks,
                        double warmup) throws Exception {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
        cp.put(ConsumerConfig.FETCH_MIN_BYTES_CONFIG, "1");
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "500");
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, acks);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "all".equals(acks) ? "true" : "false");

        Histogram hist = new Histogram(TimeUnit.SECONDS.toMicros(60), 3);
        long total = (long) (rate * seconds);
        long intervalNs = 1_000_000_000L / rate;
        AtomicLong errors = new AtomicLong();

        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp, new ByteArrayDeserializer(), new ByteArrayDeserializer());
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (var pi : consumer.partitionsFor(topic, Duration.ofSeconds(60))) tps.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(tps);
            consumer.seekToEnd(tps);
            for (TopicPartition tp : tps) consumer.position(tp, Duration.ofSeconds(60)); // resolve now
            producer.partitionsFor(topic); // metadata before the clock starts

            long start = System.nanoTime() + 100_000_000L;
            long warmEnd = start + (long) (warmup * 1e9);
            Thread sender = new Thread(() -> {
                for (long i = 0; i < total; i++) {
                    long due = start + i * intervalNs;
                    long now;
                    while ((now = System.nanoTime()) < due) {
                        long left = due - now;
                        if (left > 200_000) LockSupport.parkNanos(left - 100_000);
                        else Thread.onSpinWait();
                    }
                    byte[] v = new byte[size];
                    ByteBuffer.wrap(v).putLong(due);
                    producer.send(new ProducerRecord<>(topic, v), (md, ex) -> { if (ex != null) errors.incrementAndGet(); });
                }
                producer.flush();
            }, "fixed-rate-sender");
            sender.start();

            long received = 0, counted = 0;
            long deadline = start + (long) (seconds * 1e9) + TimeUnit.SECONDS.toNanos(30);
            while (received + errors.get() < total && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    long now = System.nanoTime();
                    long due = ByteBuffer.wrap(r.value()).getLong();
                    received++;
                    if (due >= warmEnd) {
                        hist.recordValue(Math.max(0, Math.min((now - due) / 1000, hist.getHighestTrackableValue())));
                        counted++;
                    }
                }
            }
            sender.join();
            double elapsed = (Math.min(System.nanoTime(), start + (long) (seconds * 1e9)) - start) / 1e9;
            System.out.printf(Locale.ROOT,
                    "{\"sent\": %d, \"received\": %d, \"counted\": %d, \"errors\": %d, \"rate\": %d, \"records_per_sec\": %.1f, "
                            + "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, \"mean_ms\": %.3f}%n",
                    total, received, counted, errors.get(), rate, received / Math.max(elapsed, 1e-9),
                    hist.getValueAtPercentile(50) / 1000.0, hist.getValueAtPercentile(99) / 1000.0,
                    hist.getValueAtPercentile(99.9) / 1000.0, hist.getMaxValue() / 1000.0, hist.getMean() / 1000.0);
            if (received < total) System.exit(1);
        }
    }

    /**
     * A steady producer for the failover benchmark (e2e/bench/cluster.py): RATE records/s of SIZE
     * bytes, idempotent, acks=all, until stdin reaches EOF (or MAX_SECONDS pass). Every ack's
     * System.nanoTime() (CLOCK_MONOTONIC on Linux, the clock of Python's time.monotonic_ns()) is
     * kept; at the end they are written to ACK_FILE, one per line, in ack order. While it runs it
     * prints "ready NANOS" after the first ack, then "acks COUNT LAST_ACK_NANOS ERRORS" every 50 ms,
     * so the driver can tell when acks flow again after it killed a broker.
     */
    static void failover(String bootstrap, String topic, int rate, int size, String ackFile, double maxSeconds)
            throws Exception {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        // everything else is the client's default (linger.ms 5, request.timeout.ms 30000,
        // delivery.timeout.ms 120000, retry.backoff.ms 100 .. 1000, reconnect.backoff.ms 50 .. 1000)
        int cap = (int) Math.min(Integer.MAX_VALUE - 8, (long) rate * (long) Math.ceil(maxSeconds + 60));
        long[] acks = new long[cap];
        java.util.concurrent.atomic.AtomicInteger nAcks = new java.util.concurrent.atomic.AtomicInteger();
        AtomicLong lastAck = new AtomicLong();
        AtomicLong errors = new AtomicLong();
        AtomicLong sent = new AtomicLong();
        java.util.concurrent.atomic.AtomicReference<String> firstError = new java.util.concurrent.atomic.AtomicReference<>();
        CountDownLatch firstAck = new CountDownLatch(1);
        CountDownLatch stop = new CountDownLatch(1);
        Thread stdin = new Thread(() -> {
            try {
                while (System.in.read() >= 0) { }
            } catch (java.io.IOException ignored) { }
            stop.countDown();
        }, "stdin-eof");
        stdin.setDaemon(true);
        stdin.start();

        long t0 = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
            producer.partitionsFor(topic); // metadata before the clock starts
            long start = System.nanoTime() + 50_000_000L;
            long intervalNs = 1_000_000_000L / rate;
            long endBy = start + (long) (maxSeconds * 1e9);
            Callback cb = (md, ex) -> {
                long now = System.nanoTime();
                if (ex != null) {
                    errors.incrementAndGet();
                    firstError.compareAndSet(null, ex.toString());
                    return;
                }
                int i = nAcks.getAndIncrement();
                if (i < acks.length) acks[i] = now;
                lastAck.set(now);
                firstAck.countDown();
            };
            Thread sender = new Thread(() -> {
                byte[] v = new byte[size];
                for (long i = 0; ; i++) {
                    long due = start + i * intervalNs;
                    if (stop.getCount() == 0 || due > endBy) break;
                    long now;
                    while ((now = System.nanoTime()) < due) {
                        long left = due - now;
                        if (left > 200_000) LockSupport.parkNanos(left - 100_000);
                        else Thread.onSpinWait();
                    }
                    ByteBuffer.wrap(v).putLong(i);
                    try {
                        producer.send(new ProducerRecord<>(topic, v), cb);
                        sent.incrementAndGet();
                    } catch (Exception ex) {
                        errors.incrementAndGet();
                        firstError.compareAndSet(null, ex.toString());
                    }
                }
            }, "fixed-rate-sender");
            sender.start();
            if (!firstAck.await(60, TimeUnit.SECONDS)) throw new RuntimeException("no ack within 60 s");
            System.out.println("ready " + lastAck.get());
            System.out.flush();
            while (sender.isAlive()) {
                System.out.println("acks " + nAcks.get() + " " + lastAck.get() + " " + errors.get());
                System.out.flush();
                sender.join(50);
            }
            producer.flush();
        }
        int n = Math.min(nAcks.get(), acks.length);
        try (var w = new java.io.BufferedWriter(new java.io.FileWriter(ackFile))) {
            for (int i = 0; i < n; i++) { w.write(Long.toString(acks[i])); w.write('\n'); }
        }
        String fe = firstError.get();
        System.out.printf(Locale.ROOT, "{\"sent\": %d, \"acked\": %d, \"errors\": %d, \"rate\": %d, \"seconds\": %.1f, "
                        + "\"first_error\": %s}%n", sent.get(), nAcks.get(), errors.get(), rate,
                (System.nanoTime() - t0) / 1e9, fe == null ? "null" : "\"" + fe.replace("\\", "\\\\").replace("\"", "'") + "\"");
    }
}
