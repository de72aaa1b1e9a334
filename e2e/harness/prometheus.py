"""A real Prometheus server for the observability tests: started on a free loopback port with a
generated config, its TSDB in a temp folder, queried through its HTTP API.

    from harness.prometheus import Prometheus, PrometheusError, PromQueryError

    prom = Prometheus(binary, root,                      # binary: tools.prometheus (env PROMETHEUS)
                      targets=[{"address": "127.0.0.1:9644",          # host:port of /metrics
                                "labels": {"namespace": "e2e", "cluster": "dev", "pod": "fjord-1"},
                                "job": "fjord",                        # default "fjord"
                                "metrics_path": "/metrics"}],          # default "/metrics"
                      scrape_interval="1s",              # also the scrape timeout
                      evaluation_interval=None,          # default: the scrape interval
                      rule_files=["dashboards/alerts.yaml"],
                      scrape_self=False,                 # True: job "prometheus" scrapes the server
                      self_labels=None,                  # target labels of that job
                      extra_args=())                     # more command-line flags
    prom.start(timeout=60)           # returns self once /-/ready answers 200; `with Prometheus(...)`
                                     # starts it too and stops it on exit
    prom.url                         # "http://127.0.0.1:PORT"
    prom.targets_up(timeout=60)      # waits until every configured target's last scrape was
                                     # healthy; returns /api/v1/targets' activeTargets
    prom.query("sum(up)")            # instant query (POST /api/v1/query); `time=` unix seconds
    prom.query_range(expr, start, end, step)   # POST /api/v1/query_range; step seconds or "15s"
    prom.alerts()                    # /api/v1/alerts: [{"labels", "annotations", "state", "activeAt",
                                     # "value"}], state "pending" or "firing"
    prom.wait_for_alert("FjordLag", state="firing", labels={"group": "g"}, timeout=120)
                                     # the first matching alert (labels: a subset to match)
    prom.rules()                     # /api/v1/rules groups (each rule's health and lastError)
    prom.targets()                   # /api/v1/targets activeTargets
    prom.log_tail(lines=40)          # the server's log
    prom.stop()                      # SIGTERM (SIGKILL after 20 s); idempotent

Results are the API's `data.result`: for a vector a list of {"metric": {labels}, "value": [ts, "v"]},
for a matrix {"metric", "values": [[ts, "v"], ...]}, for a scalar or string the [ts, "v"] pair. The
API's warnings of the last call are in `prom.last_warnings`.

Every series scraped from a target carries the target's `labels`, plus `job` and `instance` (the
address), as the Kubernetes ServiceMonitor gives broker series `namespace`, `cluster` and `pod`.
Errors: `PromQueryError` (an AssertionError) when the API rejects an expression (bad syntax,
unknown function: `error_type` "bad_data", `error` the parser's message), `PrometheusError` (also
an AssertionError) for anything else: the server exits or never becomes ready, a target is not up
in time, an alert does not come; the message carries the server's log tail and, for waits, what
the server last reported. The config is JSON (which is YAML) in `root/prometheus.yml`, the TSDB in
`root/data`, the log in `root/prometheus.log`. A watchdog SIGKILLs the server if the test
process dies.

No pytest dependency (like cluster.py).
"""

import json
import os
import signal
import subprocess
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from harness.ports import free_port
from harness.procs import Watchdog, pid_alive


class PrometheusError(AssertionError):
    pass


class PromQueryError(PrometheusError):
    """The API answered status "error" for an expression."""

    def __init__(self, message, error_type=None, error=None):
        super().__init__(message)
        self.error_type = error_type
        self.error = error


