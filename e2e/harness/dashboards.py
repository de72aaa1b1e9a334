"""The dashboards in `dashboards/` as the observability tests and the picture script see them:
every panel's queries with Grafana's variables filled in, run against a real Prometheus, and
rendered to a PNG per dashboard (panel layout, titles and units from the JSON).

    from harness.dashboards import load_dashboards, panels, queries, render

    for path, dash in load_dashboards():             # (Path, parsed JSON), every dashboards/*.json
        for panel in panels(dash):                   # panels with targets, rows flattened
            for q in queries(panel, VARS):           # expressions with $vars substituted
                prom.query(q)
        render(dash, prom, start, end, "out.png", VARS)

`e2e/dashboards/render` runs the loaded observability test with FJORD_DASHBOARD_PNGS set,
which renders into docs/dashboards/. No pytest dependency."""

import json
import math
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"

# "All" for every selector variable; a rate window fit for a 1 s scrape interval (Grafana's
# $__rate_interval is at least four scrape intervals).
DEFAULT_VARS = {
    "namespace": ".*",
    "cluster": ".*",
    "pod": ".*",
    "topic": ".*",
    "group": ".*",
    "__rate_interval": "8s",
    "__interval": "2s",
    "__range": "5m",
}


def load_dashboards():
    out = [(p, json.loads(p.read_text())) for p in sorted(DASHBOARDS.glob("*.json"))]
    assert out, f"no dashboards in {DASHBOARDS}"
    return out


def panels(dash):
    """Every panel that queries something, including those nested in collapsed rows."""
    out = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            out.extend(q for q in p.get("panels", []) if q.get("targets"))
        elif p.get("targets"):
            out.append(p)
    return out


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"variable ${name} has no value in {sorted(variables)}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def queries(panel, variables=None):
    v = {**DEFAULT_VARS, **(variables or {})}
    return [substitute(t["expr"], v) for t in panel["targets"] if t.get("expr") and not t.get("hide")]


def queries_without_data(prom, dash, prefix=""):
    """([f"{prefix}{panel title}: {query}" for each panel query that returns no data], number of
    queries asked) of a dashboard against a harness.prometheus.Prometheus."""
    empty, checked = [], 0
    for panel in panels(dash):
        for q in queries(panel):
            checked += 1
            if not prom.query(q):
                empty.append(f"{prefix}{panel['title']}: {q}")
    return empty, checked


def load_alert_groups():
    """The rule groups of dashboards/alerts.yaml."""
    import yaml  # PyYAML, installed with the kubernetes client

    return yaml.safe_load((DASHBOARDS / "alerts.yaml").read_text())["groups"]


def legend(fmt, labels):
    if not fmt or fmt == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


# Grafana unit ids to (scale, suffix) for tick labels.
def fmt_value(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    binary = unit in ("bytes", "bits", "binBps")
    decimal = unit in ("decbytes", "Bps", "decBps")
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit == "percent":
        return f"{v:.3g}%"
    if unit in ("s", "ms", "µs"):
        s = v / 1000 if unit == "ms" else v / 1e6 if unit == "µs" else v
        for limit, div, suffix in (
            (3600, 3600, " h"),
            (60, 60, " min"),
            (1, 1, " s"),
            (1e-3, 1e-3, " ms"),
            (0, 1e-6, " µs"),
        ):
            if abs(s) >= limit:
                return f"{s / div:.3g}{suffix}"
        return "0 s"
    if binary or decimal:
        base = 1024 if binary else 1000
        names = ["B", "KiB", "MiB", "GiB", "TiB"] if binary else ["B", "kB", "MB", "GB", "TB"]
        i = 0
        while abs(v) >= base and i < len(names) - 1:
            v, i = v / base, i + 1
        return f"{v:.3g} {names[i]}" + ("/s" if unit.endswith("ps") else "")
    suffix = {"reqps": " req/s", "ops": " ops/s", "rps": " /s", "cps": " /s", "wps": " /s"}.get(unit, "")
    for limit, letter in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            return f"{v / limit:.3g}{letter}{suffix}"
    return f"{v:.3g}{suffix}"


def render(dash, prom, start, end, out, variables=None, step=None):
    """Plot every panel of `dash` in its grid position; returns {panel title: series count}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    step = step or max(1, int((end - start) / 120))
    ps = panels(dash)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in ps)
    unit_h = 0.42
    height = rows * unit_h + 1.2
    fig = plt.figure(figsize=(20, height))
    fig.suptitle(dash["title"], fontsize=16, x=0.01, y=1 - 0.25 / height, ha="left")
    top = 1 - 1.0 / height
    counts = {}
    for p in ps:
        g = p["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        bottom = top - (g["y"] + g["h"]) / rows * top
        height = g["h"] / rows * top
        ax = fig.add_axes([left + 0.035 * width + 0.004, bottom + 0.06 * height, width * 0.93, height * 0.72])
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        ax.set_title(f"{p['title']}", fontsize=9, loc="left")
        n = 0
        last = None
        for t, expr in zip(
            [t for t in p["targets"] if t.get("expr") and not t.get("hide")], queries(p, variables), strict=True
        ):
            for s in prom.query_range(expr, start, end, step):
                xs = [float(x) - end for x, _ in s["values"]]
                ys = [float(y) for _, y in s["values"]]
                ax.plot(xs, ys, linewidth=1, label=legend(t.get("legendFormat"), s["metric"])[:40])
                last = ys[-1] if ys else last
                n += 1
        counts[p["title"]] = n
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, u=unit: fmt_value(v, u)))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("seconds before the end of the run", fontsize=6)
        if p.get("type") == "stat" and last is not None:
            ax.text(
                0.98,
                0.85,
                fmt_value(last, unit),
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=14,
                weight="bold",
            )
        elif 0 < n <= 6:
            ax.legend(fontsize=6, loc="upper left")
        if n == 0:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="red")
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return counts
