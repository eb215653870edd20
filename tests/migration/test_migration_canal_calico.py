"""Canal -> Calico live migration on a real 4-node Canal lab with bookinfo, the e2e netpol model and the
policies of plans/policies/continuity.yaml, NetworkPolicy enforced throughout (issue 15).

One lab for the module (``cc<random>`` on 198.18.24.0/24, this work's underlay), always torn down; every
test leaves it on Canal. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec
from tests.clihelp import migrator_env, run_migrator
from tests.migration.test_migration_flannel_calico import (
    CAN_BUILD_LAB,
    ROOT,
    assert_all_on,
    data_plane,
    device_names,
    monitor_reports,
    run_id,
)

UNDERLAY = "198.18.24.0/24"
PLAN = ROOT / "plans" / "canal-to-calico.yaml"
POLICIES = ROOT / "plans" / "policies" / "continuity.yaml"
NETPOL_NAMESPACES = ("x", "y", "z")

pytestmark = pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canal-home")


@pytest.fixture(scope="module")
def lab(home: Path) -> Iterator[Lab]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIGRATOR_HOME", str(home))
        name = f"cc{random.randrange(100, 999)}"
        the_lab = Lab(name)
        try:
            spec = LabSpec(
                name=name,
                nodes=4,
                cni=CniKind.CANAL,
                app=(AppKind.BOOKINFO, AppKind.NETPOL),
                underlay=UNDERLAY,
            )
            the_lab.up(spec)
            res = cli(home, "lab", "apply", "--name", name, "-f", str(POLICIES))
            assert res.returncode == 0, res.stdout + res.stderr
            yield the_lab
        finally:
            down = the_lab.down()
            assert not down.leftovers, down.leftovers


def cli(home: Path, *args: str, timeout: float = 900) -> Any:
    return run_migrator(*args, env=migrator_env(home), timeout=timeout)


def status(home: Path, lab: Lab) -> dict[str, Any]:
    res = cli(home, "lab", "status", "--name", lab.name, "-o", "json", timeout=60)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def verify_all_and_policy(home: Path, lab: Lab) -> None:
    """Every kind of communication that policy allows flows; every policy decision holds, cell by cell."""
    res = cli(home, "verify", "-t", f"lab:{lab.name}", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    ns = [arg for n in NETPOL_NAMESPACES for arg in ("--namespace", n)]
    pol = cli(home, "verify", "-t", f"lab:{lab.name}", "--scope", "policy", *ns, "-o", "json", timeout=300)
    assert pol.returncode == 0, pol.stdout + pol.stderr
    summary = json.loads(pol.stdout)["summary"]
    assert summary["holes"] == 0 and summary["breaks"] == 0, summary
    assert summary["expected_deny"] > 0 and summary["total"] > summary["expected_deny"], summary


def assert_on_canal(st: dict[str, Any]) -> None:
    assert_all_on(st, "canal")
    for n in st["nodes"]:
        assert "flannel.1" in device_names(n) and "vxlan.calico" not in device_names(n), n["devices"]
        assert [f for f in n["cni_files"] if "10-canal.conflist" in json.dumps(f)], n["cni_files"]
        assert n["schedulable"]


def test_the_lab_runs_canal_and_enforces_the_policies(home: Path, lab: Lab) -> None:
    st = status(home, lab)
    assert_on_canal(st)
    assert {p["node"] for p in st["pods"] if (p.get("owner") or "") == "DaemonSet/canal"} == {
        "node1",
        "node2",
        "node3",
        "node4",
    }
    for n in st["nodes"]:  # felix (the lab's policy agent) enforces on every Canal node
        assert n["policy"]["agent"] == "felix" and n["policy"]["enforcing"], n["policy"]
        assert not (device_names(n) & {"cni0"})  # Canal wires pods with veths and /32 routes, no bridge
    verify_all_and_policy(home, lab)


def test_the_flannel_plan_is_refused_on_canal_before_any_change(home: Path, lab: Lab) -> None:
    before = data_plane(status(home, lab))
    res = cli(home, "apply", str(ROOT / "plans" / "flannel-to-calico.yaml"), "-t", f"lab:{lab.name}", "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "the cluster runs canal, but this plan migrates from flannel" in out
    assert "plans/canal-to-calico.yaml" in out
    assert data_plane(status(home, lab)) == before


def test_dry_run_previews_every_node_and_changes_nothing(home: Path, lab: Lab) -> None:
    before = data_plane(status(home, lab))
    res = cli(home, "plan", str(PLAN), "-t", f"lab:{lab.name}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for wave, node in enumerate(["node2", "node3", "node4", "node1"], start=1):
        assert f"wave {wave}: {node}" in out
    assert '"cni_files": ["10-canal.conflist"]' in out  # the teardown playbook's vars: Canal's, not flannel's
    assert "delete DaemonSet kube-system/canal" in out
    assert data_plane(status(home, lab)) == before


def test_failure_at_the_third_node_rolls_back_to_canal(home: Path, lab: Lab) -> None:
    # waves are workers first: node2, node3, node4, node1 -> the third node is node4
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes", "--set", "fail_at_node=node4")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "failure injected on node4" in out
    assert_on_canal(status(home, lab))
    verify_all_and_policy(home, lab)


def policy_monitor(reports: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [r for r in reports if any(p["kind"] == "policy" for p in r["pairs"])]
    return found


def test_apply_keeps_policy_enforced_then_rollback_returns_to_canal(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    st = status(home, lab)
    assert_all_on(st, "calico")
    for n in st["nodes"]:
        assert "vxlan.calico" in device_names(n) and "flannel.1" not in device_names(n), n["devices"]
        assert not [f for f in n["cni_files"] if "canal" in json.dumps(f)], n["cni_files"]
        assert not [c for c in n["chains"] if "FLANNEL" in json.dumps(c)], n["chains"]
        assert n["policy"]["agent"] == "felix", n["policy"]  # now calico-node's felix
    assert not [p for p in st["pods"] if (p.get("owner") or "") == "DaemonSet/canal"]
    rid = run_id(out)
    reports = monitor_reports(home, rid)
    pods = [p for r in reports for p in r["pairs"] if p["kind"] in ("pod-cross-node", "pod-same-node")]
    assert pods and sum(p["sent"] for p in pods) > 0 and sum(p["lost"] for p in pods) == 0
    nodeport = [p for r in reports for p in r["pairs"] if p["kind"] == "nodeport"]
    sent, lost = sum(p["sent"] for p in nodeport), sum(p["lost"] for p in nodeport)
    assert sent > 0 and (sent - lost) / sent >= 0.995, (sent, lost)
    policy = policy_monitor(reports)
    assert policy["policy"]["holes"] == 0 and policy["policy"]["breaks"] == 0, policy["policy"]
    assert policy["policy"]["errors"] == 0, policy["policy"]
    # the sample held denied cases as well as allowed ones, probed during the waves
    assert policy["policy"]["expected_deny"] > 0 and policy["policy"]["expected_allow"] > 0, policy["policy"]
    report = json.loads((home / "runs" / rid / "report.json").read_text())
    assert report["status"] == "succeeded"
    verify_all_and_policy(home, lab)

    back = cli(home, "rollback", rid)
    assert back.returncode == 0, back.stdout + back.stderr
    assert_on_canal(status(home, lab))
    verify_all_and_policy(home, lab)
