"""Canal -> Calico on the kube target, from the REAL manifests (``../shared/upstream/calico``): a fake
cluster seeded from the real Calico v3.31.7 ``canal.yaml`` (its DaemonSet ``canal`` runs flanneld
``--ip-masq --kube-subnet-mgr`` and felix; its ``canal-config`` holds net-conf.json) with nodes as flanneld
annotates them; detection, the dry run of plans/canal-to-calico.yaml with the real ``calico.yaml`` (server
side, strict field validation), and the install and its undo through the CniOps port (issue 15)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.actions.cni import InstallCalico
from migrator.actions.context import StepContext
from migrator.cni import MIGRATION_LABEL, CniKind
from migrator.plan.models import CniInstallCalicoArgs
from migrator.targets.kube import KubeCluster, KubeCniOps, open_kube_target
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, LocalKube
from migrator.testing.kube_server.objects import make_node
from tests.kube.test_upstream_calico import (
    CANAL,
    _dry_run,
    assert_valid_against_real_crds,
    written_calico_objects,
)
from tests.kube.test_upstream_flannel import CALICO, UPSTREAM, real_docs

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "plans" / "canal-to-calico.yaml"

pytestmark = pytest.mark.skipif(not CANAL.is_file(), reason=f"no upstream files in {UPSTREAM}")


def seed_real_canal(api: FakeKubeApi, nodes: int = 3) -> None:
    """A cluster after ``kubectl apply -f canal.yaml``: every object of the file, and nodes as kubeadm and
    Canal's flanneld (``--kube-subnet-mgr``) leave them."""
    controllers, api.controllers_enabled = api.controllers_enabled, False
    try:
        for doc in real_docs(CANAL):
            api.add(copy.deepcopy(doc))
        for i in range(nodes):
            backend = {"VNI": 1, "VtepMAC": f"7a:1f:00:00:00:{i + 1:02x}"}
            api.add(
                make_node(
                    f"node-{i + 1}",
                    ip=f"198.18.0.{i + 10}",
                    pod_cidr=f"10.244.{i}.0/24",
                    roles=("control-plane",) if i == 0 else (),
                    annotations={
                        "flannel.alpha.coreos.com/backend-type": "vxlan",
                        "flannel.alpha.coreos.com/backend-data": json.dumps(backend),
                        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                        "flannel.alpha.coreos.com/public-ip": f"198.18.0.{i + 10}",
                    },
                )
            )
    finally:
        api.controllers_enabled = controllers


@pytest.fixture
def canal() -> Iterator[tuple[LocalKube, KubeCluster]]:
    api = FakeKubeApi()
    api.field_validation = "Strict"
    api.crd_established_delay = 0.01
    seed_real_canal(api)
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        yield local, cluster
        cluster.close()


def test_the_real_canal_is_detected_as_a_supported_wire_compatible_source(
    canal: tuple[LocalKube, KubeCluster],
) -> None:
    _, cluster = canal
    info = KubeCniOps(cluster).detect_cni()
    assert info.kind is CniKind.CANAL and info.daemonset == "canal" and info.namespace == "kube-system"
    assert info.supported_source and info.migration_blockers() == []
    fl = info.flannel
    assert fl is not None
    assert (fl.network, fl.backend_type, fl.vni, fl.port) == ("10.244.0.0/16", "vxlan", 1, 8472)
    assert fl.masquerade and fl.kube_subnet_mgr  # flanneld's --ip-masq --kube-subnet-mgr in canal.yaml
    assert info.config["configmap"] == "kube-system/canal-config" and info.config["masquerade"] == "true"
    assert info.block_size == 24 and len(info.flannel_nodes) == 3


def test_install_restricts_canal_then_undo_restores_it(
    canal: tuple[LocalKube, KubeCluster], tmp_path: Path
) -> None:
    """The real calico.yaml installed beside the real canal.yaml: calico-node selected by the migration
    label, Canal's DaemonSet by =canal; every Calico object valid against the real CRDs; undo restores
    Canal's selector and removes the labels."""
    local, cluster = canal
    ops = KubeCniOps(cluster)
    target = open_kube_target(cluster=cluster)
    ctx = StepContext(run_id="t", run_dir=tmp_path, artifacts_dir=tmp_path, target=target)
    args = CniInstallCalicoArgs(source="canal", manifest=str(CALICO))
    action = InstallCalico()
    action.preflight(ctx, args)
    ctx.prepared = action.prepare(ctx, args)
    result = action.do(ctx, args)
    assert result["source"] == "canal" and sorted(result["labelled"]) == ["node-1", "node-2", "node-3"]
    canal_ds = local.api.get("DaemonSet", "canal", "kube-system")
    calico_ds = local.api.get("DaemonSet", "calico-node", "kube-system")
    assert canal_ds is not None and calico_ds is not None
    assert canal_ds["spec"]["template"]["spec"]["nodeSelector"][MIGRATION_LABEL] == "canal"
    assert calico_ds["spec"]["template"]["spec"]["nodeSelector"][MIGRATION_LABEL] == "calico"
    assert_valid_against_real_crds(written_calico_objects(local.api))
    (pool,) = [p for p in local.api.find("IPPool") if p["metadata"]["name"] == "migrator-flannel-compatible"]
    assert pool["spec"]["cidr"] == "10.244.0.0/16" and pool["spec"]["natOutgoing"] is True
    info = ops.detect_cni()
    assert info.kind is CniKind.CANAL and CniKind.CALICO in info.present

    action.undo(ctx, args, result)
    canal_ds = local.api.get("DaemonSet", "canal", "kube-system")
    assert canal_ds is not None
    assert MIGRATION_LABEL not in (canal_ds["spec"]["template"]["spec"].get("nodeSelector") or {})
    assert local.api.get("DaemonSet", "calico-node", "kube-system") is None
    for node in local.api.find("Node"):
        assert MIGRATION_LABEL not in node["metadata"].get("labels", {})


def test_dry_run_of_canal_to_calico_with_the_real_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    api = FakeKubeApi()
    api.field_validation = "Strict"
    seed_real_canal(api)
    report = _dry_run(FakeApiServer(api), tmp_path, PLAN, nodeport_service="")
    stages = {s["stage"]: s for s in report["stages"]}
    (detected,) = stages["detect-source"]["steps"][0]["preview"]
    assert detected["detect"] == "canal" and detected["blockers"] == []
    assert (detected["vni"], detected["port"], detected["block_size"], detected["masquerade"]) == (
        1,
        8472,
        24,
        True,
    )
    text = "\n".join(str(x) for x in stages["install-calico"]["steps"][0]["preview"])
    assert "DaemonSet kube-system/calico-node created (server dry run)" in text
    assert "DaemonSet kube-system/canal nodeSelector" in text and "(server dry run)" in text
    waves = stages["migrate-nodes"]["waves"]
    assert [w["nodes"][0]["node"] for w in waves] == ["node-2", "node-3", "node-1"]
    finalize = "\n".join(str(x) for x in stages["finalize"]["steps"][0]["preview"])
    assert "DaemonSet kube-system/canal deleted (server dry run)" in finalize
    assert api.get("DaemonSet", "calico-node", "kube-system") is None  # a dry run changes nothing
