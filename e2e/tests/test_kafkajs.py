"""The kafkajs seed program (create topic, produce, consume in a group) against the broker."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.clients import run, watermarks


def test_kafkajs_seed_program(broker, tools):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed", pytrace=False)
    r = run(
        [node, Path(__file__).resolve().parent / "js" / "seed.js"],
        timeout=120,
        env={
            "NODE_PATH": tools.node_path,
            "FJORD_BOOTSTRAP": broker.bootstrap,
            "FJORD_TIMEOUT_MS": "60000",
            "KAFKAJS_NO_PARTITIONER_WARNING": "1",
        },
        check=False,
    )
    assert r.rc == 0, f"kafkajs seed program failed\n{r.describe()}"
    assert "Hello KafkaJS!" in r.stdout, r.describe()

    produced = [json.loads(m) for m in re.findall(r"^PRODUCED (.*)$", r.stdout, re.M)]
    received = [json.loads(m) for m in re.findall(r"^RECEIVED (.*)$", r.stdout, re.M)]
    assert len(produced) == 1 and len(produced[0]) == 1, r.describe()
    meta = produced[0][0]
    assert meta["topicName"] == "my-topic" and meta["errorCode"] == 0, r.describe()
    hello = [m for m in received if m["value"] == "Hello KafkaJS!"]
    assert hello, r.describe()
    assert hello[0]["topic"] == "my-topic"
    assert hello[0]["partition"] == meta["partition"], r.describe()
    assert str(hello[0]["offset"]) == str(meta["baseOffset"]), r.describe()

    topics = json.loads(re.search(r"^METADATA (.*)$", r.stdout, re.M).group(1))
    assert len(topics) == 1 and topics[0]["name"] == "my-topic", topics
    assert sorted(p["partitionId"] for p in topics[0]["partitions"]) == [0, 1, 2], topics
    assert all(p["leader"] >= 0 for p in topics[0]["partitions"]), topics

    # The broker really holds exactly that one record.
    total = 0
    for p in range(3):
        low, high = watermarks(broker.bootstrap, "my-topic", p)
        total += high - low
    assert total == 1, f"expected exactly 1 record in my-topic, watermarks say {total}"
