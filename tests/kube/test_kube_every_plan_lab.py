"""Every shipped plan (``plans/**/*.yaml``) renders a full dry run on the **kube** target (issue 9: "every
plan that runs on the lab must be able to run on a cluster").

The cluster side is the fake API server through the real client; the node side is real: a 4-node lab whose
SSH nodes stand in for the cluster's machines, through an Ansible inventory that names them by the
cluster's node names (``cp-01``, ``node-00001``...), as an operator's inventory would. So the fault plans'
run-start preflight reads the nodes' facts over SSH and the dry run shows the exact iptables/tc commands
for the nodes the kube target chose; a netem fault is refused up front, naming the node and netem.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrator.engine import RunStatus, apply_plan, dry_run
from migrator.engine.planio import load_plan_file
from migrator.errors import CheckFailed
from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, LabSpec
from migrator.ports import Target
from migrator.targets.kube import open_kube_target
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, flannel_api, write_calico_manifest
from tests.kube.test_upstream_calico import CANAL
from tests.kube.test_upstream_flannel import CALICO, real_docs
from tests.kube.test_upstream_weave import KUBE_PROXY, weave_objects

ROOT = Path(__file__).resolve().parents[2]
UNDERLAY = "198.18.52.0/24"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()
KUBE_NAMES = {"node1": "cp-01", "node2": "node-00001", "node3": "node-00002", "node4": "node-00003"}
PLANS = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "plans").rglob("*.yaml") if "policies" not in p.parts
)
FAULT_PLANS = {"plans/gameday-packet-loss.yaml", "plans/gameday-dns-outage.yaml", "plans/node-partition.yaml"}

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins"),
]


@dataclass
class KubeOnLab:
    target: Target
    manifest: Path
    ips: dict[str, str]  # kube node name -> the address of the lab node behind it
    server: FakeApiServer


@pytest.fixture(scope="module")
def kube_on_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeOnLab]:
    tmp = tmp_path_factory.mktemp("kube-on-lab")
    old_home = os.environ.get("MIGRATOR_HOME")
    os.environ["MIGRATOR_HOME"] = str(tmp / "home")
    name = f"kp{os.getpid() % 1000}"
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=4, pods_per_node=1, app=AppKind.NONE, underlay=UNDERLAY))
        st = lab.require()
        api = flannel_api(4, control_planes=1, pods_per_node=2)
        inventory = Path(st.inventory).read_text()
        ips: dict[str, str] = {}
        for lab_name, kube_name in KUBE_NAMES.items():
            ip = st.nodes[lab_name].ip
            ips[kube_name] = ip

            def readdress(obj: dict[str, Any], ip: str = ip) -> None:
                obj["status"]["addresses"][0]["address"] = ip

            api.update("Node", kube_name, "", readdress)
            inventory = re.sub(rf"^{lab_name} ", f"{kube_name} ", inventory, flags=re.MULTILINE)
        (tmp / "inventory.ini").write_text(inventory)
        with FakeApiServer(api) as server:
            target = open_kube_target(
                None, kubeconfig=str(server.write_kubeconfig(tmp / "kc")), inventory=tmp / "inventory.ini"
            )
            yield KubeOnLab(target, write_calico_manifest(tmp / "calico.yaml"), ips, server)
    finally:
        res = lab.down()
        if old_home is None:
            os.environ.pop("MIGRATOR_HOME", None)
        else:
            os.environ["MIGRATOR_HOME"] = old_home
        assert not res.leftovers, res.leftovers


@contextlib.contextmanager
def instead_of_flannel(api: FakeKubeApi, docs: list[dict[str, Any]]) -> Iterator[None]:
    """The cluster as if it ran another CNI: these objects (its DaemonSet with pods on every node, as the
    DaemonSet controller makes them, its ConfigMaps...) in kube-flannel's place; flannel's restored after."""
    flannel_ds = api.get("DaemonSet", "kube-flannel-ds", "kube-flannel")
    assert flannel_ds is not None
    api.remove("DaemonSet", "kube-flannel-ds", "kube-flannel")
    try:
        for doc in docs:
            api.add(copy.deepcopy(doc))
        yield
    finally:
        for doc in docs:
            api.remove(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace", ""))
        api.add(flannel_ds)


def canal_docs() -> list[dict[str, Any]]:
    """The real Canal's DaemonSet ``canal`` and ``canal-config``."""
    return [d for d in real_docs(CANAL) if d["kind"] in ("DaemonSet", "ConfigMap")]


def weave_docs() -> list[dict[str, Any]]:
    """The real Weave Net's DaemonSet (from its ``kind: List``) and kube-proxy as kubeadm writes it (the
    dual-overlay install sets the cluster CIDR of its ConfigMap, then restarts its DaemonSet)."""
    return [d for d in weave_objects() if d["kind"] == "DaemonSet"] + real_docs(KUBE_PROXY)


SOURCE_CNI = {"/canal-to-calico.yaml": canal_docs, "/weave-to-calico.yaml": weave_docs}


def source_cni(plan: str, api: FakeKubeApi) -> contextlib.AbstractContextManager[None]:
    """The plan's source CNI in flannel's place (flannel's own plans: as seeded)."""
    docs = next((make for suffix, make in SOURCE_CNI.items() if plan.endswith(suffix)), None)
    return instead_of_flannel(api, docs()) if docs is not None else contextlib.nullcontext()


