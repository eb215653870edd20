"""Installing Calico from the REAL v3.31.7 manifests (``../shared/upstream/calico``) onto a fake cluster
seeded from the REAL kube-flannel.yml: every object migrator writes passes the real CRDs' openAPIV3Schema
under strict field validation; ``kind: List`` manifests, Canal's manifest and the operator's
custom-resources.yaml; the fake server refusing what a real one refuses; and the real plan's dry run
(VNI/port expectations, Weave Net, a ClusterIP ``nodeport_service`` from the real bookinfo)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.actions.cni import InstallCalico, Preflight
from migrator.actions.context import StepContext
from migrator.cni import CniKind
from migrator.engine import dry_run
from migrator.engine.planio import load_plan_file
from migrator.errors import CheckFailed, MigratorError, StepFailed, UsageError
from migrator.plan.models import CniInstallCalicoArgs, CniPreflightArgs
from migrator.targets.kube import KubeCluster, KubeCniOps, open_kube_target
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, LocalKube, crd_schema
from migrator.testing.kube_server.objects import make_node
from tests.kube.test_upstream_flannel import (
    CALICO,
    KUBE_FLANNEL,
    UPSTREAM,
    real_docs,
    real_net_conf,
    seed_real_flannel,
)

ROOT = Path(__file__).resolve().parents[2]
CANAL = UPSTREAM / "calico" / "canal.yaml"
OPERATOR_CRS = UPSTREAM / "calico" / "custom-resources.yaml"
WEAVE = UPSTREAM / "weave" / "weave-daemonset-k8s-1.11.yaml"
BOOKINFO = UPSTREAM / "istio" / "bookinfo.yaml"
LABEL = {"projectcalico.org/node-network-during-migration": "calico"}

pytestmark = pytest.mark.skipif(not KUBE_FLANNEL.is_file(), reason=f"no upstream files in {UPSTREAM}")


@pytest.fixture
def strict() -> Iterator[tuple[LocalKube, KubeCluster]]:
    """The real flannel cluster; the fake refuses unknown fields of custom resources, as kubectl's
    default (``--validate=strict``) makes a real server do."""
    api = FakeKubeApi()
    api.field_validation = "Strict"
    api.crd_established_delay = 0.01
    seed_real_flannel(api)
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        yield local, cluster
        cluster.close()


def calico_crds() -> dict[str, dict[str, Any]]:
    return {
        d["spec"]["names"]["kind"]: d for d in real_docs(CALICO) if d["kind"] == "CustomResourceDefinition"
    }


def written_calico_objects(api: FakeKubeApi) -> list[dict[str, Any]]:
    kinds = ("IPPool", "FelixConfiguration", "IPAMBlock", "BlockAffinity", "IPAMHandle")
    return [o for kind in kinds for o in api.find(kind)]


def assert_valid_against_real_crds(objects: list[dict[str, Any]]) -> None:
    crds = calico_crds()
    assert objects
    for obj in objects:
        schema = crds[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        found = crd_schema.check(obj, schema)
        assert found.errors == [] and found.unknown == [], (obj["kind"], obj["metadata"]["name"], found)


# ------------------------------------------------------------------------------------------ the install


def test_install_from_the_real_calico_yaml_writes_only_schema_valid_objects(
    strict: tuple[LocalKube, KubeCluster],
) -> None:
    local, cluster = strict
    conf = {**real_net_conf(), "Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789, "MTU": 1450}}
    local.api.update(
        "ConfigMap",
        "kube-flannel-cfg",
        "kube-flannel",
        lambda cm: cm["data"].update({"net-conf.json": json.dumps(conf)}),
    )
    for name in ("node-1", "node-2", "node-3"):  # flanneld restarted with the new VNI

        def restarted(node: dict[str, Any], name: str = name) -> None:
            ann = node["metadata"]["annotations"]
            data = json.loads(ann["flannel.alpha.coreos.com/backend-data"])
            ann["flannel.alpha.coreos.com/backend-data"] = json.dumps({**data, "VNI": 4096})

        local.api.update("Node", name, "", restarted)
    ops = KubeCniOps(cluster)
    assert ops.detect_cni().migration_blockers() == []
    lines = ops.apply_cni_agent(CniKind.CALICO, node_selector=LABEL, config={"manifest": str(CALICO)})
    assert "IPPool migrator-flannel-compatible created" in lines
    assert any(line.startswith("node-3: ") or "IPAMBlock 10-244-2-0-24" in line for line in lines), lines
    ds = local.api.get("DaemonSet", "calico-node", "kube-system")
    assert ds is not None
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", **LABEL}
    env = {v["name"]: v.get("value") for v in pod["containers"][0]["env"]}
    assert env["FELIX_VXLANMTU"] == "1400"
    felix = local.api.get("FelixConfiguration", "default")
    assert felix is not None and felix["spec"] == {"vxlanVNI": 4096, "vxlanPort": 4789, "vxlanMTU": 1400}
    pool = local.api.get("IPPool", "migrator-flannel-compatible")
    assert pool is not None and pool["spec"]["blockSize"] == 24 and pool["spec"]["natOutgoing"] is True
    assert len(local.api.find("IPAMBlock")) == 3
    assert_valid_against_real_crds(written_calico_objects(local.api))


def test_a_kind_list_manifest_gets_the_selector_and_its_crds_are_seen(
    strict: tuple[LocalKube, KubeCluster], tmp_path: Path
) -> None:
    """The real calico.yaml as one ``kind: List`` (as ``kubectl get -o yaml`` writes it): calico-node still
    gets the migration selector and the IPAM CRDs in the List are found (IPAM not skipped)."""
    local, cluster = strict
    listed = tmp_path / "calico-list.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": real_docs(CALICO)}))
    ops = KubeCniOps(cluster)
    preview = ops.apply_cni_agent(
        CniKind.CALICO, node_selector=LABEL, config={"manifest": str(listed)}, dry_run=True
    )
    text = "\n".join(preview)
    assert "skipped" not in text and "IPAMBlock 10-244-0-0-24 created (server dry run)" in text
    assert "DaemonSet kube-system/calico-node created (server dry run)" in text
    ops.apply_cni_agent(CniKind.CALICO, node_selector=LABEL, config={"manifest": str(listed)})
    ds = local.api.get("DaemonSet", "calico-node", "kube-system")
    assert ds is not None and ds["spec"]["template"]["spec"]["nodeSelector"][next(iter(LABEL))] == "calico"
    assert len(local.api.find("IPAMBlock")) == 3
    assert_valid_against_real_crds(written_calico_objects(local.api))


def test_canal_yaml_as_the_calico_manifest_is_refused(strict: tuple[LocalKube, KubeCluster]) -> None:
    local, cluster = strict
    with pytest.raises(UsageError) as err:
        KubeCniOps(cluster).apply_cni_agent(
            CniKind.CALICO, node_selector=LABEL, config={"manifest": str(CANAL)}
        )
    assert "is Canal's (DaemonSet kube-system/canal runs flannel and calico-node's policy together)" in str(
        err.value
    )
    assert local.api.get("DaemonSet", "canal", "kube-system") is None and local.api.find("IPPool") == []


@pytest.mark.parametrize("operator_crds", [False, True])
def test_the_operators_custom_resources_are_refused_and_their_pool_never_applied(
    strict: tuple[LocalKube, KubeCluster], operator_crds: bool
) -> None:
    local, cluster = strict
    if not operator_crds:  # a cluster without tigera-operator.yaml: the fake serves no Installation
        local.api.resources = [r for r in local.api.resources if r.group != "operator.tigera.io"]
        local.api.types_by_path = {
            k: v for k, v in local.api.types_by_path.items() if k[0] != "operator.tigera.io"
        }
    for dry in (True, False):
        with pytest.raises(UsageError) as err:
            KubeCniOps(cluster).apply_cni_agent(
                CniKind.CALICO, node_selector=LABEL, config={"manifest": str(OPERATOR_CRS)}, dry_run=dry
            )
        message = str(err.value)
        assert "Tigera operator's custom resources (Installation default, APIServer default" in message
        assert (
            "192.168.0.0/16 (blockSize 26, VXLANCrossSubnet) is not flannel's network 10.244.0.0/16"
            in message
        )
    assert local.api.find("IPPool") == []
    assert not operator_crds or local.api.find("Installation") == []


# ------------------------------------------------------------------------------ the fake server refuses


def test_the_fake_server_refuses_what_the_real_ippool_crd_refuses(tmp_path: Path) -> None:
    api = FakeKubeApi()
    api.crd_established_delay = 0.01
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        cluster.apply([calico_crds()["IPPool"]])
        pool = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "p"}}
        with pytest.raises(MigratorError) as err:
            cluster.apply([{**pool, "spec": {"cidr": "10.244.0.0/16", "blockSize": "26"}}])
        assert "spec.blockSize in body must be of type integer" in str(err.value)
        with pytest.raises(MigratorError) as err:
            cluster.apply([{**pool, "spec": {"blockSize": 26}}])
        assert "spec.cidr: Required value" in str(err.value)
        with pytest.raises(MigratorError) as err:
            cluster.apply([{**pool, "spec": {"cidr": "10.244.0.0/16", "assignmentMode": "Sometimes"}}])
        assert 'Unsupported value: "Sometimes"' in str(err.value)
        # an unknown field: pruned (fieldValidation Warn, the server's default), refused when Strict
        cluster.apply([{**pool, "spec": {"cidr": "10.244.0.0/16", "vxlanMod": "Always"}}])
        stored = api.get("IPPool", "p")
        assert stored is not None and stored["spec"] == {"cidr": "10.244.0.0/16"}
        api.field_validation = "Strict"
        with pytest.raises(MigratorError) as err:
            cluster.apply([{**pool, "spec": {"cidr": "10.244.0.0/16", "vxlanMod": "Always"}}])
        assert 'strict decoding error: unknown field "spec.vxlanMod"' in str(err.value)
        cluster.close()


# ------------------------------------------------------------------------------------ the plan's dry run


def _dry_run(
    server: FakeApiServer,
    tmp_path: Path,
    plan: Path = ROOT / "plans" / "flannel-to-calico.yaml",
    **params: str,
) -> dict[str, Any]:
    """The plan's dry run on the kube target served by ``server``, with the real calico.yaml."""
    with server:
        target = open_kube_target(None, kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")))
        source = load_plan_file(plan, {"calico_manifest": str(CALICO), **params})
        report: dict[str, Any] = dry_run(source, target, target_spec="kube")
        return report


def _flannel_server() -> FakeApiServer:
    api = FakeKubeApi()
    seed_real_flannel(api)
    return FakeApiServer(api)


def test_dry_run_with_the_real_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    server = _flannel_server()
    report = _dry_run(server, tmp_path, nodeport_service="")
    stages = {s["stage"]: s for s in report["stages"]}
    (detected,) = stages["detect-source"]["steps"][0]["preview"]
    assert detected["detect"] == "flannel" and detected["blockers"] == []
    assert (detected["vni"], detected["port"], detected["block_size"], detected["masquerade"]) == (
        1,
        8472,
        24,
        True,
    )
    text = "\n".join(str(x) for x in stages["install-calico"]["steps"][0]["preview"])
    assert "DaemonSet kube-system/calico-node created (server dry run)" in text
    assert "CustomResourceDefinition ippools.crd.projectcalico.org created (server dry run)" in text


def test_dry_run_refuses_a_vni_the_plan_does_not_expect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VNI/port expectations are checked in the dry run, as the run checks them (before: exit 0)."""
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    with pytest.raises(CheckFailed) as err:
        _dry_run(_flannel_server(), tmp_path, vxlan_vni="4096", vxlan_port="4789", nodeport_service="")
    message = str(err.value)
    assert "preflight would fail, nothing would be changed" in message
    assert "flannel's VNI is 1, the plan expects 4096 (vxlan_vni)" in message
    assert "flannel's VXLAN port is 8472, the plan expects 4789 (vxlan_port)" in message


def test_dry_run_refuses_canal_yaml_as_the_calico_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    with pytest.raises(CheckFailed) as err:
        _dry_run(_flannel_server(), tmp_path, calico_manifest=str(CANAL), nodeport_service="")
    assert "stage 'install-calico' step 'install-calico'" in str(err.value)
    assert "is Canal's" in str(err.value)


def _weave_server() -> FakeApiServer:
    api = FakeKubeApi()
    api.controllers_enabled = False
    (listed,) = real_docs(WEAVE)
    for obj in listed["items"]:
        api.add(copy.deepcopy(obj))
    for i in range(3):
        api.add(make_node(f"node-{i + 1}", ip=f"198.18.0.{i + 10}", pod_cidr=f"10.244.{i}.0/24"))
    api.controllers_enabled = True
    return FakeApiServer(api)


def test_weave_with_the_flannel_plan_shows_no_flannel_defaults_and_names_the_weave_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weave Net is a supported source (the dual-overlay method), but not of plans/flannel-to-calico.yaml:
    its preview shows Weave's range, no flannel VNI or port, and the dry run refuses naming the plan to
    use."""
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    server = _weave_server()
    with server:
        target = open_kube_target(None, kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")))
        assert target.cni is not None
        info = target.cni.detect_cni()
        assert info.kind is CniKind.WEAVE and info.config["IPALLOC_RANGE"] == "10.32.0.0/12"
        ctx = StepContext(run_id="t", run_dir=tmp_path, artifacts_dir=tmp_path, target=target, dry_run=True)
        (line,) = Preflight().preview(ctx, CniPreflightArgs(expect_vni=1, expect_port=8472))
        assert isinstance(line, dict) and "vni" not in line and "port" not in line
        assert line["detect"] == "weave" and line["weave_range"] == "10.32.0.0/12"
        assert line["blockers"] == [
            "the cluster runs weave, but this plan migrates from flannel: use a plan whose source is weave"
            " (plans/weave-to-calico.yaml)"
        ]
        assert InstallCalico().preview(ctx, CniInstallCalicoArgs()) == [
            "would fail: the source CNI is weave, not flannel"
        ]
        source = load_plan_file(ROOT / "plans" / "flannel-to-calico.yaml", {"calico_manifest": str(CALICO)})
        with pytest.raises(CheckFailed) as err:
            dry_run(source, target, target_spec="kube")
    assert "the cluster runs weave, but this plan migrates from flannel" in str(err.value)
    assert "(plans/weave-to-calico.yaml)" in str(err.value)


def test_dry_run_checks_the_nodeport_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real bookinfo's productpage is a ClusterIP Service: the monitor's preview says the run would
    fail on it (the run raises when its first wave starts)."""
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    server = _flannel_server()
    server.api.controllers_enabled = False
    for obj in real_docs(BOOKINFO):
        if obj["kind"] in ("Service", "ServiceAccount", "Deployment"):
            server.api.add({**obj, "metadata": {**obj["metadata"], "namespace": "default"}})
    server.api.controllers_enabled = True
    report = _dry_run(server, tmp_path)
    monitors = {m["check"]: m for s in report["stages"] for m in s["monitor"]}
    lines = monitors["productpage-nodeport"]["preview"]
    assert "would fail: continuous-probe: service default/productpage has no TCP NodePort" in lines[1]


def test_an_installed_calico_node_whose_felix_env_overrides_the_mtu_is_refused(
    strict: tuple[LocalKube, KubeCluster],
) -> None:
    """calico-node from the real calico.yaml installed before the run (no calico_manifest): its
    FELIX_VXLANMTU comes from calico-config, and Felix ranks it above the FelixConfiguration, so with
    flannel's MTU 1450 the install refuses and says what to set."""
    local, cluster = strict
    conf = {**real_net_conf(), "Backend": {"Type": "vxlan", "MTU": 1450}}
    local.api.update(
        "ConfigMap",
        "kube-flannel-cfg",
        "kube-flannel",
        lambda cm: cm["data"].update({"net-conf.json": json.dumps(conf)}),
    )
    local.api.controllers_enabled = False
    local.api.add(next(d for d in real_docs(CALICO) if d["kind"] == "DaemonSet"))
    local.api.controllers_enabled = True
    ops = KubeCniOps(cluster)
    (line,) = ops.apply_cni_agent(CniKind.CALICO, node_selector=LABEL, config={"mode": "vxlan"}, dry_run=True)
    assert line.startswith("would fail: calico-node's FELIX_VXLANMTU is {'configMapKeyRef'")
    with pytest.raises(StepFailed) as err:
        ops.apply_cni_agent(CniKind.CALICO, node_selector=LABEL, config={"mode": "vxlan"})
    assert "set it to 1400 (flannel's MTU 1450 less VXLAN's 50 bytes)" in str(err.value)
    ds = local.api.get("DaemonSet", "calico-node", "kube-system")
    assert ds is not None and ds["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
