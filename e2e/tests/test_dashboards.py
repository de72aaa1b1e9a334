"""The Grafana dashboards in dashboards/: Grafana's dashboard linter (built from its Go module)
passes on each with --strict, and the rules of the observability issue hold: stable uids, the
datasource/namespace/cluster/pod variables, a title, description and unit on every panel,
every query on the templated data source and filtered by the variables, every rate over
$__rate_interval, only documented series. No broker needed."""

import json
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fjord_only

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
# uid -> file name; the uids are links people bookmark: never change them.
UIDS = {
    "fjord-cluster-overview": "fjord-cluster-overview.json",
    "fjord-topics": "fjord-topics.json",
    "fjord-consumer-groups": "fjord-consumer-groups.json",
    "fjord-operator": "fjord-operator.json",
}
EXTRA_VARS = {"fjord-topics": "topic", "fjord-consumer-groups": "group"}
# Each variable's values are those of the variables it depends on (operator pods have no cluster).
FILTERED_BY = {
    "namespace": [],
    "cluster": ["namespace"],
    "pod": ["namespace", "cluster"],
    "topic": ["namespace", "cluster"],
    "group": ["namespace", "cluster"],
}
DS = "${datasource}"
# The linter rules .lint may exclude: job/instance do not fit the namespace/cluster/pod model.
ALLOWED_EXCLUSIONS = {"template-job-rule", "template-instance-rule", "target-job-rule", "target-instance-rule"}
# Series without the cluster label: the operator's own (fjord_operator_resources has one).
NO_CLUSTER = re.compile(r"fjord_operator_(?!resources\b)")
METRIC = re.compile(r"\b((?:fjord|process)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b((?:fjord|process)_[a-z0-9_]+)\s*(\{[^}]*\})?")
RANGE_FN = re.compile(r"\b(rate|irate|increase|deriv)\(\s*[a-z0-9_]+\{[^}]*\}\s*\[([^\]]+)\]")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def load(name):
    return json.loads((DASHBOARDS / name).read_text())


