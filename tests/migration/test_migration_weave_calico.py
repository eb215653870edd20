"""Weave Net -> Calico by the dual-overlay method on a real 4-node Weave lab with bookinfo, the e2e netpol
model and the policies of plans/policies/continuity.yaml, NetworkPolicy enforced throughout (issue 15).

One lab for the module (``cw<random>`` on 198.18.25.0/24, this work's underlay), always torn down; every
test leaves it on Weave. The CLI runs as a subprocess, as a user runs it.
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

UNDERLAY = "198.18.25.0/24"
PLAN = ROOT / "plans" / "weave-to-calico.yaml"
WEAVE_DEVICES = {"weave", "vxlan-6784"}

pytestmark = pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weave-home")


@pytest.fixture(scope="module")
def lab(home: Path) -> Iterator[Lab]:
    yield from policy_lab(home, "cw", CniKind.WEAVE, UNDERLAY)


def assert_on_weave(st: dict[str, Any]) -> None:
    """Every node on Weave, nothing of Calico's left (its device, chains, CNI configs, MIGRATOR-NONAT)."""
    assert_all_on(st, "weave")
    for n in st["nodes"]:
        assert device_names(n) >= WEAVE_DEVICES and "vxlan.calico" not in device_names(n), n["devices"]
        files = json.dumps(n["cni_files"])
        assert "10-weave.conflist" in files and "calico" not in files and "disabled" not in files, files
        assert not [c for c in n["chains"] if "cali-" in json.dumps(c) or "MIGRATOR" in json.dumps(c)]
        assert n["schedulable"]


def test_the_lab_runs_weave_and_its_npc_enforces_the_policies(home: Path, lab: Lab) -> None:
    st = status(home, lab)
    assert_on_weave(st)
    for n in st["nodes"]:
        assert n["policy"]["agent"] == "weave-npc" and n["policy"]["enforcing"], n["policy"]
    verify_all_and_policy(home, lab)


@pytest.mark.parametrize(
    ("cidr", "why"),
    [
        ("10.32.0.0/16", "overlaps Weave Net's IPALLOC_RANGE 10.32.0.0/12"),
        ("10.96.0.0/16", "overlaps the service range 10.96.0.0/12"),
        ("198.18.25.0/24", "holds the address of node(s) node1, node2, node3"),
        ("10.250.0.0/25", "holds 2 blocks of /26, fewer than the 4 nodes"),
    ],
)
def test_a_calico_cidr_that_cannot_work_is_refused_before_any_change(
    home: Path, lab: Lab, cidr: str, why: str
) -> None:
    before = data_plane(status(home, lab))
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes", "--set", f"calico_cidr={cidr}")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "preflight failed, nothing was changed" in out and why in out, out
    assert data_plane(status(home, lab)) == before


def test_dry_run_previews_the_dual_overlay_and_changes_nothing(home: Path, lab: Lab) -> None:
    before = data_plane(status(home, lab))
    res = cli(home, "plan", str(PLAN), "-t", f"lab:{lab.name}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for wave, node in enumerate(["node2", "node3", "node4", "node1"], start=1):
        assert f"wave {wave}: {node}" in out
    assert "dual-overlay-nonat.yml" in out and '"cni_state": "disabled"' in out
    assert "kube-proxy clusterCIDR" in out and "'cni_conf_name': '20-calico.conflist'" in out
    assert data_plane(status(home, lab)) == before


def test_failure_at_the_third_node_rolls_back_to_weave(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes", "--set", "fail_at_node=node4")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "failure injected on node4" in out
    assert_on_weave(status(home, lab))
    verify_all_and_policy(home, lab)


def test_apply_keeps_policy_enforced_then_rollback_returns_to_weave(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    st = status(home, lab)
    assert_all_on(st, "calico")
    for n in st["nodes"]:
        assert "vxlan.calico" in device_names(n) and not (device_names(n) & WEAVE_DEVICES), n["devices"]
        assert not [f for f in n["cni_files"] if "weave" in json.dumps(f)], n["cni_files"]
        assert not [c for c in n["chains"] if "WEAVE" in json.dumps(c) or "MIGRATOR" in json.dumps(c)]
        assert n["policy"]["agent"] == "felix", n["policy"]
    assert not [p for p in st["pods"] if (p.get("owner") or "") == "DaemonSet/weave-net"]
    pod_ips = [p["ip"] for p in st["pods"] if not p.get("host_network") and p.get("ip")]
    assert pod_ips and all(ip.startswith("10.244.") for ip in pod_ips), pod_ips  # Calico's pool, not Weave's
    rid = run_id(out)
    reports = monitor_reports(home, rid)
    assert_no_loss_outside_the_wave(reports)
    verify_all_and_policy(home, lab)

    back = cli(home, "rollback", rid, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert_on_weave(status(home, lab))
    verify_all_and_policy(home, lab)
