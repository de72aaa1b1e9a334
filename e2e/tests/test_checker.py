"""The Jepsen-style checker (e2e/checker) against a fresh three-node cluster of the target: a
short process-fault schedule (~60 s), then ten network cuts (~2 min); zero lost writes,
duplicates, inconsistent offsets and non-monotonic polls, no liveness failure. And the
leader-cut scenario: how soon producers leave a cut-off leader.

FJORD_CHECKER_SEED fixes the schedule (default: random, printed); FJORD_CHECKER_DURATION the
nemesis time in seconds (default 60). The JSON report is printed on failure."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TARGET

CHECKER = Path(__file__).resolve().parent.parent / "checker" / "checker.py"


CLEAN = {"lost": 0, "duplicates": 0, "inconsistent_offsets": 0, "nonmonotonic_polls": 0}
TXN_CLEAN = {"aborted_reads": 0, "torn": 0, "lost": 0, "duplicates": 0, "unknown_values": 0, "nonmonotonic_polls": 0}


def _run_checker(e2e_tmp, tmp_path, extra, timeout=900, clean=CLEAN):
    """Run the checker with `extra` arguments; assert a clean report; return it."""
    seed = int(os.environ.get("FJORD_CHECKER_SEED") or random.SystemRandom().randrange(1, 10**9))
    report = tmp_path / "checker-report.json"
    cmd = [
        sys.executable,
        str(CHECKER),
        "--target",
        TARGET,
        "--seed",
        str(seed),
        *extra,
        "--out",
        str(report),
        "--tmp",
        str(e2e_tmp),
    ]
    print(f"checker seed {seed}: {' '.join(cmd)}")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"checker (seed {seed}) did not finish in {timeout} s:\n{(e.stdout or '')[-5000:]}"
        ) from None
    summary = [line for line in p.stdout.splitlines() if line.startswith("checker ")]
    print(p.stdout[-4000:])
    assert report.exists(), f"no report (exit {p.returncode}, seed {seed}):\n{p.stdout[-5000:]}\n{p.stderr[-5000:]}"
    rep = json.loads(report.read_text())
    details = (
        f"seed {seed}, exit {p.returncode}: {summary[-1] if summary else '(no summary)'}\n"
        f"--- report ---\n{json.dumps(rep, indent=1)[:12000]}\n--- stderr ---\n{p.stderr[-5000:]}"
    )
    assert p.returncode == 0, details
    assert rep.get("anomalies") == clean, details
    assert not rep["liveness_failures"], details
    assert rep["ops"], f"the nemesis ran no fault: {details}"
    if clean is CLEAN:
        assert rep["stats"]["acked"] > 0 and rep["stats"]["final_read"] >= rep["stats"]["acked"], details
    return rep, details


def test_checker_finds_no_anomaly(e2e_tmp, tmp_path):
    _run_checker(e2e_tmp, tmp_path, ["--duration", os.environ.get("FJORD_CHECKER_DURATION", "60")])


def test_checker_network_partitions_find_no_anomaly(e2e_tmp, tmp_path):
    """Ten randomized network cuts (nodes and clients in network namespaces of their own): a
    leader from its followers, the active controller from the other voters, one node from
    everyone, a minority from the majority, the controller listeners between all nodes. Besides
    the anomalies, the checker fails the run when a majority-side node leaves an ISR, when (Fjord)
    other than exactly one controller is active from two election timeouts after a cut, or when
    a partition stops taking writes while only the controller quorum is cut."""
    faults = ",".join(checker_module().PARTITIONS)
    rep, details = _run_checker(e2e_tmp, tmp_path, ["--faults", faults, "--ops", "10"])
    assert len(rep["ops"]) == 10, details
    assert rep["partition_monitor_samples"] > 20, details


def test_transactional_checker_finds_no_anomaly(e2e_tmp, tmp_path):
    """Transactional writers (commit or abort at random) and read_committed readers while the
    transaction coordinator and other nodes are killed with -9 and paused: no aborted read,
    torn or lost transaction, or duplicate."""
    faults = "kill9,pause,kill9-coordinator,pause-coordinator"
    rep, details = _run_checker(
        e2e_tmp, tmp_path, ["--workload", "txn", "--faults", faults, "--ops", "6"], clean=TXN_CLEAN
    )
    assert rep["stats"]["transactions"].get("committed", 0) > 50, details
    assert rep["stats"]["transactions"].get("aborted", 0) > 5, details
    assert {op["fault"] for op in rep["ops"]} & {"kill9-coordinator", "pause-coordinator"}, details


@pytest.mark.fjord_only
def test_a_cut_off_leader_loses_its_producers_within_5s(e2e_tmp, tmp_path):
    """A leader cut off from its peers but not from its clients: an acks=all producer is taking
    writes again (through the new leader) within 5 s of the cut, at the median of three cuts
    (a three-partition topic; each cut takes a leader that is not also the active controller).
    Apache Kafka's figures from the same script are in e2e/checker/README.md."""
    report = tmp_path / "leader-cut.json"
    script = CHECKER.parent / "leader_cut.py"
    cmd = [sys.executable, str(script), "--target", TARGET, "--runs", "3", "--hold", "12"]
    cmd += ["--out", str(report), "--tmp", str(e2e_tmp)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(p.stdout[-3000:])
    rep = json.loads(report.read_text()) if report.exists() else {}
    details = f"exit {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}\n{json.dumps(rep, indent=1)}"
    assert p.returncode == 0 and len(rep.get("runs", [])) == 3, details
    assert rep["median_resume_s"] < 5.0, details


def checker_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fjord_checker", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checker_analysis_reports_each_anomaly_kind():
    """The analysis is not vacuous: fabricated histories with one anomaly of each kind are
    reported as such (no cluster involved)."""
    from types import SimpleNamespace as NS

    from harness.workload import Ack, Polled

    mod = checker_module()

    def run(acks, polls, final, regressions=()):
        ck = mod.Checker(
            NS(seed=1, target="kafka", nodes=3, partitions=2, producers=1, consumers=1, rate=1, netns=None)
        )
        ck.producers = [
            NS(name="p0", acks_snapshot=lambda: acks, sent=len(acks), failures_snapshot=lambda: [], undelivered=0)
        ]
        ck.consumers = [
            NS(name="c0", snapshot=lambda: polls, regressions=list(regressions), events=[], commit_errors=[], errors=[])
        ]
        return ck.analyse(final, {0: (0, 3), 1: (0, 1)})

    acks = [Ack(0, 0, 0, "a", 0), Ack(0, 0, 1, "b", 1), Ack(0, 1, 0, "c", 2)]
    good_final = {0: [(0, "a"), (1, "b"), (2, "x")], 1: [(0, "c")]}
    polls = [Polled(0, 0, 0, "a", 1), Polled(0, 0, 1, "b", 1), Polled(0, 1, 0, "c", 1)]
    clean = {"lost": 0, "duplicates": 0, "inconsistent_offsets": 0, "nonmonotonic_polls": 0}
    assert run(acks, polls, good_final) == clean
    assert run(acks, polls, {0: [(0, "a"), (1, "b")], 1: []})["lost"] == 1
    assert run(acks, polls, {0: [(0, "a"), (1, "b"), (2, "a")], 1: [(0, "c")]})["duplicates"] == 1
    bad_poll = polls[:2] + [Polled(0, 1, 0, "z", 1)]
    assert run(acks, bad_poll, good_final)["inconsistent_offsets"] == 1
    assert run(acks, polls, good_final, regressions=[(0, 0, 1, 0, 1)])["nonmonotonic_polls"] == 1
    # A delivery reported without an offset is checked by value only.
    assert run(acks + [Ack(0, 1, None, "d", 3)], polls, {0: good_final[0], 1: [(0, "c"), (1, "d")]}) == clean
    assert run(acks + [Ack(0, 1, None, "d", 3)], polls, good_final)["lost"] == 1


def test_transactional_analysis_reports_each_anomaly_kind():
    """The transactional analysis is not vacuous: fabricated histories with one anomaly of each
    kind are reported as such (no cluster involved)."""
    from types import SimpleNamespace as NS

    from harness.txn_workload import analyse
    from harness.workload import Polled

    outcomes = [
        ("w0-0", ["w0-0-0", "w0-0-1"], "committed"),
        ("w0-1", ["w0-1-0", "w0-1-1"], "aborted"),
        ("w0-2", ["w0-2-0", "w0-2-1"], "unknown"),
    ]
    writers = [NS(snapshot=lambda: outcomes, restarts=0, errors=[])]
    good = {0: [(0, "w0-0-0"), (3, "w0-2-0")], 1: [(0, "w0-0-1"), (2, "w0-2-1")]}
    clean = {"aborted_reads": 0, "torn": 0, "lost": 0, "duplicates": 0, "unknown_values": 0}

    def run(final, polls=()):
        return analyse(writers, list(polls), final)[0]

    assert run(good) == clean
    assert run({0: [(0, "w0-0-0")], 1: []})["torn"] == 1
    assert run({0: [], 1: [(2, "w0-2-1")]})["torn"] == 1
    assert run({0: [(3, "w0-2-0")], 1: [(2, "w0-2-1")]})["lost"] == 1
    assert run(good, [("c0", Polled(0, 0, 1, "w0-1-0", 1))])["aborted_reads"] == 1
    assert run({**good, 1: good[1] + [(5, "w0-0-1")]})["duplicates"] == 1
    assert run({**good, 1: good[1] + [(6, "stray")]})["unknown_values"] == 1