def all_panels(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def targets(d):
    for p in all_panels(d):
        for t in p.get("targets", []):
            yield p, t


def documented():
    """Series names in docs/metrics.md (broker and operator tables) -> type."""
    text = (REPO / "docs" / "metrics.md").read_text()
    names = {}
    for block in ("metrics", "operator-metrics"):
        body = text.split(f"<!-- {block}:begin -->")[1].split(f"<!-- {block}:end -->")[0]
        for name, typ in re.findall(r"^\| `([a-z_0-9]+)` \| (\w+) \|", body, re.M):
            names[name] = typ
    assert names, "no metric rows found in docs/metrics.md"
    return names


@pytest.fixture(scope="module")
def dashboards():
    files = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert files == sorted(UIDS.values()), f"dashboards/ holds {files}, expected {sorted(UIDS.values())}"
    return {uid: load(name) for uid, name in UIDS.items()}


@pytest.mark.parametrize("name", sorted(UIDS.values()))
def test_dashboard_linter_strict(tools, name):
    p = subprocess.run(
        [tools.dashboard_linter, "lint", "--strict", str(DASHBOARDS / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, f"dashboard-linter lint --strict {name} failed:\n{p.stdout}{p.stderr}"


def test_linter_exclusions_are_only_job_and_instance():
    import yaml  # noqa: PLC0415  (PyYAML comes with the kubernetes client in the venv)

    cfg = yaml.safe_load((DASHBOARDS / ".lint").read_text())
    assert set(cfg) <= {"exclusions", "warnings"}, cfg
    assert not cfg.get("warnings"), "no rule may be downgraded to a warning"
    excl = cfg.get("exclusions") or {}
    assert set(excl) <= ALLOWED_EXCLUSIONS, f"excluded rules beyond job/instance: {set(excl) - ALLOWED_EXCLUSIONS}"
    for rule, entry in excl.items():
        assert (entry or {}).get("reason"), f"exclusion of {rule} has no reason"


def test_uids_are_stable_and_unique(dashboards):
    for uid, d in dashboards.items():
        assert d["uid"] == uid, f"{UIDS[uid]} has uid {d['uid']!r}, expected {uid!r}"
        assert "fjord" in d.get("tags", []), f"{uid}: missing tag fjord"
        assert d.get("schemaVersion", 0) >= 39, f"{uid}: schemaVersion {d.get('schemaVersion')}"
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles), titles
    for uid, d in dashboards.items():
        ids = [p["id"] for p in all_panels(d)]
        assert len(set(ids)) == len(ids), f"{uid}: duplicate panel ids"


def test_variables(dashboards):
    for uid, d in dashboards.items():
        tv = {v["name"]: v for v in d["templating"]["list"]}
        want = ["datasource", "namespace", "cluster", "pod"] + ([EXTRA_VARS[uid]] if uid in EXTRA_VARS else [])
        assert list(tv) == want, f"{uid}: variables {list(tv)}, expected {want}"
        ds = tv["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), f"{uid}: {ds}"
        for name in want[1:]:
            v = tv[name]
            assert v["type"] == "query", f"{uid}.{name}: {v['type']}"
            assert v["datasource"]["uid"] == DS, f"{uid}.{name}: datasource {v['datasource']}"
            q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            assert re.fullmatch(rf"label_values\((fjord|process)_[a-z_]+(\{{.*\}})?, {name}\)", q), f"{uid}.{name}: {q}"
            assert v["multi"] and v["includeAll"], f"{uid}.{name}: multi and includeAll expected"
            assert v["refresh"] == 2, f"{uid}.{name}: refresh on time range change expected"
            for before in FILTERED_BY[name] if uid != "fjord-operator" or name != "pod" else ["namespace"]:
                assert f'{before}=~"${before}"' in q, f"{uid}.{name}: {q} does not filter on ${before}"


def test_every_panel_has_title_description_unit_and_queries(dashboards):
    bad = []
    for uid, d in dashboards.items():
        for p in all_panels(d):
            if p["type"] == "row":
                continue
            where = f"{uid} / {p.get('title')!r}"
            if not p.get("title") or not p.get("description"):
                bad.append(f"{where}: title or description missing")
            if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                bad.append(f"{where}: no unit")
            if p.get("datasource", {}).get("uid") != DS:
                bad.append(f"{where}: panel datasource {p.get('datasource')}")
            if not p.get("targets"):
                bad.append(f"{where}: no queries")
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("uid") != DS:
                    bad.append(f"{where} {t.get('refId')}: target datasource {t.get('datasource')}")
                if not t.get("expr", "").strip():
                    bad.append(f"{where} {t.get('refId')}: empty query")
    assert not bad, "\n".join(bad)


def test_every_query_filters_on_the_variables(dashboards):
    bad = []
    for uid, d in dashboards.items():
        extra = EXTRA_VARS.get(uid)
        for p, t in targets(d):
            expr = t["expr"]
            for m in SELECTOR.finditer(expr):
                name, matchers = m.group(1), m.group(2) or ""
                need = ["namespace", "pod"] + ([] if NO_CLUSTER.match(name) else ["cluster"])
                missing = [v for v in need if f'{v}=~"${v}"' not in matchers]
                if missing:
                    bad.append(f"{uid} / {p['title']!r}: {name}{matchers} lacks {missing}")
            if (
                extra
                and f'{extra}=~"${extra}"' not in expr
                and not any(f'{extra}=~"${extra}"' in tt["expr"] for tt in p["targets"])
            ):
                bad.append(f"{uid} / {p['title']!r}: no query of the panel filters on ${extra}")
    assert not bad, "\n".join(bad)


def test_every_rate_uses_rate_interval(dashboards):
    bad = []
    for uid, d in dashboards.items():
        for p, t in targets(d):
            expr = t["expr"]
            n_fn = len(re.findall(r"\b(?:rate|irate|increase)\(", expr))
            ranges = RANGE_FN.findall(expr)
            if n_fn != len([r for r in ranges if r[0] != "deriv"]):
                bad.append(f"{uid} / {p['title']!r}: a rate over something other than a plain selector: {expr}")
            bad += [
                f"{uid} / {p['title']!r}: {fn}(...[{r}]) should use [$__rate_interval]: {expr}"
                for fn, r in ranges
                if r != "$__rate_interval"
            ]
    assert not bad, "\n".join(bad)


def test_only_documented_series(dashboards):
    docs = documented()
    hist = {n for n, typ in docs.items() if typ == "histogram"}
    unknown = {}
    for uid, d in dashboards.items():
        for _p, t in targets(d):
            for n in METRIC.findall(t["expr"]):
                base = next((n[: -len(s)] for s in HIST_SUFFIXES if n.endswith(s) and n[: -len(s)] in hist), n)
                if base not in docs:
                    unknown.setdefault(base, set()).add(uid)
                elif base in hist and base == n:
                    unknown.setdefault(f"{n} (a histogram: use _bucket, _sum or _count)", set()).add(uid)
    assert not unknown, f"dashboards use series docs/metrics.md does not list: {unknown}"


def test_docs_show_every_panel_and_query(dashboards):
    doc = (REPO / "docs" / "dashboards.md").read_text()
    missing = []
    for uid, d in dashboards.items():
        if f"](dashboards/{uid}.png)" not in doc:
            missing.append(f"{uid}: picture line")
        for p, t in targets(d):
            if p["title"] not in doc:
                missing.append(f"{uid}: panel {p['title']!r}")
            if t["expr"] not in doc:
                missing.append(f"{uid} / {p['title']!r}: query {t['expr']}")
    assert not missing, "docs/dashboards.md lacks:\n" + "\n".join(sorted(set(missing)))