def _params(plan: str, kube: KubeOnLab) -> dict[str, str]:
    if plan.endswith(("/flannel-to-calico.yaml", "/canal-to-calico.yaml")):
        return {"calico_manifest": str(kube.manifest)}
    if plan.endswith("/weave-to-calico.yaml"):  # calico-node needs its install-cni: the real manifest
        return {"calico_manifest": str(CALICO)}
    if plan.endswith("/node-partition.yaml"):
        return {"worker": "node-00002"}  # its default (node2) is a lab name
    return {}


def _steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for stage in report["stages"]:
        out += stage.get("steps") or []
        for wave in stage.get("waves") or []:
            for node in wave["nodes"]:
                out += [{**s, "wave_node": node["node"]} for s in node["steps"]]
    return out


@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_renders_a_dry_run_on_the_kube_target(kube_on_lab: KubeOnLab, plan: str) -> None:
    source = load_plan_file(ROOT / plan, _params(plan, kube_on_lab))
    with source_cni(plan, kube_on_lab.server.api):
        report = dry_run(source, kube_on_lab.target, target_spec="kube")
    assert report["dry_run"] is True and report["stages"], plan
    steps = _steps(report)
    assert steps, plan
    assert all(s.get("preview") for s in steps), [s["step"] for s in steps if not s.get("preview")]
    if plan not in FAULT_PLANS:
        return
    (fault,) = [s for s in steps if s["action"].startswith("fault.") and s["action"] != "fault.pause"]
    head, *commands = fault["preview"]
    node = fault["wave_node"]
    assert head["targets"] == [node] and node != "cp-01", head  # a worker: the control plane is excluded
    ip = kube_on_lab.ips[node]
    # read from the real node over SSH: its SSH path is kept (RETURN first), the interface is its own
    lines = [c["command"] for c in commands]
    assert all(c["node"] == node for c in commands)
    returns = [i for i, c in enumerate(lines) if "--dport 22" in c and f"-d {ip}" in c and "RETURN" in c]
    drops = [i for i, c in enumerate(lines) if c.endswith("-j DROP")]
    assert returns and drops and max(returns) < min(drops), json.dumps(lines, indent=1)
    if plan.endswith("packet-loss.yaml"):
        assert any("--probability 0.3000" in c for c in lines) and any("-o eth0" in c for c in lines)
    if plan.endswith("node-partition.yaml"):
        assert head["peers"] == sorted(n for n in kube_on_lab.ips if n != node)
        assert all(any(f"-d {kube_on_lab.ips[p]}/32" in c for c in lines) for p in head["peers"])
    if plan.endswith("dns-outage.yaml"):
        assert any("--dport 53" in c for c in lines) and any("-t raw -I PREROUTING" in c for c in lines)


def test_a_netem_fault_is_refused_up_front_on_the_kube_target(kube_on_lab: KubeOnLab, tmp_path: Path) -> None:
    plan = tmp_path / "delay.yaml"
    plan.write_text(
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: delay}\nspec:\n  stages:\n"
        "    - name: slow\n      steps:\n"
        "        - action: fault.delay\n"
        "          args: {targets: {names: [node-00001]}, delay: 100ms, duration: 10s}\n"
    )
    with pytest.raises(CheckFailed) as err:
        dry_run(load_plan_file(plan, {}), kube_on_lab.target, target_spec="kube")
    assert "node-00001" in str(err.value) and "netem" in str(err.value), str(err.value)


def test_a_fault_plan_applies_on_the_kube_target_and_heals(kube_on_lab: KubeOnLab, tmp_path: Path) -> None:
    """Not only the dry run: the run's lock is the cluster's Lease, the fault goes onto the real node
    through the inventory, is read back as evidence, and is reverted with no drift."""
    plan = tmp_path / "loss.yaml"
    plan.write_text(
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: kube-loss}\nspec:\n  stages:\n"
        "    - name: lossy\n      steps:\n"
        "        - action: fault.loss\n"
        "          args: {targets: {names: [node-00002]}, percent: 20%, duration: 3s, grace: 5s}\n"
    )
    api = kube_on_lab.server.api
    api.requests.clear()
    result = apply_plan(load_plan_file(plan, {}), kube_on_lab.target, target_spec="kube")
    assert result.status == RunStatus.SUCCEEDED, result.message
    leases = [(m, p) for m, p, _q in api.requests if "/leases" in p and m != "GET"]
    assert leases and leases[0][0] in ("POST", "PUT", "PATCH"), api.requests[:20]
    assert api.get("Lease", "migrator-run-lock", "kube-system") is None  # released at the end
    events = [json.loads(line) for line in (result.run_dir / "journal.jsonl").read_text().splitlines()]
    (end,) = [e for e in events if e["type"] == "step.end" and e.get("step") == "fault.loss"]
    assert end["outcome"] == "succeeded", end
    out = end["result"]
    shown = json.dumps(out["evidence"])
    assert "statistic" in shown and "0.2000" in shown, shown  # read back from the node while in effect
    assert out["drift"] == {"node-00002": []}, out
