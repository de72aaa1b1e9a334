"""The pytest side of the harness (e2e/harness/): fixtures that start a real broker process or
cluster (Fjord or Apache Kafka) through it and hand the tests objects to talk to them and to
crash/restart them; a process that dies unexpectedly fails the test.

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
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import cluster as cluster_mod
from harness import kafka
from harness.fjord import FjordBroker
from harness.kafka import KafkaBroker
from harness.paths import fjord_bin_path
from harness.procs import StartError

# harness/kube.py: the kube_cluster fixture (a Kubernetes control plane + node agent).
pytest_plugins = ["harness.kube"]

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
# Broker processes (harness/broker.py, fjord.py, kafka.py); here only the pytest side

_LIVE_BROKERS = []  # every broker and cluster node started, for the checks after each test
BROKER_CLASSES = {"fjord": FjordBroker, "kafka": KafkaBroker}


class BrokerFactory:
    def __init__(self, tmp_root, label):
        self.tmp_root = Path(tmp_root)
        self.label = label
        self.brokers = []

    def start(self, overrides=None, timeout=None):
        root = Path(tempfile.mkdtemp(prefix=f"{TARGET}-{self.label}-", dir=self.tmp_root))
        try:
            b = BROKER_CLASSES[TARGET](root, overrides)
        except StartError as e:  # the binary or the start script is missing
            pytest.fail(str(e), pytrace=False)
        self.brokers.append(b)
        _LIVE_BROKERS.append(b)
        try:
            b.start(timeout)
        except StartError as e:
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
        except StartError as e:
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
        require_path("KAFKA_HOME")
        require_env("KAFKA_CLASSPATH")
        return kafka.run_class(cls, *args, timeout=timeout, input=input, check=check, env=env)


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
    return [f"fjord e2e target: {TARGET}" + (f" (FJORD_BIN={fjord_bin_path()})" if TARGET == "fjord" else "")]


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
