"""The `fjord` command line: Kafka property names, clear startup errors, and `fjord dev`."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port
from kclients import create_topic, http_get, produce, read_partition, unique

pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
FJORD = os.environ.get("FJORD_BIN", str(REPO / "target" / "release" / "fjord"))


def run(*args, timeout=30):
    return subprocess.run([FJORD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("override, named", [
    ("log.retention.mss=5", "log.retention.mss"),           # unknown key
    ("num.partitions=many", "num.partitions"),              # invalid number
    ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
    ("listeners=PLAINTEXT://127.0.0.1", "listener"),        # no port
])
def test_bad_settings_are_a_clear_startup_error(tmp_path, override, named):
    p = run("broker", "--override", "node.id=1", "--override", f"log.dirs={tmp_path}",
            "--override", "listeners=PLAINTEXT://127.0.0.1:0", "--override", override)
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
log.dirs={tmp_path / 'data'}
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


def test_dev_prints_bootstrap_and_metrics_url(tmp_path):
    port, http = free_port(), free_port()
    proc = subprocess.Popen([FJORD, "dev", "--port", str(port), "--http-port", str(http)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        text = "".join(lines)
        assert f"127.0.0.1:{port}" in text, text
        m = re.search(r"http://\S+/metrics", text)
        assert m, text
        bootstrap = f"127.0.0.1:{port}"
        topic = create_topic(bootstrap, unique("dev"), 1)
        produce(bootstrap, topic, ["hello"])
        status, body = http_get(m.group(0))
        assert status == 200 and "fjord_topic_records_in_total" in body
        assert (tmp_path / ".fjord-dev").is_dir(), "dev keeps its data in ./.fjord-dev"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
