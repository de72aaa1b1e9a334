// Transactional producers and consumers of Apache Kafka's own client (kafka-clients), for
// test_transactions.py. One file, launched from source (Java 11+):
//   java -cp "$KAFKA_CLASSPATH" e2e/tests/java/Transactions.java SCENARIO BOOTSTRAP TOPIC TXID ...
// Scenarios:
//   commit-abort-commit BOOTSTRAP TOPIC TXID PARTITIONS PER_PARTITION
//       transaction 1 commits, 2 aborts, 3 commits (PER_PARTITION records on every partition
//       each); then reads the topic read_committed and read_uncommitted
//   fence BOOTSTRAP TOPIC TXID
//       producer A sends in an open transaction; producer B with the same transactional.id
//       initializes; A commits (and must be fenced); B commits; then reads both ways
//   hang BOOTSTRAP TOPIC TXID TIMEOUT_MS COUNT
//       sends COUNT records to partition 0 in a transaction with transaction.timeout.ms =
//       TIMEOUT_MS, prints OPEN and waits, never committing, to be killed with SIGKILL
// Output lines (the test asserts on them):
//   SENT <txn> <partition> <offset> <value>     acknowledged send
//   COMMITTED <txn> | ABORTED <txn>             commitTransaction / abortTransaction returned
//   FENCED <exception class> <message>          commitTransaction of a fenced producer threw
//   NOT-FENCED <what>                           ... or did not throw the expected exception
//   END <isolation> <partition> <offset>        Consumer.endOffsets (ListOffsets latest)
//   READ <isolation> <partition> <offset> <value>
//   OPEN <epoch ms>                              (hang) the transaction is open
//   DONE
// Any other failure: a stack trace on stderr and a non-zero exit.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Transactions {
    static final Duration READ_TIMEOUT = Duration.ofSeconds(60);

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: Transactions SCENARIO BOOTSTRAP TOPIC TXID ...");
            System.exit(2);
        }
        String bootstrap = args[1], topic = args[2], txid = args[3];
        switch (args[0]) {
            case "commit-abort-commit" ->
                commitAbortCommit(bootstrap, topic, txid, Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            case "fence" -> fence(bootstrap, topic, txid);
            case "hang" -> hang(bootstrap, topic, txid, Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            default -> {
                System.err.println("unknown scenario " + args[0]);
                System.exit(2);
            }
        }
        System.out.println("DONE");
        System.out.flush();
        // Skip the clients' shutdown hooks and lingering threads: everything is closed.
        Runtime.getRuntime().halt(0);
    }

    static KafkaProducer<String, String> producer(String bootstrap, String txid, Map<String, String> extra) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("transactional.id", txid);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("linger.ms", "5");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    /** Send and wait for the ack (the records are on the broker, the transaction still open). */
    static void send(KafkaProducer<String, String> p, String label, String topic, int partition, String value)
            throws Exception {
        RecordMetadata md = p.send(new ProducerRecord<>(topic, partition, null, value)).get();
        System.out.printf("SENT %s %d %d %s%n", label, md.partition(), md.offset(), value);
    }

    static void commitAbortCommit(String bootstrap, String topic, String txid, int partitions, int perPartition)
            throws Exception {
        try (KafkaProducer<String, String> p = producer(bootstrap, txid, Map.of())) {
            p.initTransactions();
            for (int txn = 1; txn <= 3; txn++) {
                p.beginTransaction();
                for (int i = 0; i < perPartition; i++) {
                    for (int part = 0; part < partitions; part++) {
                        send(p, "t" + txn, topic, part, "t" + txn + "-p" + part + "-" + i);
                    }
                }
                if (txn == 2) {
                    p.abortTransaction();
                    System.out.println("ABORTED t" + txn);
                } else {
                    p.commitTransaction();
                    System.out.println("COMMITTED t" + txn);
                }
            }
        }
        read(bootstrap, topic, partitions, "read_committed");
        read(bootstrap, topic, partitions, "read_uncommitted");
    }

    static void fence(String bootstrap, String topic, String txid) throws Exception {
        KafkaProducer<String, String> a = producer(bootstrap, txid, Map.of());
        a.initTransactions();
        a.beginTransaction();
        for (int i = 0; i < 5; i++) {
            send(a, "A", topic, 0, "A-" + i);
        }
        try (KafkaProducer<String, String> b = producer(bootstrap, txid, Map.of())) {
            b.initTransactions();
            System.out.println("INITIALIZED B");
            try {
                a.commitTransaction();
                System.out.println("NOT-FENCED commitTransaction of A returned");
            } catch (ProducerFencedException e) {
                System.out.println("FENCED " + e.getClass().getSimpleName() + " " + e.getMessage());
            } catch (Exception e) {
                System.out.println("NOT-FENCED " + e.getClass().getName() + " " + e.getMessage());
            }
            a.close(Duration.ZERO);
            b.beginTransaction();
            for (int i = 0; i < 5; i++) {
                send(b, "B", topic, 0, "B-" + i);
            }
            b.commitTransaction();
            System.out.println("COMMITTED B");
        }
        read(bootstrap, topic, 1, "read_committed");
        read(bootstrap, topic, 1, "read_uncommitted");
    }

    static void hang(String bootstrap, String topic, String txid, int timeoutMs, int count) throws Exception {
        KafkaProducer<String, String> p =
                producer(bootstrap, txid, Map.of("transaction.timeout.ms", String.valueOf(timeoutMs)));
        p.initTransactions();
        p.beginTransaction();
        for (int i = 0; i < count; i++) {
            send(p, "open", topic, 0, "open-" + i);
        }
        System.out.println("OPEN " + System.currentTimeMillis());
        System.out.flush();
        // The test SIGKILLs this process; the bound only keeps an orphan from living on.
        Thread.sleep(120_000);
        System.err.println("hang: not killed within 120 s");
        Runtime.getRuntime().halt(4);
    }

    /** Reads every partition from the beginning to its end offset at the given isolation level. */
    static void read(String bootstrap, String topic, int partitions, String isolation) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("isolation.level", isolation);
        c.put("enable.auto.commit", "false");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int part = 0; part < partitions; part++) {
                tps.add(new TopicPartition(topic, part));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            // Under read_committed the end offset is the last stable offset.
            Map<TopicPartition, Long> end = new HashMap<>(consumer.endOffsets(tps));
            for (TopicPartition tp : tps) {
                System.out.printf("END %s %d %d%n", isolation, tp.partition(), end.get(tp));
            }
            long deadline = System.nanoTime() + READ_TIMEOUT.toNanos();
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    // The position moves past control records and aborted data too.
                    if (consumer.position(tp) < end.get(tp)) {
                        done = false;
                    }
                }
                if (done) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("read " + isolation + ": not at " + end + " within " + READ_TIMEOUT);
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    System.out.printf("READ %s %d %d %s%n", isolation, r.partition(), r.offset(), r.value());
                }
            }
        }
    }
}
