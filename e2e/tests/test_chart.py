"""The Helm chart (charts/fjord-operator): `helm lint --strict` is clean, its copies of the
CRDs, alert rules and dashboards equal the originals, and everything it renders, in
cluster-wide and in namespaced mode, passes a server-side dry run against a real
kube-apiserver (schema validation, RBAC objects, the CRDs themselves)."""

import filecmp
import subprocess
from pathlib import Path

import pytest

from harness import kube

KUBE_NODES = 1
pytestmark = pytest.mark.fjord_only

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fjord-operator"


@pytest.fixture(scope="module")
def kube_bin():
    return Path(kube.kube_bin())


def helm(kube_bin, *args):
    p = subprocess.run([str(kube_bin / "helm"), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"helm {' '.join(map(str, args))} failed:\n{p.stdout}{p.stderr}"
    return p.stdout


def test_helm_lint_is_clean(kube_bin):
    out = helm(kube_bin, "lint", "--strict", CHART)
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[ERROR]" not in out and "[WARNING]" not in out, out


def test_chart_copies_equal_their_sources():
    pairs = [(ROOT / "dashboards" / "alerts.yaml", CHART / "files" / "alerts.yaml")]
    pairs += [(p, CHART / "files" / "dashboards" / p.name) for p in sorted((ROOT / "dashboards").glob("*.json"))]
    pairs += [(p, CHART / "crds" / p.name) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert len(pairs) >= 4
    stale = [
        str(copy.relative_to(ROOT))
        for src, copy in pairs
        if not copy.exists() or not filecmp.cmp(src, copy, shallow=False)
    ]
    extra = {p.name for p in (CHART / "files" / "dashboards").glob("*.json")} - {
        p.name for p in (ROOT / "dashboards").glob("*.json")
    }
    assert not stale and not extra, (
        f"chart copies differ from their sources: {stale}, extra {sorted(extra)}; "
        "copy dashboards/alerts.yaml and dashboards/*.json into charts/fjord-operator/files/ "
        "(CRDs: cargo run -p fjord-crds --bin crdgen)"
    )


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rendered_manifests_pass_server_side_dry_run(kube_cluster, kube_bin, mode):
    ns = kube_cluster.namespace("fjord-system")
    sets = ["--set", "watchNamespace=apps"] if mode == "namespaced" else []
    if mode == "namespaced":
        kube_cluster.namespace("apps")
    manifests = helm(kube_bin, "template", "fjord", CHART, "--namespace", ns, "--include-crds", *sets)
    kinds = sorted({line.split(":", 1)[1].strip() for line in manifests.splitlines() if line.startswith("kind:")})
    want = {
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role" if mode == "namespaced" else "ClusterRole",
    }
    assert want <= set(kinds), kinds
    p = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert p.returncode == 0, f"server-side dry run refused the chart ({mode}):\n{p.stdout}{p.stderr}"
    assert "(server dry run)" in p.stdout, p.stdout
