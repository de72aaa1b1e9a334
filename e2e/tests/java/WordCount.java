// A Kafka Streams word count (kafka-streams from Maven Central), for test_streams.py and the
// benchmark row streams-wordcount-eos (e2e/bench/bench.py). One file,
// launched from source (Java 11+):
//   java -cp "$KAFKA_CLASSPATH" e2e/tests/java/WordCount.java \
//       BOOTSTRAP APPLICATION_ID GUARANTEE STATE_DIR INPUT_TOPIC OUTPUT_TOPIC [COMMIT_INTERVAL_MS [REPLICATION]]
// GUARANTEE: exactly_once_v2 | at_least_once (processing.guarantee).
// Topology: lines (String values) -> lower-case words split on non-word characters ->
// groupBy word (repartition topic APPLICATION_ID-words-repartition) -> count (RocksDB store
// "counts", changelog APPLICATION_ID-counts-changelog) -> OUTPUT_TOPIC (key word: String,
// value count: Long, 8 bytes big-endian).
// Internal topics get replication.factor REPLICATION (default 3; the benchmark's single node: 1);
// the consumer's session timeout is 6 s, so a member killed with SIGKILL leaves the group quickly.
// Output lines (the test waits for and asserts on them):
//   STATE <old> <new> <epoch ms>    every KafkaStreams state change
//   RUNNING <epoch ms>              the instance reached RUNNING (after each rebalance)
//   UNCAUGHT <thread> <exception>   a stream thread died (the client then shuts down)
//   ERROR <epoch ms>                the client is in state ERROR: the process exits with 1
// SIGTERM closes the client (shutdown hook) and exits 0.

import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

public class WordCount {
    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println(
                    "usage: WordCount BOOTSTRAP APPLICATION_ID GUARANTEE STATE_DIR INPUT OUTPUT"
                            + " [COMMIT_INTERVAL_MS [REPLICATION]]");
            System.exit(2);
        }
        String bootstrap = args[0], appId = args[1], guarantee = args[2], stateDir = args[3];
        String input = args[4], output = args[5];
        String commitMs = args.length > 6 ? args[6] : "100";
        String replication = args.length > 7 ? args[7] : "3";

        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitMs);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, replication);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "6000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");

        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
                .filter((key, word) -> !word.isEmpty())
                .groupBy((key, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((newState, oldState) -> {
            long now = System.currentTimeMillis();
            System.out.println("STATE " + oldState + " " + newState + " " + now);
            if (newState == KafkaStreams.State.RUNNING) {
                System.out.println("RUNNING " + now);
            } else if (newState == KafkaStreams.State.ERROR) {
                System.out.println("ERROR " + now);
                failed.countDown();
            }
            System.out.flush();
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.out.println("UNCAUGHT " + Thread.currentThread().getName() + " " + e);
            e.printStackTrace(System.out);
            System.out.flush();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close()));
        streams.start();
        failed.await();
        // The client is in ERROR (a stream thread died): close it and exit non-zero.
        streams.close();
        System.out.flush();
        Runtime.getRuntime().halt(1);
    }
}
