"""One broker (Fjord or Apache Kafka) on a fresh data dir, for the tests of a module.

    b = BROKER_CLASSES[target](root, overrides)   # free ports picked now, kept across restarts
    b.start(); b.bootstrap                         # "127.0.0.1:PORT", once Metadata lists it
    b.kill9(); b.restart(); b.stop(); b.alive(); b.log_tail()

More client listeners: overrides={EXTRA_LISTENERS: "SSL"} (a comma list of NAME or
NAME:PROTOCOL; PROTOCOL defaults to NAME) gives each a free port of its own next to PLAINTEXT,
which stays the first listener, the inter-broker one and `bootstrap`. The key is the harness's,
never passed to the broker; `b.listeners` maps every client listener name to "127.0.0.1:PORT".
Settings of those listeners (ssl.*, listener.name.<name>.*) are ordinary overrides.

The subclasses (fjord.FjordBroker, kafka.KafkaBroker) say how the process starts; conftest.py
wraps this in the `broker` and `broker_factory` fixtures.
"""

import time
from pathlib import Path

from harness.ports import free_port
from harness.procs import Process, StartError

NODE_ID = 1
# An overrides key read by the harness, not the broker: the extra client listeners (see above).
EXTRA_LISTENERS = "e2e.extra.listeners"


class Broker(Process):
    """A broker process under test. bootstrap is "127.0.0.1:PORT"."""

    target = None

    def __init__(self, root, overrides):
        super().__init__()
        self.label = self.target
        self.root = Path(root)
        self.overrides = dict(overrides or {})
        self.host = "127.0.0.1"
        self.port = free_port()
        self.bootstrap = f"{self.host}:{self.port}"
        self.listeners = {"PLAINTEXT": self.bootstrap}
        self.listener_protocols = {"PLAINTEXT": "PLAINTEXT"}
        for spec in str(self.overrides.pop(EXTRA_LISTENERS, "")).split(","):
            name, _, protocol = spec.strip().partition(":")
            if name:
                self.listeners[name] = f"{self.host}:{free_port()}"
                self.listener_protocols[name] = protocol or name
        self.data_dir = self.root / "data"
        self.metrics_url = None
        self.http_base = None

    def listener_settings(self, controller=None):
        """listeners, advertised.listeners, listener.security.protocol.map and
        inter.broker.listener.name naming every client listener (and `controller`, a
        "NAME://host:port" listener the broker binds but does not advertise); {} when there is no
        extra listener, so a plain broker starts exactly as before."""
        if len(self.listeners) == 1:
            return {}
        client = ",".join(f"{n}://{a}" for n, a in self.listeners.items())
        settings = {
            "listeners": client,
            "advertised.listeners": client,
            "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in self.listener_protocols.items()),
            "inter.broker.listener.name": "PLAINTEXT",
        }
        if controller:
            settings["listeners"] += f",{controller}"
            settings["listener.security.protocol.map"] += f",{controller.split('://')[0]}:PLAINTEXT"
        return settings

    # subclass API: _start(timeout), stop(), log_files()
    def start(self, timeout=None):
        self._start(timeout)
        self.expect_running = True
        self._wait_usable()
        return self

    def _wait_usable(self, timeout=30):
        """Metadata answers and lists this broker (for Kafka: registration done)."""
        from confluent_kafka.admin import AdminClient

        a = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.target} exited while waiting for Metadata\n{self.log_tail()}")
            try:
                md = a.list_topics(timeout=5)
                if md.brokers:
                    return
                last = "Metadata lists no brokers"
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(0.2)
        raise StartError(
            f"{self.target} on {self.bootstrap}: Metadata not usable within {timeout}s: {last}\n{self.log_tail()}"
        )

    def restart(self, timeout=None):
        """Start again on the same data dir and ports (stopping it first if it runs)."""
        if self.alive():
            self.stop()
        return self.start(timeout)

    def __repr__(self):
        return f"<{self.target} broker {self.bootstrap} pid={self.pid}>"
