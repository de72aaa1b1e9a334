"""The `fjord` command line: Kafka property names, clear startup errors, and `fjord dev`."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.clients import http_get, produce, read_partition, unique
from harness.devcluster import base_ports
from harness.ports import free_port

pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
FJORD = os.environ.get("FJORD_BIN", str(REPO / "target" / "release" / "fjord"))


def run(*args, timeout=30):
    return subprocess.run([FJORD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "override, named",
    [
        ("log.retention.mss=5", "log.retention.mss"),  # unknown key
        ("num.partitions=many", "num.partitions"),  # invalid number
        ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
        ("listeners=PLAINTEXT://127.0.0.1", "listener"),  # no port
        # Not built: refused, never served unauthenticated (GSSAPI is Kafka's default mechanism).
        ("listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", "SASL mechanism GSSAPI is not built"),
        # TLS is built, from PEM stores only: a Kafka default of JKS is named.
        ("listener.security.protocol.map=PLAINTEXT:SSL", "ssl.keystore.type (listener PLAINTEXT)=JKS"),
    ],
)
def test_bad_settings_are_a_clear_startup_error(tmp_path, override, named):
    p = run(
        "broker",
        "--override",
        "node.id=1",
        "--override",
        f"log.dirs={tmp_path}",
        "--override",
        "listeners=PLAINTEXT://127.0.0.1:0",
        "--override",
        override,
    )
    assert p.returncode != 0, p.stdout + p.stderr
    assert named in p.stderr, p.stderr


def test_server_properties_file(tmp_path):
    port, http = free_port(), free_port()
    props = tmp_path / "server.properties"
    props.write_text(f"""# a Kafka server.properties
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{free_port()}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{free_port()}
controller.listener.names=CONTROLLER
log.dirs={tmp_path / "data"}
num.partitions=3
fjord.http.listen=127.0.0.1:{http}
""")
    proc = subprocess.Popen([FJORD, "broker", "--config", str(props)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if http_get(f"http://127.0.0.1:{http}/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        bootstrap = f"127.0.0.1:{port}"
        topic = unique("props")
        produce(bootstrap, topic, ["a"], partition=2)  # auto-created with num.partitions=3
        assert read_partition(bootstrap, topic, 2, 0, 1)[0][1] == b"a"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert proc.returncode == 0, out


def test_dev_starts_a_three_node_cluster(tmp_path):
    """`fjord dev` is three nodes, each broker and controller: RF 3 and min ISR 2 by default."""
    from harness.clients import admin

    # Every port dev uses (its nodes' Kafka, controller and HTTP ports) must be free, not
    # only the bases: a random base's neighbours were sometimes taken.
    port, http = base_ports()
    log = tmp_path / "dev.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [FJORD, "dev", "--port", str(port), "--http-port", str(http)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        text = "".join(lines)
        assert "3 nodes" in text, f"{text}\n--- stderr ---\n{log.read_text()[-4000:]}"
        bootstrap = f"127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}"
        assert bootstrap in text, text
        urls = re.findall(r"http://\S+/metrics", text)
        assert len(urls) == 3, text
        md = admin(bootstrap).list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3]
        topic = unique("dev")
        produce(bootstrap, topic, ["hello"])  # auto-created with the dev defaults
        md = admin(bootstrap).list_topics(topic, timeout=10)
        part = md.topics[topic].partitions[0]
        assert sorted(part.replicas) == [1, 2, 3] and sorted(part.isrs) == [1, 2, 3], part
        total = 0
        for u in urls:
            status, body = http_get(u)
            assert status == 200
            total += sum(
                float(line.split()[-1])
                for line in body.splitlines()
                if line.startswith("fjord_topic_records_in_total") and topic in line
            )
        assert total == 1, "the leader counted the record once"
        assert (tmp_path / ".fjord-dev" / "node-1").is_dir(), "dev keeps its data in ./.fjord-dev"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
