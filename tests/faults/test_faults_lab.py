"""Faults on a real 4-node lab (flannel, bookinfo, one echo pod per node), torn down at the end.

Every assertion reads the real node state (``iptables-save``, ``tc qdisc show``, the records under
``/run/migrator/faults``) or real probes between pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from migrator.cli.faults import clear_faults, list_records
from migrator.faults import nodes as fnodes
from migrator.faults.spec import ClusterView, FaultKind, build
from migrator.lab.lab import Lab
from migrator.plan.models import FaultLossArgs
from migrator.ports import Target
from tests.faults.lab_helpers import (
    cli,
    echo_pods,
    fully_installed,
    node_fault_state,
    records_on,
    start_cli,
    take_over_stale_lock,
    tcp,
    timer_alive,
    wait_for,
    write_plan,
)

pytestmark = pytest.mark.lab


# --------------------------------------------------------------------------------------------- tests


def test_loss_30_percent_measured_by_continuous_probes(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    assert lab_target.prober is not None
    pods = echo_pods(lab_target)
    dst = pods["node2"]
    targets = [tcp(pods[n], dst) for n in ("node1", "node3", "node4")]

    base = lab_target.prober.start_continuous(targets, rate_hz=5, max_duration=3)
    time.sleep(3.5)
    before = base.stop()
    assert before and sum(not r.ok for r in before) / len(before) < 0.05, "loss before the fault"

    plan = write_plan(
        tmp_path / "loss.yaml",
        "loss-measure",
        [
            {
                "action": "fault.loss",
                "args": {
                    "targets": {"names": ["node2"]},
                    "percent": "30%",
                    "duration": "120s",
                    "wait": False,
                },
            }
        ],
    )
    res = cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        assert any("statistic" in line for line in node_fault_state(fault_lab, "node2"))
        run = lab_target.prober.start_continuous(targets, rate_hz=8, max_duration=25)
        time.sleep(26)
        results = run.stop()
    finally:
        clear_faults(lab_target, ["node2"])
    assert len(results) >= 500
    loss = sum(not r.ok for r in results) / len(results)
    print(f"measured loss {loss:.3f} over {len(results)} probes")
    assert 0.23 <= loss <= 0.37, f"loss {loss:.3f} over {len(results)} probes"
    assert node_fault_state(fault_lab, "node2") == []


def test_partition_fails_exactly_the_cross_partition_pairs(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    assert lab_target.prober is not None
    pods = echo_pods(lab_target)
    pairs = [(a, b) for a in sorted(pods) for b in sorted(pods) if a != b]
    targets = [tcp(pods[a], pods[b], timeout=1.0) for a, b in pairs]
    assert all(r.ok for r in lab_target.prober.probe(targets)), "pairs failing before the fault"

    plan = write_plan(
        tmp_path / "partition.yaml",
        "partition",
        [
            {
                "action": "fault.partition",
                "timeout": "120s",
                "args": {"targets": {"names": ["node2"]}, "peers": {"names": ["node3"]}, "duration": "25s"},
            }
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        # the jumps go INPUT, OUTPUT, FORWARD: pod to pod traffic is dropped once FORWARD's is in
        assert wait_for(lambda: fully_installed(fault_lab, "node2", "FORWARD"), 60), "fault never in effect"
        during = lab_target.prober.probe(targets)
        failed = {(r.source, r.dest) for r in during if not r.ok}
        expected = {(pods["node2"].key, pods["node3"].key), (pods["node3"].key, pods["node2"].key)}
        assert failed == expected
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:  # a failed assertion above: leave no fault nor lock to the next test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
            clear_faults(lab_target, ["node2", "node3"])
            take_over_stale_lock(fault_lab)
    assert node_fault_state(fault_lab, "node2") == []
    after = lab_target.prober.probe(targets)
    assert [r for r in after if not r.ok] == []


def test_kill_9_during_a_20s_fault_heals_within_ttl_plus_2s(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path / "kill.yaml",
        "kill-nine",
        [
            {
                "action": "fault.bandwidth",
                "timeout": "120s",
                "args": {
                    "targets": {"names": ["node3"]},
                    "rate": "1mbit",
                    "duration": "20s",
                    "grace": "2s",
                    "wait": False,
                },
            },
            {
                "action": "fault.loss",
                "timeout": "120s",
                "args": {"targets": {"names": ["node2"]}, "percent": "10%", "duration": "20s", "grace": "2s"},
            },
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    try:
        # fully in effect: the jump from OUTPUT (the last install command) and the record with its timer
        in_effect = wait_for(lambda: fully_installed(fault_lab, "node2", "OUTPUT"), 90)
        assert in_effect, "loss fault never in effect"
        time.sleep(2.0)  # the step is now holding the fault (ctx.sleep)
        assert any("tbf" in line for line in node_fault_state(fault_lab, "node3"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # migrator and its ansible children: kill -9
        proc.communicate(timeout=30)
        take_over_stale_lock(fault_lab)
    recs = {n: records_on(fault_lab, n) for n in ("node2", "node3")}
    assert all(len(r) == 1 for r in recs.values()), recs
    assert [r["ttl"] for r in recs["node2"]] == [22]  # the 20 s fault migrator was killed in
    deadlines = {node: float(rec["expires_at"]) + 2.0 for node, (rec,) in recs.items()}
    healed: dict[str, float] = {}
    while len(healed) < len(deadlines) and time.time() < max(deadlines.values()) + 10:
        for node in deadlines:
            if node not in healed and node_fault_state(fault_lab, node) == []:
                healed[node] = time.time()
        time.sleep(0.2)
    for node, deadline in deadlines.items():
        assert node in healed, f"{node}: the fault is still there 10 s after TTL + 2 s"
        assert healed[node] <= deadline, f"{node}: healed {healed[node] - deadline:.1f}s after TTL + 2 s"
        assert records_on(fault_lab, node) == []


def _reverts(lab: Lab, node: str) -> list[dict[str, object]]:
    res = lab.exec(node, ["sh", "-c", "cat /run/migrator/fault-reverts.log 2>/dev/null || true"], timeout=10)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("how", ["kill-9", "sigstop"])
def test_a_10_minute_fault_ends_within_10s_when_migrator_dies_or_stops(
    lab_target: Target, fault_lab: Lab, tmp_path: Path, how: str
) -> None:
    """Issue 18 §4: a lease, not only a TTL. migrator renews a heartbeat on the node once a second; killed
    (its pipe to the heartbeat's ssh closes) or stopped (no beat comes), the node reverts the fault within
    its lease (5 s), not at the end of its 10 minutes; the node's revert log says the heartbeat did it."""
    plan = write_plan(
        tmp_path / f"lease-{how}.yaml",
        f"lease-{how}",
        [
            {
                "action": "fault.loss",
                "timeout": "700s",
                "args": {"targets": {"names": ["node3"]}, "percent": "10%", "duration": "600s"},
            }
        ],
    )
    proc = start_cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    stopped_at = 0.0
    try:
        assert wait_for(lambda: fully_installed(fault_lab, "node3", "OUTPUT"), 90), "fault never in effect"
        (rec,) = records_on(fault_lab, "node3")
        assert rec["ttl"] == 610 and rec["lease"] == 5 and rec["heartbeat"], rec
        time.sleep(3.0)  # the step holds the fault; the heartbeat keeps it: still in effect after the lease
        assert fully_installed(fault_lab, "node3", "OUTPUT"), "the fault ended while migrator was alive"
        stopped_at = time.time()
        if how == "kill-9":
            os.kill(proc.pid, signal.SIGKILL)  # migrator alone: its heartbeat's ssh sees its pipe close
        else:
            os.killpg(proc.pid, signal.SIGSTOP)  # migrator and its ssh children, frozen: no beat comes
        healed = wait_for(lambda: node_fault_state(fault_lab, "node3") == [], 20, interval=0.2)
        took = time.time() - stopped_at
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGCONT)
        proc.communicate(timeout=30)
        take_over_stale_lock(fault_lab)
        if node_fault_state(fault_lab, "node3"):
            clear_faults(lab_target, ["node3"])
    assert healed, f"{how}: the fault is still there 20 s later"
    assert took <= 10.0, f"{how}: the node was clean {took:.1f}s after migrator stopped (target: 10 s)"
    assert records_on(fault_lab, "node3") == []
    (last,) = [r for r in _reverts(fault_lab, "node3") if r["id"] == rec["id"]]
    assert last["by"] == "heartbeat" and float(str(last["at"])) >= stopped_at - 1, last
    gone = fault_lab.exec("node3", ["sh", "-c", "ls /run/migrator/heartbeat 2>/dev/null || true"], timeout=10)
    if how == "kill-9":  # the node side saw EOF and removed the heartbeat file
        assert gone.stdout.split() == [], gone.stdout


