"""Acceptance-test harness: starts a real broker process (Fjord or Apache Kafka) and
hands the tests an object to talk to it and to crash/restart it.

Target: env FJORD_TEST_TARGET = fjord (default) | kafka.
  fjord: binary from FJORD_BIN (default <repo>/target/release/fjord).
  kafka: e2e/kafka/start / e2e/kafka/stop (Apache Kafka 4.x, single KRaft node).
Tools (KAFKA_HOME, KAFKA_CLASSPATH, FJORD_NODE_PATH, FJORD_PY, KCAT, PROMTOOL, PROMETHEUS,
FJORD_PROM_OPERATOR_CRDS, FJORD_KUBE_BIN, DASHBOARD_LINTER) come from the environment or, if unset
there, from ~/.cache/fjord/env.sh (FJORD_ENV_SH overrides the path); write it with
`bash e2e/provision/all`. A missing tool fails the test, never skips it.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent.parent
sys.path.insert(0, str(TESTS_DIR))

import kproto  # noqa: E402
import cluster as cluster_mod  # noqa: E402

# kube.py: the kube_cluster fixture (a Kubernetes control plane + node agent).
pytest_plugins = ["kube"]

TOOL_VARS = (
    "KAFKA_HOME",
    "KAFKA_CLASSPATH",
    "FJORD_NODE_PATH",
    "FJORD_PY",
    "KCAT",
    "PROMTOOL",
    "PROMETHEUS",
    "FJORD_PROM_OPERATOR_CRDS",
    "FJORD_KUBE_BIN",
    "DASHBOARD_LINTER",
)
TARGET = os.environ.get("FJORD_TEST_TARGET", "fjord").strip().lower()
if TARGET not in ("fjord", "kafka"):
    raise pytest.UsageError(f"FJORD_TEST_TARGET must be 'fjord' or 'kafka', not {TARGET!r}")
NODE_ID = 1


def _env_sh_path():
    return Path(os.environ.get("FJORD_ENV_SH", str(Path.home() / ".cache" / "fjord" / "env.sh")))


def _load_env_sh():
    """Source env.sh in bash and take the tool variables it exports (unless already set)."""
    path = _env_sh_path()
    if not path.is_file():
        return f"{path} does not exist (run: bash e2e/provision/all)"
    p = subprocess.run(
        ["bash", "-c", 'set -a; . "$1" >/dev/null 2>&1; env -0', "_", str(path)], capture_output=True, timeout=60
    )
    if p.returncode != 0:
        return f"sourcing {path} failed: {p.stderr.decode(errors='replace')}"
    for item in p.stdout.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep and (k in TOOL_VARS) and not os.environ.get(k):
            os.environ[k] = v
    return None


ENV_SH_PROBLEM = None
if not all(os.environ.get(k) for k in TOOL_VARS):
    ENV_SH_PROBLEM = _load_env_sh()


def require_env(name):
    """The value of a tool variable; fails the test loudly if it is missing."""
    v = os.environ.get(name)
    if not v:
        pytest.fail(
            f"{name} is not set and not in {_env_sh_path()}"
            + (f" ({ENV_SH_PROBLEM})" if ENV_SH_PROBLEM else "")
            + "; provision with: bash e2e/provision/all",
            pytrace=False,
        )
    return v


def require_path(name, executable=False):
    v = require_env(name)
    p = Path(v)
    if not p.exists() or (executable and not os.access(p, os.X_OK)):
        pytest.fail(
            f"{name}={v} does not exist{' or is not executable' if executable else ''}; "
            "provision with: bash e2e/provision/all",
            pytrace=False,
        )
    return p


# ---------------------------------------------------------------------------
# Ports / waiting


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _http_status(url, timeout=2.0):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# ---------------------------------------------------------------------------
# Broker processes

_LIVE_BROKERS = []


class BrokerStartError(AssertionError):
    pass


class Broker:
    """A broker process under test. bootstrap is "127.0.0.1:PORT"."""

    target = None

    def __init__(self, root, overrides):
        self.root = Path(root)
        self.overrides = dict(overrides or {})
        self.host = "127.0.0.1"
        self.port = free_port()
        self.bootstrap = f"{self.host}:{self.port}"
        self.metrics_url = None
        self.http_base = None
        self.expect_running = False
        self.starts = 0

    # subclass API: _start(), pid, log_files()
    def start(self, timeout=None):
        self.starts += 1
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
                raise BrokerStartError(f"{self.target} exited while waiting for Metadata\n{self.log_tail()}")
            try:
                md = a.list_topics(timeout=5)
                if md.brokers:
                    return
                last = "Metadata lists no brokers"
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(0.2)
        raise BrokerStartError(
            f"{self.target} on {self.bootstrap}: Metadata not usable within {timeout}s: {last}\n{self.log_tail()}"
        )

    def alive(self):
        pid = self.pid
        return pid is not None and _pid_alive(pid)

    def kill9(self):
        """SIGKILL the broker process (no shutdown hooks, nothing flushed by the broker)."""
        pid = self.pid
        assert pid is not None and self.alive(), f"kill9: {self.target} is not running"
        self.expect_running = False
        os.kill(pid, signal.SIGKILL)
        self._reap(pid, 30)

    def restart(self, timeout=None):
        """Start again on the same data dir and ports (stopping it first if it runs)."""
        if self.alive():
            self.stop()
        return self.start(timeout)

    def _reap(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.target} pid {pid} still alive {timeout}s after the signal")
            time.sleep(0.05)

    def log_tail(self, lines=40):
        return kproto.log_tail(self.log_files(), lines, self.target)

    def rss_bytes(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, TypeError):
            pass
        return None

    def __repr__(self):
        return f"<{self.target} broker {self.bootstrap} pid={self.pid}>"


class FjordBroker(Broker):
    target = "fjord"

    def __init__(self, root, overrides):
        super().__init__(root, overrides)
        binary = os.environ.get("FJORD_BIN") or str(REPO / "target" / "release" / "fjord")
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            pytest.fail(
                f"fjord binary {binary} not found: build it with `cargo build --release -p fjord` or set FJORD_BIN",
                pytrace=False,
            )
        self.binary = binary
        self.http_port = free_port()
        self.http_base = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"{self.http_base}/metrics"
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "broker.log"
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def command(self):
        cmd = [
            self.binary,
            "broker",
            "--override",
            f"node.id={NODE_ID}",
            "--override",
            f"listeners=PLAINTEXT://{self.bootstrap}",
            "--override",
            f"log.dirs={self.data_dir}",
            "--override",
            f"fjord.http.listen=127.0.0.1:{self.http_port}",
        ]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def _start(self, timeout=None):
        timeout = timeout or 30
        cmd = self.command()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== e2e: start #{self.starts} at {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        kproto.wait_fjord_ready(
            self.proc,
            self.host,
            self.port,
            _http_status,
            self.http_base + "/ready",
            time.monotonic() + timeout,
            "fjord",
            self.log_tail,
            BrokerStartError,
        )

    def kill9(self):
        assert self.proc is not None and self.proc.poll() is None, "kill9: fjord is not running"
        self.expect_running = False
        self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout=20):
        self.expect_running = False
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== e2e: no exit {timeout}s after SIGTERM, sending SIGKILL\n".encode())
            self.proc.kill()
            self.proc.wait(30)
            return "killed"

    def log_files(self):
        return [self.log_path]


class KafkaBroker(Broker):
    target = "kafka"

    def __init__(self, root, overrides):
        super().__init__(root, overrides)
        self.controller_port = free_port()
        self.data_dir = self.root / "data"
        self.start_script = REPO / "e2e" / "kafka" / "start"
        self.stop_script = REPO / "e2e" / "kafka" / "stop"
        if not self.start_script.exists():
            pytest.fail(f"{self.start_script} is missing", pytrace=False)

    @property
    def pid(self):
        try:
            return int((self.root / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self):
        super().kill9()
        # The JVM is dead (maybe a zombie until init reaps it, which `kill -0` in
        # e2e/kafka/start would take for alive): drop the pid file.
        (self.root / "pid").unlink(missing_ok=True)

    def _start(self, timeout=None):
        cmd = [str(self.start_script), str(self.root), str(self.port), str(self.controller_port)]
        cmd += [f"{k}={v}" for k, v in self.overrides.items()]
        env = dict(os.environ)
        env["KAFKA_START_TIMEOUT"] = str(timeout or 120)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=(timeout or 120) + 60)
        if p.returncode != 0:
            raise BrokerStartError(
                f"e2e/kafka/start failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{self.log_tail()}"
            )

    def stop(self, timeout=30):
        self.expect_running = False
        if not self.alive():
            return None
        env = dict(os.environ, KAFKA_STOP_TIMEOUT=str(timeout))
        subprocess.run(
            [str(self.stop_script), str(self.root)], capture_output=True, text=True, env=env, timeout=timeout + 30
        )
        return 0

    def log_files(self):
        return [self.root / "logs" / "stdout.log", self.root / "logs" / "server.log"]


BROKER_CLASSES = {"fjord": FjordBroker, "kafka": KafkaBroker}


class BrokerFactory:
    def __init__(self, tmp_root, label):
        self.tmp_root = Path(tmp_root)
        self.label = label
        self.brokers = []

    def start(self, overrides=None, timeout=None):
        root = Path(tempfile.mkdtemp(prefix=f"{TARGET}-{self.label}-", dir=self.tmp_root))
        b = BROKER_CLASSES[TARGET](root, overrides)
        self.brokers.append(b)
        _LIVE_BROKERS.append(b)
        try:
            b.start(timeout)
        except BrokerStartError as e:
            pytest.fail(f"could not start {TARGET} broker: {e}", pytrace=False)
        return b

    def close(self):
        dead = [b for b in self.brokers if b.expect_running and not b.alive()]
        for b in self.brokers:
            try:
                b.stop()
            finally:
                if b in _LIVE_BROKERS:
                    _LIVE_BROKERS.remove(b)
        if dead:
            pytest.fail(
                "broker process died unexpectedly: " + "; ".join(f"{b!r}\n{b.log_tail()}" for b in dead), pytrace=False
            )


def _keep_dirs():
    return os.environ.get("FJORD_TEST_KEEP", "") not in ("", "0")


@pytest.fixture(scope="session")
def e2e_tmp():
    base = os.environ.get("FJORD_TEST_TMP")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="fjord-e2e-", dir=base or None))
    yield d
    if not _keep_dirs():
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def broker_factory(e2e_tmp, request):
    """Function-scoped: factory.start(overrides={...}) -> a fresh broker on a fresh data dir."""
    f = BrokerFactory(e2e_tmp, request.node.name[:40].replace("/", "_").replace("[", "_").replace("]", ""))
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_broker_factory(e2e_tmp, request):
    f = BrokerFactory(e2e_tmp, request.module.__name__)
    yield f
    f.close()


# Kafka defaults a new group to a 3 s initial rebalance delay; 0 keeps group tests quick.
DEFAULT_OVERRIDES = {"group.initial.rebalance.delay.ms": "0"}


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    """One broker shared by the tests of a module."""
    return module_broker_factory.start(DEFAULT_OVERRIDES)


class _PytestClusterFactory(cluster_mod.ClusterFactory):
    def start(self, n=3, overrides=None, voters=None, timeout=240):
        try:
            return super().start(n=n, overrides=overrides, voters=voters, timeout=timeout)
        except cluster_mod.ClusterStartError as e:
            pytest.fail(f"could not start a {n}-node {TARGET} cluster: {e}", pytrace=False)


@pytest.fixture
def cluster_factory(e2e_tmp, request):
    """Function-scoped: factory.start(n=3, overrides={...}, voters=None) -> a fresh multi-node
    cluster (see cluster.py). Every node is SIGKILLed at teardown; a node that died although it
    should have been running fails the test."""
    f = _PytestClusterFactory(
        e2e_tmp,
        request.node.name[:40].replace("/", "_").replace("[", "_").replace("]", ""),
        TARGET,
        registry=_LIVE_BROKERS,
    )
    yield f
    dead = f.close()
    if dead:
        pytest.fail(
            "cluster node died unexpectedly: " + "; ".join(f"{nd!r}\n{nd.log_tail()}" for nd in dead), pytrace=False
        )


@pytest.fixture(autouse=True)
def _broker_must_survive():
    """Every test: a broker the test did not kill on purpose must still be alive after it."""
    yield
    dead = [b for b in _LIVE_BROKERS if b.expect_running and not b.alive()]
    for b in dead:
        b.expect_running = False
    if dead:
        pytest.fail(
            "broker process died during the test: " + "; ".join(f"{b!r}\n{b.log_tail()}" for b in dead), pytrace=False
        )


# ---------------------------------------------------------------------------
# Tools


class Tools:
    @property
    def py(self):
        return str(require_path("FJORD_PY", executable=True))

    @property
    def node_path(self):
        return str(require_path("FJORD_NODE_PATH"))

    @property
    def kcat(self):
        return str(require_path("KCAT", executable=True))

    @property
    def promtool(self):
        return str(require_path("PROMTOOL", executable=True))

    @property
    def dashboard_linter(self):
        return str(require_path("DASHBOARD_LINTER", executable=True))

    @property
    def prometheus(self):
        """The Prometheus server binary (API only, no web UI); see prometheus.py."""
        return str(require_path("PROMETHEUS", executable=True))

    @property
    def prom_operator_crds(self):
        """Folder of the Prometheus Operator's ServiceMonitor, PodMonitor, PrometheusRule CRDs."""
        return require_path("FJORD_PROM_OPERATOR_CRDS")

    def run_class(self, cls, *args, timeout=120, input=None, check=True, env=None):
        """Run a Kafka Java tool class through e2e/kafka/run-class."""
        from kclients import run

        require_path("KAFKA_HOME")
        require_env("KAFKA_CLASSPATH")
        return run(
            [REPO / "e2e" / "kafka" / "run-class", cls, *args], timeout=timeout, input=input, check=check, env=env
        )


