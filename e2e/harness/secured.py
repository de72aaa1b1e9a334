"""Clients of secured listeners (test_tls.py, test_sasl.py): Kafka's console producer and
consumer with a --command-config file, librdkafka reads, and a librdkafka client that must be
refused."""

import time

import pytest

from harness.clients import KafkaException, Producer, read_partition

CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def console_produce(tools, bootstrap, topic, lines, props, *more):
    """ConsoleProducer of `lines`, configured by the file `props`: its result (it exits 0 even
    when nothing could be sent, so the caller reads its log)."""
    return tools.run_class(
        CONSOLE_PRODUCER,
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--command-config",
        props,
        *more,
        input="\n".join(lines) + "\n",
        timeout=90,
    )


def console_consume(tools, bootstrap, topic, n, props):
    """The first `n` values of `topic` read by ConsoleConsumer configured by `props`."""
    r = tools.run_class(
        CONSOLE_CONSUMER,
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--command-config",
        props,
        "--from-beginning",
        "--max-messages",
        str(n),
        "--timeout-ms",
        "30000",
        timeout=90,
    )
    assert f"Processed a total of {n} messages" in r.stderr, f"console consumer on {bootstrap}\n{r.describe()}"
    return r.stdout.splitlines()


def values(bootstrap, topic, n, conf=None):
    """The first `n` values of partition 0, decoded, read with librdkafka (`conf` added)."""
    return [v.decode() for _, v in read_partition(bootstrap, topic, 0, 0, n, timeout=30, conf=conf)]


def refused(bootstrap, conf, what, match=lambda e: True, timeout=10):
    """A librdkafka client that must get no Metadata, after reporting an error `match` accepts
    (through error_cb; its log is off, it retries every few ms): the errors it reported."""
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": lambda e: errors.append(str(e)), **conf})
    deadline = time.monotonic() + timeout
    while not any(map(match, errors)) and time.monotonic() < deadline:
        p.poll(0.2)
    assert any(map(match, errors)), f"{what}: no matching error within {timeout}s: {sorted(set(errors))}"
    try:
        md = p.list_topics(timeout=2)
    except KafkaException:
        return sorted(set(errors))
    pytest.fail(f"{what}: Metadata over {bootstrap} succeeded and lists brokers {md.brokers}")