class Prometheus:
    def __init__(
        self,
        binary,
        root,
        targets=(),
        scrape_interval="1s",
        evaluation_interval=None,
        rule_files=(),
        scrape_self=False,
        self_labels=None,
        extra_args=(),
    ):
        self.binary = str(binary)
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.targets_config = [dict(t) for t in targets]
        for t in self.targets_config:
            if not t.get("address"):
                raise ValueError(f"target without an address: {t}")
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_files = [str(Path(f).resolve()) for f in rule_files]
        self.scrape_self = scrape_self
        self.self_labels = dict(self_labels or {})
        self.extra_args = list(extra_args)
        self.config_path = self.root / "prometheus.yml"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "prometheus.log"
        self.port = None
        self.url = None
        self.proc = None
        self.last_warnings = []
        self._watchdog = None

    # ----------------------------------------------------------------- process

    def config(self):
        """The generated configuration (a dict; written as JSON)."""
        jobs = {}
        for t in self.targets_config:
            key = (t.get("job", "fjord"), t.get("metrics_path", "/metrics"))
            jobs.setdefault(key, []).append(
                {"targets": [t["address"]], "labels": {k: str(v) for k, v in t.get("labels", {}).items()}}
            )
        scrape_configs = [
            {"job_name": job, "metrics_path": path, "static_configs": groups} for (job, path), groups in jobs.items()
        ]
        names = [job for job, _ in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"one job with two metrics paths: {sorted(jobs)}")
        if self.scrape_self:
            scrape_configs.append(
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.port}"], "labels": self.self_labels}],
                }
            )
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": scrape_configs,
        }

    def start(self, timeout=60):
        if not (Path(self.binary).is_file() and os.access(self.binary, os.X_OK)):
            raise PrometheusError(
                f"Prometheus binary {self.binary} is missing or not executable "
                "(provision it: bash e2e/provision/all prometheus)"
            )
        # Prometheus takes rule_files as globs: a missing file would be no rules, silently.
        missing = [f for f in self.rule_files if not Path(f).is_file()]
        if missing:
            raise PrometheusError(f"rule files missing: {missing}")
        if self._watchdog is None:
            self._watchdog = Watchdog(self.root)
        # A free port can be taken by someone else before Prometheus binds it: try a few.
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.config_path.write_text(json.dumps(self.config(), indent=1))
            cmd = [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *self.extra_args,
            ]
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== e2e: start at {_time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            (self.root / "pid").write_text(str(self.proc.pid))
            try:
                self._wait_ready(timeout)
                return self
            except PrometheusError:
                if self.proc.poll() is not None and "address already in use" in self.log_tail(5) and attempt < 2:
                    continue
                self.stop()
                raise

    def _wait_ready(self, timeout):
        deadline = _time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise PrometheusError(
                    f"Prometheus exited with code {self.proc.returncode} during start\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"/-/ready returned {r.status}"
            except urllib.error.HTTPError as e:
                last = f"/-/ready returned {e.code}"
            except OSError as e:
                last = e
            if _time.monotonic() > deadline:
                raise PrometheusError(
                    f"Prometheus on {self.url} not ready within {timeout}s: {last}\n{self.log_tail()}"
                )
            _time.sleep(0.1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and pid_alive(self.proc.pid)

    def stop(self, timeout=20):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines=40):
        try:
            data = self.log_path.read_bytes()[-200_000:].decode(errors="replace").splitlines()
        except OSError:
            return f"(no Prometheus log at {self.log_path})"
        return f"--- Prometheus: last {min(lines, len(data))} lines of {self.log_path} ---\n" + "\n".join(data[-lines:])

    # --------------------------------------------------------------------- API

    def _api(self, path, params=None, post=False, timeout=30):
        """The `data` of an API answer; raises PromQueryError for status "error"."""
        url = f"{self.url}/api/v1/{path}"
        body = urllib.parse.urlencode(params or {}).encode()
        if post:
            req = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
        else:
            req = urllib.request.Request(url + (f"?{body.decode()}" if params else ""))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            if not raw.startswith(b"{"):
                raise PrometheusError(
                    f"{path} {params or ''}: HTTP {e.code}: {raw[:2000]!r}\n{self.log_tail()}"
                ) from None
        except OSError as e:
            state = "running" if self.alive() else f"exited ({self.proc and self.proc.returncode})"
            raise PrometheusError(f"{path} {params or ''}: {e} (Prometheus {state})\n{self.log_tail()}") from None
        doc = json.loads(raw)
        self.last_warnings = doc.get("warnings", []) + doc.get("infos", [])
        if doc.get("status") != "success":
            what = params.get("query") if params else None
            raise PromQueryError(
                f"{path} {what if what is not None else ''}: {doc.get('errorType')}: {doc.get('error')}",
                doc.get("errorType"),
                doc.get("error"),
            )
        return doc["data"]

    def query(self, expr, time=None):
        params = {"query": expr}
        if time is not None:
            params["time"] = f"{float(time):.3f}"
        return self._api("query", params, post=True)["result"]

    def query_range(self, expr, start, end, step):
        params = {"query": expr, "start": f"{float(start):.3f}", "end": f"{float(end):.3f}", "step": str(step)}
        return self._api("query_range", params, post=True)["result"]

    def selectors(self, expr):
        """Every series selector in `expr`, as standalone PromQL (from /api/v1/parse_query's
        AST): what the expression reads, to check each exists."""
        out = []

        def walk(node):
            if isinstance(node, dict):
                if node.get("type") in ("vectorSelector", "matrixSelector"):
                    out.append(
                        "{"
                        + ", ".join(f"{m['name']}{m['type']}{json.dumps(m['value'])}" for m in node["matchers"])
                        + "}"
                    )
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self._api("parse_query", {"query": expr}, post=True))
        return sorted(set(out))

    def alerts(self):
        return self._api("alerts")["alerts"]

    def rules(self):
        return self._api("rules")["groups"]

    def targets(self):
        return self._api("targets", {"state": "active"})["activeTargets"]

    def targets_up(self, timeout=60):
        """Wait until every configured target (and the server itself with scrape_self) has been
        scraped and its last scrape was healthy; returns the active targets."""
        want = len(self.targets_config) + (1 if self.scrape_self else 0)
        deadline = _time.monotonic() + timeout
        while True:
            ts = self.targets()
            if len(ts) >= want and all(t.get("health") == "up" for t in ts):
                return ts
            if not self.alive():
                raise PrometheusError(f"Prometheus exited\n{self.log_tail()}")
            if _time.monotonic() > deadline:
                lines = [
                    f"  {t.get('scrapeUrl')} {t.get('labels')} health={t.get('health')} "
                    f"lastError={t.get('lastError')!r}"
                    for t in ts
                ]
                raise PrometheusError(
                    f"targets not all up within {timeout}s ({len(ts)} of {want} "
                    "known):\n" + "\n".join(lines) + f"\n{self.log_tail()}"
                )
            _time.sleep(0.25)

    def wait_for_alert(self, name, state="firing", labels=None, timeout=120):
        """The first alert named `name` in `state` whose labels include `labels`."""
        labels = {k: str(v) for k, v in (labels or {}).items()}
        deadline = _time.monotonic() + timeout
        while True:
            alerts = self.alerts()
            for a in alerts:
                al = a.get("labels", {})
                if (
                    al.get("alertname") == name
                    and a.get("state") == state
                    and all(al.get(k) == v for k, v in labels.items())
                ):
                    return a
            if not self.alive():
                raise PrometheusError(f"Prometheus exited while waiting for alert {name}\n{self.log_tail()}")
            if _time.monotonic() > deadline:
                rule_state = [
                    f"  {r.get('name')} health={r.get('health')} state={r.get('state')} "
                    f"lastError={r.get('lastError')!r} query={r.get('query')!r}"
                    for g in self.rules()
                    for r in g.get("rules", [])
                    if r.get("name") == name
                ]
                active = [f"  {a.get('labels')} state={a.get('state')} value={a.get('value')}" for a in alerts]
                raise PrometheusError(
                    f"alert {name} {labels} not {state} within {timeout}s\nrule:\n"
                    + ("\n".join(rule_state) or "  (no rule of that name loaded)")
                    + "\nactive alerts:\n"
                    + ("\n".join(active) or "  (none)")
                    + f"\n{self.log_tail()}"
                )
            _time.sleep(0.5)


def fast_rules(src, dst, duration="3s"):
    """A copy of rule file `src` at `dst` with every `for:` cut to `duration`, so a test sees
    alerts fire without waiting out production durations (promtool test rules checks those)."""
    import re

    text = Path(src).read_text()
    fast, n = re.subn(r"(?m)^(\s+for:\s*)\S+", lambda m: m.group(1) + duration, text)
    if n == 0:
        raise ValueError(f"no `for:` in {src}")
    Path(dst).write_text(fast)
    return Path(dst)


def selectors_without_series(prom, groups, parse=False):
    """([f"{alert}: {selector}" for each series selector of the groups' alert expressions that
    matches no series in `prom`], number of selectors asked). parse: also run each expression
    itself (PromQueryError if it does not parse)."""
    missing, checked = [], 0
    for g in groups:
        for rule in g["rules"]:
            if parse:
                prom.query(rule["expr"])
            for sel in prom.selectors(rule["expr"]):
                checked += 1
                if not prom.query(sel):
                    missing.append(f"{rule['alert']}: {sel}")
    return missing, checked
