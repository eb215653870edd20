"""The ``reachability`` and ``continuous-probe`` checks on a real 4-node lab (flannel, bookinfo, echo).

Faults are injected with iptables inside lab namespaces only (a node's or a pod's), and always removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.actions.context import CheckContext
from migrator.checks.probe import ContinuousProbeChecker, pick_pairs
from migrator.checks.reachability import BASELINE_FILE, Reachability
from migrator.engine.api import apply_plan
from migrator.engine.planio import load_plan_file
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.plan.models import ContinuousProbeCheck, ProbeScope, ReachabilityCheck
from migrator.ports import ProbeKind, Target
from migrator.runs.events import RunStatus
from migrator.targets.lab.cluster import open_lab_target
from migrator.targets.lab.prober import LabProber

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAB_NAME = "rbt"
UNDERLAY = "198.18.22.0/24"
REPO = Path(__file__).resolve().parents[2]
POD_KINDS = ["container", "pod-same-node", "pod-cross-node", "node-to-pod"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    the_lab = Lab(LAB_NAME)
    try:
        the_lab.up(LabSpec(name=LAB_NAME, nodes=4, pods_per_node=1, underlay=UNDERLAY))
        yield the_lab
    finally:
        res = the_lab.down()
        assert not res.leftovers, res.leftovers


@pytest.fixture()
def target(lab: Lab) -> Target:
    return open_lab_target(LAB_NAME)


def ctx(target: Target, run_dir: Path, phase: str, **kw: Any) -> CheckContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return CheckContext(
        run_id=run_dir.name,
        run_dir=run_dir,
        artifacts_dir=run_dir / "checks" / phase,
        target=target,
        phase=phase,
        **kw,
    )


def netns_of(target: Target, source: str) -> str:
    prober = target.prober
    assert isinstance(prober, LabProber)
    return Path(prober.sources()[source]).name


def iptables(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "iptables", *args], check=True, timeout=20)


class Rule:
    """An iptables rule inside a lab namespace, removed on exit whatever happens."""

    def __init__(self, netns: str, chain: str, *spec: str) -> None:
        self.netns, self.chain, self.spec = netns, chain, spec
        self.added = False

    def __enter__(self) -> Rule:
        iptables(self.netns, "-I", self.chain, "1", *self.spec)
        self.added = True
        return self

    def remove(self) -> None:
        if self.added:
            iptables(self.netns, "-D", self.chain, *self.spec)
            self.added = False

    def __exit__(self, *exc: object) -> None:
        self.remove()


def node_of(target: Target) -> dict[str, str]:
    return {p.key: p.node for p in target.cluster.list_pods()}


def pod_cidr(lab: Lab, node: str) -> str:
    return lab.require().nodes[node].pod_cidr


def failing(details: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["source"], f["dest"], f["kind"]) for f in details["failures"]}


# ------------------------------------------------------------------------------------- reachability


def test_healthy_lab_every_kind_passes(target: Target, tmp_path: Path) -> None:
    c = ctx(target, tmp_path / "run", "preflight")
    result = Reachability().run(c, ReachabilityCheck(type="reachability"))
    assert result.ok, result.summary
    d = result.details
    kinds = {k["kind"]: k for k in d["kinds"]}
    assert set(kinds) == {k.value for k in ProbeKind} - {ProbeKind.POLICY.value}
    for k in kinds.values():
        assert k["total"] > 0 and k["ok"] == k["total"], k
    assert d["failures"] == [] and d["regressions_count"] == 0
    assert (tmp_path / "run" / BASELINE_FILE).exists()
    full = json.loads(Path(d["results_file"]).read_text())
    assert len(full["results"]) == d["total"] and full["passed"]
    pods = d["grids"]["pods"]
    assert len(pods["rows"]) == len(pods["sources"]) and "0" not in "".join(pods["rows"])


def test_partition_fails_exactly_the_expected_pairs_as_regressions(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    check = ReachabilityCheck(type="reachability", kinds=POD_KINDS, path="/healthz")
    run = tmp_path / "run"
    base = Reachability().run(ctx(target, run, "preflight"), check)
    assert base.ok, base.summary
    # node4's pods may not open connections to node3's pods (replies of other flows still pass)
    spec = ("-s", pod_cidr(lab, "node4"), "-d", pod_cidr(lab, "node3"), "-m", "conntrack", "--ctstate", "NEW")
    nodes = node_of(target)
    with Rule(netns_of(target, "node4"), "FORWARD", *spec, "-j", "DROP"):
        t0 = time.monotonic()
        result = Reachability().run(ctx(target, run, "wave-verify"), check)
        assert time.monotonic() - t0 < 30
    expected = {
        (r["source"], r["dest"], r["kind"])
        for r in json.loads(Path(base.details["results_file"]).read_text())["results"]
        if r["kind"] == "pod-cross-node" and nodes[r["source"]] == "node4" and nodes[r["dest"]] == "node3"
    }
    assert expected  # the lab spreads pods over every node
    assert not result.ok
    d = result.details
    assert failing(d) == expected
    assert {(f["source"], f["dest"], f["kind"]) for f in d["regressions"]} == expected
    assert d["never_worked_count"] == 0
    assert {f["status"] for f in d["failures"]} == {"regressed"}
    assert all(f["error"] for f in d["failures"])
    grid = d["grids"]["pods"]
    zeros = {
        (grid["sources"][i], grid["dests"][j])
        for i, row in enumerate(grid["rows"])
        for j, c in enumerate(row)
        if c == "0"
    }
    assert zeros == {(s, t) for s, t, _ in expected}
    after = Reachability().run(ctx(target, run, "post-rollback"), check)
    assert after.ok, after.summary


def test_pair_failing_at_baseline_is_never_worked_not_a_regression(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    check = ReachabilityCheck(type="reachability", kinds=POD_KINDS, path="/healthz", preflight_threshold=0.5)
    run = tmp_path / "run"
    spec = ("-s", pod_cidr(lab, "node2"), "-d", pod_cidr(lab, "node4"), "-m", "conntrack", "--ctstate", "NEW")
    with Rule(netns_of(target, "node2"), "FORWARD", *spec, "-j", "DROP"):
        base = Reachability().run(ctx(target, run, "preflight"), check)
        assert base.ok, base.summary  # 50% is enough at preflight: the baseline is recorded
        broken = failing(base.details)
        assert broken
        later = Reachability().run(ctx(target, run, "stage-verify"), check)
    assert later.ok, later.summary  # 100% of the pairs that worked at baseline
    d = later.details
    assert d["regressions_count"] == 0
    assert {(f["source"], f["dest"], f["kind"]) for f in d["never_worked"]} == broken
    assert {f["status"] for f in d["failures"]} == {"never-worked"}
    healed = Reachability().run(ctx(target, run, "verify"), check)
    assert healed.ok and healed.details["recovered_count"] == len(broken)


def test_stopped_pod_server_is_one_failing_destination(lab: Lab, target: Target, tmp_path: Path) -> None:
    st = lab.require()
    echo = sorted(k for k, p in st.pods.items() if p.name.startswith("echo") and p.node == "node3")[0]
    pid = st.pods[echo].containers[0].pid
    assert pid
    check = ReachabilityCheck(type="reachability", kinds=POD_KINDS, path="/healthz", probe_timeout=1.0)
    os.kill(pid, signal.SIGSTOP)  # connections are accepted by the kernel, never answered
    try:
        t0 = time.monotonic()
        result = Reachability().run(ctx(target, tmp_path / "run", "verify"), check)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not result.ok
    assert {f["dest"] for f in result.details["failures"]} == {echo}
    assert all(f["error"].startswith("timeout") for f in result.details["failures"])
    assert took < 20, took  # bounded by the probe timeout (plus one confirmation pass), not hung


# --------------------------------------------------------------------------------------- continuous


def test_continuous_probe_measures_injected_loss(lab: Lab, target: Target, tmp_path: Path) -> None:
    check = ContinuousProbeCheck(
        type="continuous-probe",
        scope=ProbeScope.CROSS_NODE,
        sample_pairs=1,
        rate_hz=20,
        probe_timeout=0.8,
        path="/healthz",
        max_loss="100%",
        exclude_wave_nodes=False,
    )
    pairs, _ = pick_pairs(target.cluster, check, frozenset(), salt=0)
    assert len(pairs) == 1
    dest = pairs[0]
    c = ctx(target, tmp_path / "run", "monitor", stage="loss")
    checker = ContinuousProbeChecker()
    # a dropped SYN is retransmitted after 1 s, past the 0.8 s probe timeout: one drop, one lost probe
    rule = ("-p", "tcp", "--syn", "--dport", str(dest.port), "-m", "statistic", "--mode", "random")
    with Rule(netns_of(target, dest.dest), "INPUT", *rule, "--probability", "0.3", "-j", "DROP"):
        checker.monitor_start(c, check)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                time.sleep(2)
                r = checker.run(c, check)
                assert r.ok, r.summary
                if r.details["sent"] >= 560:
                    break
        finally:
            final = checker.monitor_stop(c, check)
    assert final is not None
    d = final.details
    assert d["sent"] >= 500, d["sent"]
    assert d["excused"] == 0
    loss = d["lost"] / d["sent"]
    assert 0.23 <= loss <= 0.37, loss
    assert d["pairs"][0]["longest_outage_ms"] >= 50
    series = json.loads(Path(d["timeseries_file"]).read_text())
    assert sum(b["sent"] for b in series["timeseries"]) == d["sent"]
    assert sum(b["lost"] for b in series["timeseries"]) == d["lost"]


def _journal(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MONITOR_PLAN = """
apiVersion: migrator/v1
kind: Plan
metadata: {name: monitor-abort}
spec:
  rollback: on-failure
  preflight:
    - type: nodes.schedulable
  stages:
    - name: slow-wave
      for_each:
        nodes: {names: [node2]}
        order: as-listed
      steps:
        - name: cordon
          action: node.cordon
        - name: hold
          action: demo.sleep
          args: {duration: 40s}
          no_undo: true
      monitor:
        - type: continuous-probe
          name: no-loss
          scope: cross-node
          sample_pairs: 24
          rate_hz: 5
          path: /healthz
          max_loss: 0%