@pytest.fixture(scope="session")
def tools():
    return Tools()


@pytest.fixture(scope="session")
def target():
    return TARGET


# ---------------------------------------------------------------------------
# Hooks


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fjord_only: checks Fjord-specific behaviour (its HTTP "
        "endpoints/metrics); deselected with a reason when FJORD_TEST_TARGET=kafka",
    )


def pytest_report_header(config):
    return [
        f"fjord e2e target: {TARGET}"
        + (f" (FJORD_BIN={os.environ.get('FJORD_BIN') or REPO / 'target/release/fjord'})" if TARGET == "fjord" else "")
    ]


def pytest_collection_modifyitems(config, items):
    if TARGET != "fjord":
        skip = pytest.mark.skip(reason=f"fjord-only check; target is {TARGET}")
        for item in items:
            if "fjord_only" in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # Under the fjord target nothing may be skipped: a skip there is a failure.
    if TARGET == "fjord" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"skipping is not allowed under FJORD_TEST_TARGET=fjord: {reason}"
    if rep.failed and _LIVE_BROKERS:
        for b in list(_LIVE_BROKERS):
            rep.sections.append(
                (f"{b.target} broker {b.bootstrap} log tail ({rep.when})", f"data: {b.data_dir}\n{b.log_tail()}")
            )
