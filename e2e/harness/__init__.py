"""The one test harness of e2e/: every acceptance test, the benchmarks and the checker start,
stop, crash and pause their processes through it.

    procs       process lifecycle: start/wait ready/stop/kill -9/SIGSTOP/SIGCONT/restart on the
                same data, log tails for failures, a watchdog for a test run that dies
    ports       free loopback ports
    broker      one broker (Fjord or Apache Kafka) for a test module
    cluster     multi-node clusters (RF 3) for replication tests and the checker
    fjord       Fjord nodes: `fjord broker --override ...`
    kafka       Apache Kafka nodes (e2e/kafka/start), the Kafka Java tools runner, DescribeQuorum
    devcluster  `fjord dev --nodes 3` as a user runs it
    kproto      raw Kafka protocol frames (ApiVersions probe, malformed input)
    probe       stdlib ApiVersions probe, also a script for e2e/kafka/start
    clients     confluent-kafka client helpers, subprocess runner, /metrics parsing
    workload    acking producers, group consumers and the acked-vs-read checks
    kube        a Kubernetes control plane + node agent (pytest plugin) and the operator helpers
    prometheus  a real Prometheus server; dashboards: the Grafana dashboards' queries, rendering
    otlp        an OTLP/HTTP receiver

Importable because the entry scripts set PYTHONPATH to e2e/ (pytest: `pythonpath` in
e2e/tests/pytest.ini). Only broker.py's and kube.py's fixtures-facing parts know pytest.
"""
