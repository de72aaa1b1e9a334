// kafkajs transactions against the broker in FJORD_BOOTSTRAP, for test_transactions.py:
//   transaction 1: 5 records to FJORD_TOPIC partition 0 + sendOffsets (FJORD_GROUP,
//                  FJORD_INPUT_TOPIC partition 0 at offset 5), committed;
//   transaction 2: 5 records + sendOffsets at offset 10, aborted;
//   transaction 3: the record 'end', committed;
// then a kafkajs consumer (its default isolation: read committed) in a group of its own reads
// FJORD_TOPIC from the beginning up to 'end', and the admin client fetches FJORD_GROUP's offsets.
// Exits 0 when done, 1 on an error, 3 after FJORD_TIMEOUT_MS (default 60000).
// Lines for the test: "SENT <txn> {...}" (the send's record metadata), "COMMITTED <txn>",
// "ABORTED <txn>", "RECEIVED {...}", "OFFSETS-BEFORE {...}" and "OFFSETS {...}" (FJORD_GROUP's
// committed offsets before and after the transactions), "DONE".
const { Kafka, logLevel } = require('kafkajs');

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
};
const broker = env('FJORD_BOOTSTRAP');
const topic = env('FJORD_TOPIC');
const inputTopic = env('FJORD_INPUT_TOPIC');
const group = env('FJORD_GROUP');
const transactionalId = env('FJORD_TXID');
const timeoutMs = parseInt(process.env.FJORD_TIMEOUT_MS || '60000', 10);
const timer = setTimeout(() => {
  console.error(`TIMEOUT: not done within ${timeoutMs} ms`);
  process.exit(3);
}, timeoutMs);

const kafka = new Kafka({ clientId: 'fjord-e2e-txn', brokers: [broker], logLevel: logLevel.WARN });

const runTransaction = async (producer, name, values, offset, end) => {
  const txn = await producer.transaction();
  const sent = await txn.send({
    topic,
    messages: values.map((value) => ({ value, partition: 0 })),
  });
  console.log(`SENT ${name} ` + JSON.stringify(sent));
  if (offset !== null) {
    await txn.sendOffsets({
      consumerGroupId: group,
      topics: [{ topic: inputTopic, partitions: [{ partition: 0, offset: String(offset) }] }],
    });
  }
  if (end === 'commit') {
    await txn.commit();
    console.log(`COMMITTED ${name}`);
  } else {
    await txn.abort();
    console.log(`ABORTED ${name}`);
  }
};

const produce = async () => {
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    await runTransaction(producer, 't1', [0, 1, 2, 3, 4].map((i) => `committed-${i}`), 5, 'commit');
    await runTransaction(producer, 't2', [0, 1, 2, 3, 4].map((i) => `aborted-${i}`), 10, 'abort');
    await runTransaction(producer, 't3', ['end'], null, 'commit');
  } finally {
    await producer.disconnect();
  }
};

const consume = async () => {
  const consumer = kafka.consumer({ groupId: `${group}-reader` });
  let done;
  const sawEnd = new Promise((resolve) => { done = resolve; });
  consumer.on(consumer.events.CRASH, (e) => {
    console.error('CONSUMER CRASH', e.payload && e.payload.error);
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const value = message.value.toString();
      console.log('RECEIVED ' + JSON.stringify({ partition, offset: message.offset, value }));
      if (value === 'end') done();
    },
  });
  await sawEnd;
  await consumer.disconnect();
};

const fetchOffsets = async (label) => {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [inputTopic] });
    console.log(`${label} ` + JSON.stringify(offsets));
  } finally {
    await admin.disconnect();
  }
};

// kafkajs 2.2.4's sendOffsets gives up on error code 16 (it names it NOT_COORDINATOR_FOR_GROUP
// but retries only 'NOT_COORDINATOR'), which a broker answers while the group's offsets
// partition is still being set up (the first group on a fresh broker); so the group's
// coordinator has to serve an OffsetFetch first.
const untilCoordinatorServes = async () => {
  for (let attempt = 1; ; attempt++) {
    try {
      await fetchOffsets('OFFSETS-BEFORE');
      return;
    } catch (e) {
      if (!e.retriable || attempt >= 50) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
};

const main = async () => {
  await untilCoordinatorServes();
  await produce();
  await consume();
  await fetchOffsets('OFFSETS');
  clearTimeout(timer);
  console.log('DONE');
  process.exit(0);
};

main().catch((e) => {
  console.error('FAILED', e);
  process.exit(1);
});