def test_faults_list_and_clear(lab_target: Target, fault_lab: Lab, tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "clear.yaml",
        "clear",
        [
            {
                "action": "fault.loss",
                "args": {
                    "targets": {"names": ["node4"]},
                    "percent": "20%",
                    "duration": "300s",
                    "wait": False,
                },
            }
        ],
    )
    res = cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    listed = cli("faults", "list", "-t", f"lab:{fault_lab.name}", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [r["kind"] for r in data["node4"]] == ["loss"] and data["node2"] == []
    (rec,) = data["node4"]
    assert rec["timer_alive"] and rec["meta"]["mechanism"] == "iptables"
    assert timer_alive(fault_lab, "node4", rec)

    # off a TTY, clear refuses without --yes (exit 2) and changes nothing; --dry-run lists what it would do
    refused = cli("faults", "clear", "-t", f"lab:{fault_lab.name}")
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stdout + refused.stderr
    assert timer_alive(fault_lab, "node4", rec) and records_on(fault_lab, "node4") != []
    preview = cli("faults", "clear", "-t", f"lab:{fault_lab.name}", "--dry-run", "-o", "json")
    assert preview.returncode == 0, preview.stderr
    assert [r["id"] for r in json.loads(preview.stdout)["would_revert"]["node4"]] == [rec["id"]]
    assert records_on(fault_lab, "node4") != []

    cleared = cli("faults", "clear", "-t", f"lab:{fault_lab.name}", "--yes")
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert f"node4: {rec['id']}" in cleared.stdout
    assert node_fault_state(fault_lab, "node4") == []
    assert records_on(fault_lab, "node4") == []
    assert not timer_alive(fault_lab, "node4", rec)
    assert list_records(lab_target) == {n: [] for n in ("node1", "node2", "node3", "node4")}


def test_explicit_and_expiry_revert_racing_leave_a_clean_node(
    lab_target: Target, fault_lab: Lab, tmp_path: Path
) -> None:
    nodes = lab_target.cluster.list_nodes()
    facts = fnodes.gather_facts(lab_target.executor, nodes, data_dir=tmp_path / "facts")
    view = ClusterView(nodes)
    args = FaultLossArgs.model_validate({"percent": "5%", "duration": 1})
    ttls = {"node1": 9, "node2": 11, "node3": 13, "node4": 15}  # spread around the revert's arrival
    specs = {}
    for node in nodes:
        plan = build(FaultKind.LOSS, f"race{node.name[-1]}0000000", args, facts[node.name], view)
        specs[node.name] = plan.spec(ttls[node.name])
    fnodes.collect(
        lab_target.executor,
        "fault-inject.yml",
        list(specs),
        data_dir=tmp_path / "inject",
        extra_vars={"fault_specs": specs},
    )
    created = {n: next(r for r in records_on(fault_lab, n) if r["id"] == specs[n]["id"]) for n in specs}
    assert all(node_fault_state(fault_lab, n) for n in specs)

    # on node3 also race two runs of the revert script itself (the timer's path) with the explicit revert
    script = f"/run/migrator/faults/{specs['node3']['id']}.revert.sh"
    errors: list[str] = []

    def run_script() -> None:
        res = fault_lab.exec("node3", ["sh", "-c", f"[ ! -f {script} ] || sh {script}"], timeout=90)
        if res.rc != 0:
            errors.append(res.stderr)

    start = min(float(r["created_at"]) for r in created.values()) + 8.0  # reaches the nodes 1-5 s later
    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=run_script) for _ in range(2)]
    for t in threads:
        t.start()
    outcomes = fnodes.revert(
        lab_target.executor, list(specs), ids=[s["id"] for s in specs.values()], data_dir=tmp_path / "revert"
    )
    for t in threads:
        t.join(60)
    assert errors == []
    assert outcomes["node4"].reverted == [specs["node4"]["id"]]  # explicit before its expiry
    assert {n: o.drift for n, o in outcomes.items()} == {n: [] for n in specs}
    time.sleep(max(0.0, max(float(r["expires_at"]) for r in created.values()) + 1.0 - time.time()))
    for name, rec in created.items():
        assert node_fault_state(fault_lab, name) == [], name
        assert records_on(fault_lab, name) == [], name
        assert not timer_alive(fault_lab, name, rec)
        left = fault_lab.exec(name, ["sh", "-c", "ls /run/migrator/faults"], timeout=10).stdout.split()
        assert left == [], left


def test_delay_fails_up_front_without_netem_in_apply_and_dry_run(fault_lab: Lab, tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "delay.yaml",
        "delay",
        [
            {
                "action": "fault.delay",
                "args": {"targets": {"names": ["node3"]}, "delay": "100ms", "duration": "10s"},
            }
        ],
    )
    message = "kernel feature 'netem' is not available on node node3"
    dry = cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--dry-run")
    assert dry.returncode != 0 and message in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    applied = cli("apply", str(plan), "-t", f"lab:{fault_lab.name}", "--yes")
    assert applied.returncode != 0 and message in applied.stdout + applied.stderr
    assert node_fault_state(fault_lab, "node3") == []
    assert records_on(fault_lab, "node3") == []
