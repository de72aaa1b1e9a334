// The kafkajs seed program (shared/seeds: "Node.js Example: Producing and Consuming
// Messages"), steps 2-4 run in one process against the broker in FJORD_BOOTSTRAP:
//   create topic 'my-topic' (3 partitions, replication factor 1) with the admin client,
//   send 'Hello KafkaJS!' with a producer,
//   consume in group 'test-group' from the beginning and print the message.
// The client calls are the seed's own; only the broker address comes from the environment,
// errors exit non-zero instead of being logged, and the program exits 0 once the message
// has arrived (or 3 after FJORD_TIMEOUT_MS, default 60000).
// Machine-readable lines for the test: "PRODUCED {...}", "RECEIVED {...}".
const { Kafka } = require('kafkajs');

const broker = process.env.FJORD_BOOTSTRAP;
if (!broker) {
  console.error('FJORD_BOOTSTRAP is not set');
  process.exit(2);
}
const timeoutMs = parseInt(process.env.FJORD_TIMEOUT_MS || '60000', 10);
const timer = setTimeout(() => {
  console.error(`TIMEOUT: 'Hello KafkaJS!' not received within ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);

// Initialize Kafka client
const kafka = new Kafka({
  clientId: 'my-app',
  brokers: [broker],
});

// Step 2: Create a Kafka Topic Using Node.js
const createTopic = async () => {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const created = await admin.createTopics({
      topics: [
        {
          topic: 'my-topic', // Name of the topic
          numPartitions: 3, // Number of partitions for the topic
          replicationFactor: 1, // Replication factor
        },
      ],
    });
    console.log('Topic created successfully', created);
    const md = await admin.fetchTopicMetadata({ topics: ['my-topic'] });
    console.log('METADATA ' + JSON.stringify(md.topics));
  } finally {
    await admin.disconnect();
  }
};

// Step 3: Kafka Producer in Node.js
const produceMessage = async () => {
  const producer = kafka.producer();
  await producer.connect();
  const result = await producer.send({
    topic: 'my-topic',
    messages: [{ value: 'Hello KafkaJS!' }],
  });
  console.log('PRODUCED ' + JSON.stringify(result));
  await producer.disconnect();
};

// Step 4: Kafka Consumer in Node.js
const consumeMessages = async () => {
  const consumer = kafka.consumer({ groupId: 'test-group' });
  let done;
  const received = new Promise((resolve) => { done = resolve; });
  consumer.on(consumer.events.CRASH, (e) => {
    console.error('CONSUMER CRASH', e.payload && e.payload.error);
  });
  await consumer.connect();
  await consumer.subscribe({ topic: 'my-topic', fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      console.log({
        partition,
        offset: message.offset,
        value: message.value.toString(),
      });
      console.log('RECEIVED ' + JSON.stringify({
        topic, partition, offset: message.offset, value: message.value.toString(),
      }));
      if (message.value.toString() === 'Hello KafkaJS!') done();
    },
  });
  await received;
  await consumer.disconnect();
};

const main = async () => {
  await createTopic();
  await produceMessage();
  await consumeMessages();
  clearTimeout(timer);
  console.log('DONE');
  process.exit(0);
};

main().catch((e) => {
  console.error('FAILED', e);
  process.exit(1);
});