"""


def test_monitor_with_max_loss_zero_aborts_the_stage_and_rolls_back(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(MONITOR_PLAN)
    source = load_plan_file(plan)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(result=apply_plan(source, target)), daemon=True)
    runs = Path(os.environ["MIGRATOR_HOME"]) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    runner.start()
    run_dir: Path | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = (set(runs.iterdir()) if runs.exists() else set()) - before
        if new:
            run_dir = new.pop()
            if any(e["type"] == "step.start" and e["step"] == "hold" for e in _journal(run_dir)):
                break
        time.sleep(0.2)
    assert run_dir is not None
    time.sleep(1.0)
    # node3's pods stop answering anything that crosses nodes: pairs to them lose probes
    spec = ("-d", pod_cidr(lab, "node3"), "-j", "DROP")
    started = time.monotonic()
    with Rule(netns_of(target, "node3"), "FORWARD", *spec):
        while time.monotonic() - started < 20 and not any(
            e["type"] == "monitor.failed" for e in _journal(run_dir)
        ):
            time.sleep(0.2)
    runner.join(60)
    assert not runner.is_alive()
    result = box["result"]
    assert result.status is RunStatus.FAILED_ROLLED_BACK, result.message
    events = _journal(run_dir)
    failed = [e for e in events if e["type"] == "monitor.failed"]
    assert failed and "loss" in failed[0]["error"]
    assert time.monotonic() - started < 20  # aborted long before the 40 s hold ended
    assert any(e["type"] == "rollback.end" and e["outcome"] == "succeeded" for e in events)
    assert target.cluster.get_node("node2").schedulable


def test_verify_plan_runs_end_to_end_without_loss(lab: Lab, target: Target, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plan = REPO / "plans" / "examples" / "verify.yaml"
    argv = ["python", "-m", "migrator.cli.main", "validate", str(plan)]
    validate = subprocess.run(argv, env=env, timeout=60, capture_output=True, check=False)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    proc = subprocess.run(
        ["python", "-m", "migrator.cli.main", "apply", str(plan), "-t", f"lab:{LAB_NAME}", "--yes"],
        env=env,
        check=False,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((Path(os.environ["MIGRATOR_HOME"]) / "runs").glob("*-verify-*"))
    run_dir = runs[-1]
    assert (run_dir / BASELINE_FILE).exists()
    data = json.loads(
        (run_dir / "checks" / "monitor-pods-off-wave" / "rolling-drain-continuous.json").read_text()
    )
    assert data["sent"] > 200 and data["lost"] == 0, data["breaches"]
    assert [w["nodes"] for w in data["waves"]] == [["node2"], ["node3"], ["node4"]]
    assert data["segments"] >= 3  # pairs re-picked after every wave
    waves = [e for e in _journal(run_dir) if e["type"] == "check.end" and e["phase"] == "wave-verify"]
    assert len(waves) == 3 and all(e["ok"] for e in waves)
