"""flannel -> Calico live migration on a real 4-node lab with bookinfo (issue 6).

Each test brings up its own lab (``rc<random>`` on 198.18.23.0/24, this work's underlay) in a private
MIGRATOR_HOME and always tears it down, also on failure. The CLI runs as a subprocess, as a user runs it.
Slow (minutes each on a loaded 2-CPU machine): run one at a time with ``-k``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, LabSpec
from tests.clihelp import migrator_env, run_migrator

UNDERLAY = os.environ.get("MIGRATOR_TEST_UNDERLAY", "198.18.23.0/24")  # another one beside a concurrent run
ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "plans" / "flannel-to-calico.yaml"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/ptp").exists()
FLANNEL_DEVICES = {"flannel.1", "cni0"}

pytestmark = pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIGRATOR_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def lab(home: Path) -> Iterator[Lab]:
    name = f"rc{random.randrange(100, 999)}"
    the_lab = Lab(name)
    try:
        the_lab.up(LabSpec(name=name, nodes=4, app=AppKind.BOOKINFO, underlay=UNDERLAY))
        yield the_lab
    finally:
        res = the_lab.down()
        assert not res.leftovers, res.leftovers


def cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_migrator(*args, env=migrator_env(home), timeout=timeout)


def status(home: Path, lab: Lab) -> dict[str, Any]:
    res = cli(home, "lab", "status", "--name", lab.name, "-o", "json", timeout=60)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def data_plane(st: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Per node: kubelet network, devices, CNI files, chains, labels (what must not change in a dry run)."""
    return {
        n["name"]: (
            n["cni"],
            sorted(json.dumps(d, sort_keys=True) for d in n["devices"]),
            sorted(json.dumps(f, sort_keys=True) for f in n["cni_files"]),
            sorted(json.dumps(c, sort_keys=True) for c in n["chains"]),
            sorted(n["labels"].items()),
            n["schedulable"],
        )
        for n in st["nodes"]
    }


def device_names(node: dict[str, Any]) -> set[str]:
    return {d["name"] if isinstance(d, dict) else str(d) for d in node["devices"]}


def run_id(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("run folder:"):
            return Path(line.split(":", 1)[1].strip()).name
    raise AssertionError(f"no run folder in output:\n{output}")


def assert_all_on(st: dict[str, Any], cni: str) -> None:
    assert {n["name"]: n["cni"] for n in st["nodes"]} == {n["name"]: cni for n in st["nodes"]}


def verify_ok(home: Path, lab: Lab) -> None:
    res = cli(home, "verify", "-t", f"lab:{lab.name}", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def monitor_reports(home: Path, rid: str) -> list[dict[str, Any]]:
    folder = home / "runs" / rid / "checks"
    return [json.loads(p.read_text()) for p in folder.glob("monitor-*/*-continuous.json")]


def test_apply_migrates_every_node_with_no_loss_outside_the_wave(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    st = status(home, lab)
    assert_all_on(st, "calico")
    for n in st["nodes"]:
        assert not (device_names(n) & FLANNEL_DEVICES), n["devices"]
        assert "vxlan.calico" in device_names(n)
        assert not [f for f in n["cni_files"] if "flannel" in json.dumps(f)], n["cni_files"]
        assert not [c for c in n["chains"] if "FLANNEL" in json.dumps(c)], n["chains"]
    assert not [p for p in st["pods"] if (p.get("owner") or "").endswith("kube-flannel-ds")]
    reports = monitor_reports(home, run_id(out))
    assert reports, "no continuous-probe report"
    pod_pairs = [p for r in reports for p in r["pairs"] if p["kind"] != "nodeport"]
    assert pod_pairs and sum(p["lost"] for p in pod_pairs) == 0
    np_pairs = [p for r in reports for p in r["pairs"] if p["kind"] == "nodeport"]
    sent, lost = sum(p["sent"] for p in np_pairs), sum(p["lost"] for p in np_pairs)
    assert sent > 0 and (sent - lost) / sent >= 0.995, (sent, lost)
    verify_ok(home, lab)


def test_failure_at_third_node_rolls_back_to_flannel(home: Path, lab: Lab) -> None:
    # waves are workers first: node2, node3, node4, node1 -> the third node is node4
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes", "--set", "fail_at_node=node4")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "failure injected on node4" in out
    st = status(home, lab)
    assert_all_on(st, "flannel")
    for n in st["nodes"]:
        assert "flannel.1" in device_names(n)  # cni0 comes with the first pod (a drained node has none)
        assert "vxlan.calico" not in device_names(n)
        assert n["schedulable"]
    verify_ok(home, lab)


def test_rollback_after_success_returns_to_flannel(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    rid = run_id(res.stdout + res.stderr)
    back = cli(home, "rollback", rid, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    st = status(home, lab)
    assert_all_on(st, "flannel")
    for n in st["nodes"]:
        assert "vxlan.calico" not in device_names(n)
    verify_ok(home, lab)


def test_dry_run_lists_everything_and_changes_nothing(home: Path, lab: Lab) -> None:
    before = data_plane(status(home, lab))
    res = cli(home, "plan", str(PLAN), "-t", f"lab:{lab.name}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for wave, node in enumerate(["node2", "node3", "node4", "node1"], start=1):
        assert f"wave {wave}: {node}" in out
    for word in ("cni.preflight", "cni.install-calico", "cni.switch-node", "node.drain", "cni.finalize"):
        assert word in out
    assert "check_mode" in out and "cni-switch-teardown.yml" in out
    assert data_plane(status(home, lab)) == before


def test_bgp_stage_leaves_bird_sessions_and_no_vxlan(home: Path, lab: Lab) -> None:
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes", "--set", "bgp=true")
    assert res.returncode == 0, res.stdout + res.stderr
    st = status(home, lab)
    assert_all_on(st, "calico")
    for n in st["nodes"]:
        assert "vxlan.calico" not in device_names(n) and not (device_names(n) & FLANNEL_DEVICES)
        assert n["bgp"] == "3/3 established", n["bgp"]
    verify_ok(home, lab)


def test_preflight_refuses_direct_routing_and_changes_nothing(home: Path, lab: Lab) -> None:
    # the lab stands for flannel's kube-flannel-cfg ConfigMap with this file (see targets/lab/cni.py)
    conf = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}
    (home / "labs" / lab.name / "flannel-net-conf.json").write_text(json.dumps(conf))
    before = data_plane(status(home, lab))
    res = cli(home, "apply", str(PLAN), "-t", f"lab:{lab.name}", "--yes")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "DirectRouting" in out
    assert data_plane(status(home, lab)) == before
