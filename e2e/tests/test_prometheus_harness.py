"""Self-test of prometheus.py: a real Prometheus scrapes itself and one broker; the broker's
series carry the static target labels, range queries and rule evaluation work, and a bad
expression is reported as a PromQueryError."""

import json
import time

import pytest

from harness.prometheus import Prometheus, PromQueryError

pytestmark = pytest.mark.fjord_only

LABELS = {"namespace": "e2e", "cluster": "harness", "pod": "fjord-0"}


@pytest.fixture(scope="module")
def prom(broker, tools, e2e_tmp):
    root = e2e_tmp / "prometheus-harness"
    root.mkdir()
    rules = root / "rules.yml"
    rules.write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "harness",
                        "rules": [
                            {
                                "alert": "HarnessBrokerUp",
                                "expr": "fjord_uptime_seconds > 0",
                                "for": "1s",
                                "labels": {"severity": "info"},
                                "annotations": {"summary": "{{ $labels.pod }} is up"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    address = broker.http_base.removeprefix("http://")
    p = Prometheus(
        tools.prometheus,
        root,
        targets=[{"address": address, "labels": LABELS}],
        scrape_interval="1s",
        rule_files=[rules],
        scrape_self=True,
        self_labels={"namespace": "monitoring"},
    )
    with p:
        yield p


def test_scrapes_broker_with_target_labels(prom, broker):
    targets = prom.targets_up(timeout=60)
    assert {t["labels"]["job"] for t in targets} == {"fjord", "prometheus"}
    res = prom.query("fjord_uptime_seconds")
    assert len(res) == 1, res
    metric, value = res[0]["metric"], float(res[0]["value"][1])
    assert {k: metric.get(k) for k in LABELS} == LABELS, metric
    assert metric["job"] == "fjord" and metric["instance"] == broker.http_base.removeprefix("http://")
    assert value > 0
    up = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
    assert up == {"fjord": "1", "prometheus": "1"}
    assert prom.query('up{job="prometheus"}')[0]["metric"]["namespace"] == "monitoring"


def test_query_range_and_scalar(prom):
    prom.targets_up(timeout=60)
    time.sleep(3)  # a few more scrapes
    end = time.time()
    series = prom.query_range('fjord_uptime_seconds{cluster="harness"}', end - 3, end, "1s")
    assert len(series) == 1 and len(series[0]["values"]) >= 2, series
    values = [float(v) for _, v in series[0]["values"]]
    assert values == sorted(values) and values[-1] > values[0], values
    ts, v = prom.query("scalar(count(up))")
    assert float(v) == 2


def test_alert_fires_with_target_labels(prom):
    a = prom.wait_for_alert("HarnessBrokerUp", labels={"cluster": "harness", "pod": "fjord-0"}, timeout=60)
    assert a["labels"]["severity"] == "info" and a["labels"]["namespace"] == "e2e"
    assert a["annotations"]["summary"] == "fjord-0 is up"
    assert any(r["name"] == "HarnessBrokerUp" and r["health"] == "ok" for g in prom.rules() for r in g["rules"])


def test_bad_expression_is_a_query_error(prom):
    with pytest.raises(PromQueryError) as e:
        prom.query("sum(rate(fjord_uptime_seconds[1m])")
    assert e.value.error_type == "bad_data", e.value
