"""The real ``plans/flannel-to-calico.yaml`` dry run through the ENGINE on the kube target (fake API
server, real client): correct waves, server-side dry-run results, nothing changed."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from migrator.cni import CniKind
from migrator.engine import dry_run
from migrator.engine.planio import load_plan_file
from migrator.targets.kube import KubeCluster, KubeCniOps, open_kube_target
from migrator.testing.kube_server import (
    FakeApiServer,
    FakeClusterProcess,
    LocalKube,
    flannel_api,
    write_calico_manifest,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer(flannel_api(5, control_planes=1, pods_per_node=2))


def test_flannel_to_calico_dry_run_on_the_kube_target(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    manifest = write_calico_manifest(tmp_path / "calico.yaml")
    with server:
        target = open_kube_target(None, kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")))
        assert isinstance(target.cni, KubeCniOps)
        before = server.api.last_rv
        server.api.requests.clear()
        source = load_plan_file(
            ROOT / "plans" / "flannel-to-calico.yaml",
            {"calico_manifest": str(manifest), "max_unavailable": "2"},
        )
        report = dry_run(source, target, target_spec="kube")
        writes = [(m, p, q) for m, p, q in server.api.requests if m != "GET"]
        assert server.api.last_rv == before, "a dry run stores nothing"
        assert all(q.get("dryRun") == "All" for _, _, q in writes), writes
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["detect-source"]["steps"][0]["preview"][0]["detect"] == "flannel"
    assert stages["detect-source"]["steps"][0]["preview"][0]["blockers"] == []
    install = [line for line in stages["install-calico"]["steps"][0]["preview"] if isinstance(line, str)]
    text = "\n".join(install)
    assert (
        "kube-flannel-ds nodeSelector {} -> {'projectcalico.org/node-network-during-migration': 'flannel'}"
        in text
    )
    assert "DaemonSet kube-system/calico-node created (server dry run)" in text
    assert "ServiceAccount kube-system/calico-node created (server dry run)" in text
    assert "IPPool migrator-flannel-compatible created (server dry run)" in text
    assert "FelixConfiguration default created (server dry run) (not validated" in text
    waves = [[n["node"] for n in w["nodes"]] for w in stages["migrate-nodes"]["waves"]]
    assert waves == [["node-00001", "node-00002"], ["node-00003", "node-00004"], ["cp-01"]]
    first = stages["migrate-nodes"]["waves"][0]["nodes"][0]["steps"]
    drain = next(s for s in first if s["step"] == "drain")["preview"][0]
    assert drain["evicts"] == ["shop/web-00001-0"]
    switch = json.dumps(next(s for s in first if s["step"] == "switch-to-calico")["preview"])
    assert "no node executor" in switch, "without an inventory the check-mode preview says why it is missing"
    finalize = "\n".join(str(x) for x in stages["finalize"]["steps"][0]["preview"])
    assert "DaemonSet kube-flannel/kube-flannel-ds deleted (server dry run)" in finalize


def test_cni_ops_on_the_fake_cluster(tmp_path: Path) -> None:
    manifest = write_calico_manifest(tmp_path / "calico.yaml")
    with LocalKube(flannel_api(5, control_planes=1, pods_per_node=2)) as local:
        cluster = local.cluster(watch_chunk=1.0)
        cni = KubeCniOps(cluster)
        info = cni.detect_cni()
        assert info.kind is CniKind.FLANNEL and info.settings.network == "10.244.0.0/16"
        assert info.nodes["node-00001"].pod_cidr and info.nodes["node-00001"].vtep_mac
        assert info.agents == {"flannel": {}}
        label = {"projectcalico.org/node-network-during-migration": "calico"}
        cni.apply_cni_agent(CniKind.CALICO, node_selector=label, config={"manifest": str(manifest)})
        ds = local.api.get("DaemonSet", "calico-node", "kube-system")
        assert ds is not None and ds["spec"]["template"]["spec"]["nodeSelector"] == label
        pool = local.api.get("IPPool", "migrator-flannel-compatible")
        assert pool is not None and pool["spec"]["blockSize"] == 24 and pool["spec"]["vxlanMode"] == "Always"
        assert cni.detect_cni().agents["calico-node"] == label
        ready, why = cni.cni_agent_ready(CniKind.CALICO, "node-00001")
        assert not ready and "no calico-node pod" in why
        cluster.label_node("node-00001", label)
        cluster.wait_daemonset_pod_ready("kube-system", "calico-node", "node-00001", timeout=10)
        assert cni.cni_agent_ready(CniKind.CALICO, "node-00001")[0]
        cni.apply_cni_agent(CniKind.CALICO, node_selector=None)
        ds = local.api.get("DaemonSet", "calico-node", "kube-system")
        assert ds is not None and not ds["spec"]["template"]["spec"].get("nodeSelector")
        assert cni.delete_cni_agent(CniKind.FLANNEL) == ["DaemonSet kube-flannel/kube-flannel-ds deleted"]
        assert cni.delete_cni_agent(CniKind.FLANNEL) == ["flannel DaemonSet already absent"]
        cluster.close()


def test_fake_cluster_process_serves_a_flannel_cluster_and_stops(tmp_path: Path) -> None:
    """The benches' fake cluster in its own process: pod CIDRs inside flannel's network beyond 256 nodes
    (a /16 holds only 256 node /24s), and no process left behind."""
    with FakeClusterProcess(300, tmp_path / "kc", pods_per_node=1, lifetime=120) as fake:
        assert fake.url.startswith("http://127.0.0.1:")
        cluster = KubeCluster(kubeconfig=str(tmp_path / "kc"))
        nodes = cluster.list_nodes()
        assert len(nodes) == 300 and sum(n.is_control_plane for n in nodes) == 3
        info = KubeCniOps(cluster).detect_cni()
        network = ipaddress.ip_network(info.settings.network)
        cidrs = {ipaddress.ip_network(fl.pod_cidr) for fl in info.nodes.values() if fl.pod_cidr}
        assert len(cidrs) == 300 and all(c.subnet_of(network) for c in cidrs)
        cluster.close()
        proc = fake._proc
        assert proc is not None and proc.poll() is None
    assert proc.wait(timeout=1) is not None
