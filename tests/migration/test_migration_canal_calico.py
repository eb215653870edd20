"""Canal -> Calico live migration on a real 4-node Canal lab with bookinfo, the e2e netpol model and the
policies of plans/policies/continuity.yaml, NetworkPolicy enforced throughout (issue 15).

One lab for the module (``cc<random>`` on 198.18.24.0/24, this work's underlay), always torn down; every
test leaves it on Canal. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import CniKind
from tests.migration.policylab import (
    assert_no_loss_outside_the_wave,
    cli,
    policy_lab,
    status,
    verify_all_and_policy,
)
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

pytestmark = pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canal-home")


@pytest.fixture(scope="module")
def lab(home: Path) -> Iterator[Lab]:
    yield from policy_lab(home, "cc", CniKind.CANAL, UNDERLAY)


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
    assert_no_loss_outside_the_wave(reports)
    report = json.loads((home / "runs" / rid / "report.json").read_text())
    assert report["status"] == "succeeded"
    verify_all_and_policy(home, lab)

    back = cli(home, "rollback", rid, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert_on_canal(status(home, lab))
    verify_all_and_policy(home, lab)
