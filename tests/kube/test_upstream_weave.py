"""Weave Net -> Calico (the dual-overlay method) on the kube target, from the REAL manifests: a fake cluster
seeded from the real ``weave-daemonset-k8s-1.11.yaml`` (a ``kind: List``) and kube-proxy as kubeadm leaves
it, under strict field validation; the Calico objects of the real ``calico.yaml`` / ``calico-vxlan.yaml``
installed beside Weave (every one valid against the real CRD schemas), kube-proxy's cluster CIDR, the undo,
the preflight's refusals and the dry run of plans/weave-to-calico.yaml (issue 15)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.actions.cni import Preflight
from migrator.actions.cni_dual import DualInstall, calico_config, covering
from migrator.actions.context import StepContext
from migrator.cni import MIGRATION_LABEL, CniKind
from migrator.engine import dry_run
from migrator.engine.planio import load_plan_file
from migrator.errors import CheckFailed, StepFailed, UsageError
from migrator.plan.models import CniDualInstallArgs, CniPreflightArgs
from migrator.targets.kube import KubeCluster, KubeCniOps, open_kube_target
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, LocalKube
from migrator.testing.kube_server.objects import make_node
from tests.kube.test_upstream_calico import (
    CANAL,
    OPERATOR_CRS,
    WEAVE,
    assert_valid_against_real_crds,
    calico_crds,
    written_calico_objects,
)
from tests.kube.test_upstream_flannel import CALICO, UPSTREAM, real_docs, seed_real_flannel

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "plans" / "weave-to-calico.yaml"
CALICO_VXLAN = UPSTREAM / "calico" / "calico-vxlan.yaml"
KUBE_PROXY = Path(__file__).parent / "data" / "kubeadm-kube-proxy.yaml"
WEAVE_RANGE = "10.32.0.0/12"  # IPALLOC_RANGE's default: the real manifest does not set it
NEW_CIDR = "10.244.0.0/16"
NODES = {"node-1": "198.18.0.10", "node-2": "198.18.0.11", "node-3": "198.18.0.12"}

pytestmark = pytest.mark.skipif(not WEAVE.is_file(), reason=f"no upstream files in {UPSTREAM}")


def weave_objects() -> list[dict[str, Any]]:
    """The objects of the real Weave manifest (its one ``kind: List`` unpacked)."""
    (listed,) = real_docs(WEAVE)
    assert listed["kind"] == "List"
    return [copy.deepcopy(o) for o in listed["items"]]


def seed_real_weave(api: FakeKubeApi, *, kube_proxy: bool = True) -> None:
    """A cluster after ``kubeadm init`` (no pod subnet), ``kubectl apply -f`` of the real Weave manifest and
    kubeadm's kube-proxy; nodes with an ExternalIP listed before their InternalIP."""
    for group in ("crd.projectcalico.org", "operator.tigera.io"):  # no Calico yet: no IPPool kind either
        api.unregister_group(group)
    controllers, api.controllers_enabled = api.controllers_enabled, False
    try:
        for obj in weave_objects():
            api.add(obj)
        for i, (name, ip) in enumerate(NODES.items()):
            node = make_node(name, ip=ip, roles=("control-plane",) if i == 0 else ())
            node["status"]["addresses"].insert(0, {"type": "ExternalIP", "address": f"203.0.113.{i + 10}"})
            api.add(node)
        if kube_proxy:
            for obj in real_docs(KUBE_PROXY):
                api.add(obj)
    finally:
        api.controllers_enabled = controllers


@pytest.fixture
def weave() -> Iterator[tuple[LocalKube, KubeCluster]]:
    api = FakeKubeApi()
    api.field_validation = "Strict"
    api.crd_established_delay = 0.01
    seed_real_weave(api)
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        yield local, cluster
        cluster.close()


def dual_config(manifest: Path | None = CALICO, **args: Any) -> dict[str, str]:
    """What ``cni.dual-install`` passes to ``apply_cni_agent``."""
    parsed = CniDualInstallArgs(calico_cidr=NEW_CIDR, manifest=str(manifest or ""), **args)
    return calico_config(parsed, WEAVE_RANGE)


def objects(api: FakeKubeApi, kind: str) -> list[dict[str, Any]]:
    """Every object of a kind, none when the kind is not served (its CRD not created)."""
    try:
        return api.find(kind)
    except KeyError:
        return []


def felix_default(api: FakeKubeApi) -> dict[str, Any] | None:
    return next((f for f in objects(api, "FelixConfiguration") if f["metadata"]["name"] == "default"), None)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container.get("env") or []}


def calico_node(api: FakeKubeApi) -> dict[str, Any]:
    ds = api.get("DaemonSet", "calico-node", "kube-system")
    assert ds is not None
    return ds


def container(ds: dict[str, Any], name: str, key: str = "containers") -> dict[str, Any]:
    (found,) = [c for c in ds["spec"]["template"]["spec"][key] if c["name"] == name]
    return found


def kube_proxy_conf(api: FakeKubeApi) -> dict[str, Any]:
    cm = api.get("ConfigMap", "kube-proxy", "kube-system")
    assert cm is not None
    conf: dict[str, Any] = yaml.safe_load(cm["data"]["config.conf"])
    return conf


def ctx_for(cluster: KubeCluster, tmp_path: Path, *, dry: bool = False) -> StepContext:
    target = open_kube_target(cluster=cluster)
    return StepContext(run_id="t", run_dir=tmp_path, artifacts_dir=tmp_path, target=target, dry_run=dry)


# ------------------------------------------------------------------------------------------- detection


def test_the_real_weave_is_detected_as_a_dual_overlay_source(weave: tuple[LocalKube, KubeCluster]) -> None:
    _, cluster = weave
    info = KubeCniOps(cluster).detect_cni()
    assert info.kind is CniKind.WEAVE and (info.namespace, info.daemonset) == ("kube-system", "weave-net")
    assert info.weave_range == WEAVE_RANGE and info.supported_source and info.migration_blockers() == []
    assert info.flannel is None and sorted(info.nodes) == sorted(NODES) and info.calico_pools == ()


# ------------------------------------------------------------------------------------------- the install


@pytest.mark.parametrize("manifest", [CALICO, CALICO_VXLAN], ids=["calico.yaml", "calico-vxlan.yaml"])
def test_install_beside_the_real_weave_writes_the_dual_overlay_objects(
    weave: tuple[LocalKube, KubeCluster], manifest: Path
) -> None:
    local, cluster = weave
    weave_before = local.api.get("DaemonSet", "weave-net", "kube-system")
    ops = KubeCniOps(cluster)
    local.api.requests.clear()
    lines = ops.apply_cni_agent(CniKind.CALICO, node_selector=None, config=dual_config(manifest))
    for line in (
        "IPPool migrator-dual-overlay created",
        "IPPool migrator-weave-range created",
        "FelixConfiguration default created",
        "DaemonSet kube-system/calico-node created",
        "DaemonSet kube-system/calico-node: install-cni env CNI_CONF_NAME: '10-calico.conflist' ->"
        " '20-calico.conflist'",
        "DaemonSet kube-system/calico-node: calico-node env NO_DEFAULT_POOLS: None -> 'true'",
    ):
        assert line in lines, lines
    pools = {p["metadata"]["name"]: p for p in objects(local.api, "IPPool")}
    assert sorted(pools) == ["migrator-dual-overlay", "migrator-weave-range"]  # no default-ipv4-ippool
    assert pools["migrator-dual-overlay"]["spec"] == {
        "cidr": NEW_CIDR,
        "blockSize": 26,
        "vxlanMode": "Always",
        "ipipMode": "Never",
        "natOutgoing": True,
    }
    assert pools["migrator-weave-range"]["spec"] == {
        "cidr": WEAVE_RANGE,
        "disabled": True,
        "natOutgoing": False,
        "vxlanMode": "Never",
        "ipipMode": "Never",
        "disableBGPExport": True,
    }
    assert all(
        p["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "migrator"} for p in pools.values()
    )
    felix = felix_default(local.api)
    assert felix is not None and felix["spec"] == {"vxlanPort": 4789, "vxlanVNI": 4096}
    ds = calico_node(local.api)
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}  # every node
    assert env_of(container(ds, "install-cni", "initContainers"))["CNI_CONF_NAME"] == "20-calico.conflist"
    node_env = env_of(container(ds, "calico-node"))
    assert node_env["NO_DEFAULT_POOLS"] == "true" and "CALICO_IPV4POOL_CIDR" not in node_env
    assert (
        "FELIX_VXLANPORT" not in node_env and "FELIX_VXLANVNI" not in node_env
    )  # neither manifest sets them
    # the pools come before calico-node: no calico-node could start without them
    writes = [p for m, p, _q in local.api.requests if m == "PATCH"]
    first_ds = next(i for i, p in enumerate(writes) if p.endswith("/daemonsets/calico-node"))
    assert max(i for i, p in enumerate(writes) if "/ippools/" in p) < first_ds
    # no takeover of anything of Weave's: no IPAM blocks, no VTEP annotations, Weave untouched
    assert [objects(local.api, k) for k in ("IPAMBlock", "BlockAffinity", "IPAMHandle")] == [[], [], []]
    for node in local.api.find("Node"):
        assert not any(k.startswith("projectcalico.org/") for k in node["metadata"].get("annotations") or {})
        assert MIGRATION_LABEL not in node["metadata"]["labels"]
    assert local.api.get("DaemonSet", "weave-net", "kube-system") == weave_before
    assert_valid_against_real_crds(written_calico_objects(local.api))
    info = ops.detect_cni()
    assert info.kind is CniKind.WEAVE and CniKind.CALICO in info.present
    again = ops.apply_cni_agent(CniKind.CALICO, node_selector=None, config=dual_config(manifest))
    assert (
        "IPPool migrator-dual-overlay unchanged" in again
        and "DaemonSet kube-system/calico-node unchanged" in again
    )


def test_a_manifest_with_a_pool_cidr_and_felix_vxlan_env_is_made_safe(
    weave: tuple[LocalKube, KubeCluster], tmp_path: Path
) -> None:
    """The real calico.yaml as users edit it: CALICO_IPV4POOL_CIDR uncommented (calico-node would not
    start with NO_DEFAULT_POOLS beside it) and Felix's VXLAN port and VNI in its env (ranked above the
    FelixConfiguration): the pool CIDR goes, the port and VNI become the plan's."""
    local, cluster = weave
    docs = real_docs(CALICO)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    container(ds, "calico-node")["env"] += [
        {"name": "CALICO_IPV4POOL_CIDR", "value": "192.168.0.0/16"},
        {"name": "FELIX_VXLANPORT", "value": "8472"},
        {"name": "FELIX_VXLANVNI", "value": "1"},
    ]
    edited = tmp_path / "calico.yaml"
    edited.write_text(yaml.safe_dump_all(docs))
    lines = KubeCniOps(cluster).apply_cni_agent(
        CniKind.CALICO, config=dual_config(edited, vxlan_port=4790, vxlan_vni=4097)
    )
    assert "DaemonSet kube-system/calico-node: calico-node env FELIX_VXLANPORT: '8472' -> '4790'" in lines
    env = env_of(container(calico_node(local.api), "calico-node"))
    assert "CALICO_IPV4POOL_CIDR" not in env and env["NO_DEFAULT_POOLS"] == "true"
    assert (env["FELIX_VXLANPORT"], env["FELIX_VXLANVNI"]) == ("4790", "4097")
    felix = felix_default(local.api)
    assert felix is not None and felix["spec"] == {"vxlanPort": 4790, "vxlanVNI": 4097}
    assert_valid_against_real_crds(written_calico_objects(local.api))


def test_dry_run_is_server_side_and_changes_nothing(weave: tuple[LocalKube, KubeCluster]) -> None:
    local, cluster = weave
    ops = KubeCniOps(cluster)
    rv = local.api.last_rv
    lines = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(), dry_run=True)
    text = "\n".join(lines)
    assert "DaemonSet kube-system/calico-node created (server dry run)" in text
    assert "IPPool migrator-dual-overlay created (server dry run) (not validated" in text  # CRD in the batch
    assert "calico-node: install-cni env CNI_CONF_NAME: '10-calico.conflist' -> '20-calico.conflist'" in text
    assert local.api.last_rv == rv and objects(local.api, "IPPool") == []
    # once Calico's CRDs are there, the server checks the pools too
    cluster.apply(list(calico_crds().values()))
    lines = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(), dry_run=True)
    assert "IPPool migrator-weave-range created (server dry run)" in lines
    assert "FelixConfiguration default created (server dry run)" in lines
    assert (
        objects(local.api, "IPPool") == []
        and local.api.get("DaemonSet", "calico-node", "kube-system") is None
    )


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("manifest", [CANAL, OPERATOR_CRS], ids=["canal.yaml", "custom-resources.yaml"])
def test_canal_and_the_operators_manifests_are_refused(
    weave: tuple[LocalKube, KubeCluster], manifest: Path
) -> None:
    local, cluster = weave
    for dry in (True, False):
        with pytest.raises(UsageError) as err:
            KubeCniOps(cluster).apply_cni_agent(CniKind.CALICO, config=dual_config(manifest), dry_run=dry)
        assert ("is Canal's" if manifest == CANAL else "Tigera operator's custom resources") in str(err.value)
    assert objects(local.api, "IPPool") == [] and local.api.get("DaemonSet", "canal", "kube-system") is None


def test_no_manifest_and_no_calico_node_is_refused(weave: tuple[LocalKube, KubeCluster]) -> None:
    _, cluster = weave
    ops = KubeCniOps(cluster)
    (line,) = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(None), dry_run=True)
    assert line == (
        "would fail: calico-node is not installed and no Calico manifest was given (plan parameter"
        " calico_manifest)"
    )
    with pytest.raises(StepFailed, match="no Calico manifest was given"):
        ops.apply_cni_agent(CniKind.CALICO, config=dual_config(None))


def test_an_installed_calico_node_must_already_fit_the_dual_overlay(
    weave: tuple[LocalKube, KubeCluster],
) -> None:
    """calico-node of the real calico.yaml installed by hand beside Weave, no manifest given: its CNI config
    10-calico.conflist sorts before 10-weave.conflist (every kubelet would switch at once): refused, nothing
    written; once it is 20-calico.conflist, migrator writes only the pools and Felix's config."""
    local, cluster = weave
    ds = next(d for d in real_docs(CALICO) if d["kind"] == "DaemonSet")
    local.api.add(copy.deepcopy(ds))
    ops = KubeCniOps(cluster)
    with pytest.raises(StepFailed) as err:
        ops.apply_cni_agent(CniKind.CALICO, config=dual_config(None))
    assert "CNI_CONF_NAME is ['10-calico.conflist'], not 20-calico.conflist" in str(err.value)
    assert "give the Calico manifest (plan parameter calico_manifest)" in str(err.value)
    assert objects(local.api, "IPPool") == []
    container(ds, "install-cni", "initContainers")["env"][0] = {
        "name": "CNI_CONF_NAME",
        "value": "20-calico.conflist",
    }
    local.api.remove("DaemonSet", "calico-node", "kube-system")
    cluster.apply([ds])  # the CRDs are not there: the pools cannot be written either
    with pytest.raises(StepFailed, match="Calico's CRDs of IPPool, FelixConfiguration are not installed"):
        ops.apply_cni_agent(CniKind.CALICO, config=dual_config(None))
    cluster.apply(list(calico_crds().values()))
    lines = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(None))
    assert lines == [
        "IPPool migrator-dual-overlay created",
        "IPPool migrator-weave-range created",
        "FelixConfiguration default created",
    ]


def test_a_pool_of_the_user_is_refused(weave: tuple[LocalKube, KubeCluster]) -> None:
    """An enabled IPPool already there (Calico's IPAM would allocate from it too), or one overlapping the
    new CIDR or Weave's range: refused before anything is written."""
    local, cluster = weave
    cluster.apply([calico_crds()["IPPool"]])
    pool = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": "default-ipv4-ippool"},
    }
    cluster.apply([{**pool, "spec": {"cidr": "192.168.0.0/16", "natOutgoing": True}}])
    ops = KubeCniOps(cluster)
    (line,) = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(), dry_run=True)
    assert line.startswith("would fail: Calico IPPool default-ipv4-ippool (192.168.0.0/16) is enabled")
    cluster.apply([{**pool, "spec": {"cidr": "10.244.128.0/17", "disabled": True}}])
    with pytest.raises(StepFailed, match=r"default-ipv4-ippool \(10.244.128.0/17\) overlaps 10.244.0.0/16"):
        ops.apply_cni_agent(CniKind.CALICO, config=dual_config())
    assert [p["metadata"]["name"] for p in objects(local.api, "IPPool")] == ["default-ipv4-ippool"]
    assert local.api.get("DaemonSet", "calico-node", "kube-system") is None


def test_the_dual_overlay_config_on_a_flannel_cluster_is_refused() -> None:
    api = FakeKubeApi()
    seed_real_flannel(api)
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        ops = KubeCniOps(cluster)
        (line,) = ops.apply_cni_agent(CniKind.CALICO, config=dual_config(), dry_run=True)
        assert line == (
            "would fail: Calico beside the source with its own pool (the dual-overlay method) is for weave,"
            " not flannel"
        )
        with pytest.raises(StepFailed):
            ops.apply_cni_agent(CniKind.CALICO, config=dual_config())
        assert api.get("DaemonSet", "calico-node", "kube-system") is None
        cluster.close()


# ------------------------------------------------------------------------------------------- kube-proxy


def test_set_cluster_cidr_edits_kubeadms_config_and_restarts_kube_proxy(
    weave: tuple[LocalKube, KubeCluster],
) -> None:
    local, cluster = weave
    ops = KubeCniOps(cluster)
    before = kube_proxy_conf(local.api)
    assert before["clusterCIDR"] == "" and ops.cluster_cidr() is None
    wide = covering(WEAVE_RANGE, NEW_CIDR)
    assert wide == "10.0.0.0/8"
    rv = local.api.last_rv
    (line,) = ops.set_cluster_cidr(wide, dry_run=True)
    assert line == (
        "kube-proxy clusterCIDR unset -> 10.0.0.0/8, DaemonSet kube-system/kube-proxy restarted"
        " (server dry run)"
    )
    assert local.api.last_rv == rv
    (line,) = ops.set_cluster_cidr(wide)
    assert line == "kube-proxy clusterCIDR unset -> 10.0.0.0/8, DaemonSet kube-system/kube-proxy restarted"
    after = kube_proxy_conf(local.api)
    assert after == {**before, "clusterCIDR": wide} and ops.cluster_cidr() == wide
    ds = local.api.get("DaemonSet", "kube-proxy", "kube-system")
    assert (
        ds is not None
        and "kubectl.kubernetes.io/restartedAt" in ds["spec"]["template"]["metadata"]["annotations"]
    )
    ops.set_cluster_cidr(None)  # back as kubeadm wrote it: the key kept, empty
    assert kube_proxy_conf(local.api) == before and ops.cluster_cidr() is None


def test_set_cluster_cidr_changes_nothing_when_kube_proxy_cannot_be_restarted(
    weave: tuple[LocalKube, KubeCluster],
) -> None:
    """The ConfigMap without its DaemonSet: refused before the ConfigMap changes; the CIDR kube-proxy
    already has: no restart."""
    local, cluster = weave
    ops = KubeCniOps(cluster)
    ops.set_cluster_cidr(NEW_CIDR)
    ds = local.api.get("DaemonSet", "kube-proxy", "kube-system")
    assert ds is not None
    restarted = ds["spec"]["template"]["metadata"]["annotations"]
    assert ops.set_cluster_cidr(NEW_CIDR) == [f"kube-proxy clusterCIDR already {NEW_CIDR}: no restart"]
    ds = local.api.get("DaemonSet", "kube-proxy", "kube-system")
    assert ds is not None and ds["spec"]["template"]["metadata"]["annotations"] == restarted
    local.api.remove("DaemonSet", "kube-proxy", "kube-system")
    conf = kube_proxy_conf(local.api)
    for dry in (True, False):
        with pytest.raises(StepFailed, match="no DaemonSet kube-system/kube-proxy to restart"):
            ops.set_cluster_cidr("10.0.0.0/8", dry_run=dry)
    assert kube_proxy_conf(local.api) == conf


def test_set_cluster_cidr_without_kubeadms_config_map_fails_clearly(tmp_path: Path) -> None:
    api = FakeKubeApi()
    seed_real_weave(api, kube_proxy=False)
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        ops = KubeCniOps(cluster)
        assert ops.cluster_cidr() is None
        for dry in (True, False):
            with pytest.raises(StepFailed) as err:
                ops.set_cluster_cidr("10.0.0.0/8", dry_run=dry)
            assert str(err.value).startswith(
                "no ConfigMap kube-system/kube-proxy (kubeadm's) and no kube-proxy DaemonSet: set"
                " kube-proxy's --cluster-cidr to 10.0.0.0/8 by hand"
            )
        # the install refuses it up front, before anything changes
        ctx = ctx_for(cluster, tmp_path)
        with pytest.raises(StepFailed, match="no ConfigMap kube-system/kube-proxy"):
            DualInstall().preflight(ctx, CniDualInstallArgs(calico_cidr=NEW_CIDR, manifest=str(CALICO)))
        cluster.close()


def _kube_proxy_with_flags(api: FakeKubeApi, *flags: str) -> None:
    """kube-proxy configured by flags, not kubeadm's ConfigMap."""
    (ds,) = [d for d in real_docs(KUBE_PROXY) if d["kind"] == "DaemonSet"]
    container(ds, "kube-proxy")["command"] = ["/usr/local/bin/kube-proxy", *flags]
    api.add(ds)


@pytest.mark.parametrize("form", ["--cluster-cidr=10.0.0.0/8", "--cluster-cidr 10.0.0.0/8"])
def test_a_cluster_cidr_set_by_hand_is_accepted_when_it_holds_both_ranges(tmp_path: Path, form: str) -> None:
    """No kubeadm ConfigMap: migrator edits no command line; a --cluster-cidr the user set by hand holding
    the CIDR wanted is accepted (install: both ranges; finalize: Calico's), another is refused."""
    api = FakeKubeApi()
    seed_real_weave(api, kube_proxy=False)
    _kube_proxy_with_flags(api, "--hostname-override=$(NODE_NAME)", *form.split())
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        ops = KubeCniOps(cluster)
        assert ops.cluster_cidr() == "10.0.0.0/8"
        wide = covering(WEAVE_RANGE, NEW_CIDR)
        assert ops.set_cluster_cidr(wide) == [
            "kube-proxy --cluster-cidr already 10.0.0.0/8 (set by hand): nothing to do"
        ]
        (line,) = ops.set_cluster_cidr(NEW_CIDR, dry_run=True)
        assert line.startswith("kube-proxy --cluster-cidr 10.0.0.0/8 (set by hand) holds 10.244.0.0/16")
        DualInstall().preflight(
            ctx_for(cluster, tmp_path), CniDualInstallArgs(calico_cidr=NEW_CIDR, manifest=str(CALICO))
        )
        with pytest.raises(StepFailed) as err:
            ops.set_cluster_cidr("172.16.0.0/12")
        assert "DaemonSet kube-system/kube-proxy has --cluster-cidr 10.0.0.0/8" in str(err.value)
        assert "set kube-proxy's --cluster-cidr to 172.16.0.0/12 by hand" in str(err.value)
        ds = api.get("DaemonSet", "kube-proxy", "kube-system")
        assert ds is not None and "annotations" not in ds["spec"]["template"]["metadata"]  # no restart
        cluster.close()


def test_a_kube_proxy_without_cluster_cidr_and_without_config_map_is_refused(tmp_path: Path) -> None:
    api = FakeKubeApi()
    seed_real_weave(api, kube_proxy=False)
    _kube_proxy_with_flags(api, "--hostname-override=$(NODE_NAME)")
    with LocalKube(api) as local:
        cluster = local.cluster(watch_chunk=1.0)
        with pytest.raises(StepFailed) as err:
            DualInstall().preflight(ctx_for(cluster, tmp_path), CniDualInstallArgs(calico_cidr=NEW_CIDR))
        assert str(err.value).startswith(
            "no ConfigMap kube-system/kube-proxy (kubeadm's) and DaemonSet kube-system/kube-proxy has"
            " --cluster-cidr unset: set kube-proxy's --cluster-cidr to 10.0.0.0/8 by hand"
        )
        cluster.close()


# ------------------------------------------------------------------------------------------- the undo


def _migrators_view(api: FakeKubeApi) -> dict[str, Any]:
    """What migrator writes on this path, as it is now."""
    felix = felix_default(api)
    return {
        "pools": sorted(p["metadata"]["name"] for p in objects(api, "IPPool")),
        "calico-node": api.get("DaemonSet", "calico-node", "kube-system") is not None,
        "felix": (felix or {}).get("spec") or {},
        "kube-proxy": kube_proxy_conf(api),
        "weave-net": api.get("DaemonSet", "weave-net", "kube-system"),
        "nodes": {
            n["metadata"]["name"]: (n["metadata"]["labels"], n["metadata"].get("annotations"))
            for n in api.find("Node")
        },
    }


def test_undo_leaves_what_migrator_wrote_as_before(weave: tuple[LocalKube, KubeCluster]) -> None:
    """The install's cluster side (kube-proxy's CIDR widened, Calico beside Weave) and its undo
    (``delete_cni_agent`` + kube-proxy's prior CIDR), as cni.dual-install's do and undo call them."""
    local, cluster = weave
    ops = KubeCniOps(cluster)
    before = _migrators_view(local.api)
    prior = ops.cluster_cidr()
    ops.set_cluster_cidr(covering(WEAVE_RANGE, NEW_CIDR))
    ops.apply_cni_agent(CniKind.CALICO, node_selector=None, config=dual_config())
    assert _migrators_view(local.api) != before
    preview = ops.delete_cni_agent(CniKind.CALICO, dry_run=True)
    assert "IPPool migrator-dual-overlay deleted (server dry run)" in preview
    assert len(objects(local.api, "IPPool")) == 2
    lines = ops.delete_cni_agent(CniKind.CALICO)
    assert lines[:3] == [
        "DaemonSet kube-system/calico-node deleted",
        "IPPool migrator-dual-overlay deleted",
        "IPPool migrator-weave-range deleted",
    ]
    assert "FelixConfiguration default: migrator's vxlanPort, vxlanVNI taken back" in lines
    ops.set_cluster_cidr(prior)
    assert _migrators_view(local.api) == before
    assert ops.delete_cni_agent(CniKind.CALICO) == ["calico-node DaemonSet already absent"]  # idempotent


def test_undo_keeps_a_pool_and_felix_fields_of_the_user(weave: tuple[LocalKube, KubeCluster]) -> None:
    local, cluster = weave
    cluster.apply(list(calico_crds().values()))
    user_pool = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": "reserved"},
        "spec": {"cidr": "172.30.0.0/16", "disabled": True},
    }
    user_felix = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"logSeverityScreen": "Info"},
    }
    for obj in (user_pool, user_felix):  # written by kubectl, not migrator
        local.api.add(copy.deepcopy(obj))
    ops = KubeCniOps(cluster)
    ops.apply_cni_agent(CniKind.CALICO, config=dual_config())
    felix = felix_default(local.api)
    assert felix is not None and felix["spec"] == {
        "logSeverityScreen": "Info",
        "vxlanPort": 4789,
        "vxlanVNI": 4096,
    }
    ops.delete_cni_agent(CniKind.CALICO)
    assert [p["metadata"]["name"] for p in objects(local.api, "IPPool")] == ["reserved"]
    felix = felix_default(local.api)
    assert felix is not None and felix["spec"] == {"logSeverityScreen": "Info"}


# ------------------------------------------------------------------------------------------- preflight


@pytest.mark.parametrize(
    ("calico_cidr", "refusal"),
    [
        ("10.32.0.0/16", "calico_cidr 10.32.0.0/16 overlaps Weave Net's IPALLOC_RANGE 10.32.0.0/12"),
        ("198.18.0.0/24", "calico_cidr 198.18.0.0/24 holds the address of node(s) node-1, node-2, node-3"),
        ("10.96.0.0/16", "calico_cidr 10.96.0.0/16 overlaps the service range 10.96.0.0/12 (service_cidr)"),
        ("10.244.0.0/31", "block_size /26 is larger than calico_cidr 10.244.0.0/31"),
    ],
)
def test_preflight_refuses_a_calico_cidr_that_cannot_work(
    weave: tuple[LocalKube, KubeCluster], tmp_path: Path, calico_cidr: str, refusal: str
) -> None:
    _, cluster = weave
    ctx = ctx_for(cluster, tmp_path)
    args = CniPreflightArgs(source="weave", calico_cidr=calico_cidr, service_cidr="10.96.0.0/12")
    with pytest.raises(StepFailed) as err:
        Preflight().preflight(ctx, args)
    assert refusal in str(err.value)
    (line,) = Preflight().preview(ctx, args)
    assert (
        isinstance(line, dict) and line["detect"] == "weave" and any(refusal in b for b in line["blockers"])
    )


def test_preflight_uses_the_nodes_internal_ip(weave: tuple[LocalKube, KubeCluster], tmp_path: Path) -> None:
    """The nodes list an ExternalIP first; the overlap check is on the InternalIP (what the overlay and
    Calico's IP autodetection use)."""
    _, cluster = weave
    ctx = ctx_for(cluster, tmp_path)
    assert {n.name: n.address for n in cluster.list_nodes()} == NODES
    Preflight().preflight(ctx, CniPreflightArgs(source="weave", calico_cidr=NEW_CIDR))
    with pytest.raises(StepFailed, match=r"holds the address of node\(s\) node-2"):
        Preflight().preflight(
            ctx, CniPreflightArgs(source="weave", calico_cidr="198.18.0.11/32", block_size=32)
        )


# ------------------------------------------------------------------------------------------- the plan


def _dry_run(api: FakeKubeApi, tmp_path: Path, **params: str) -> dict[str, Any]:
    with FakeApiServer(api) as server:
        target = open_kube_target(None, kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")))
        source = load_plan_file(PLAN, {"calico_manifest": str(CALICO), "nodeport_service": "", **params})
        report: dict[str, Any] = dry_run(source, target, target_spec="kube")
        return report


def _strict_weave_api(**kw: Any) -> FakeKubeApi:
    api = FakeKubeApi()
    api.field_validation = "Strict"
    seed_real_weave(api, **kw)
    return api


def test_dry_run_of_weave_to_calico_with_the_real_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    api = _strict_weave_api()
    before = {k: copy.deepcopy(api.get(*k)) for k in (("ConfigMap", "kube-proxy", "kube-system"),)}
    report = _dry_run(api, tmp_path)
    stages = {s["stage"]: s for s in report["stages"]}
    (detected,) = stages["detect-source"]["steps"][0]["preview"]
    assert detected["detect"] == "weave" and detected["blockers"] == []
    assert (detected["weave_range"], detected["calico_cidr"]) == (WEAVE_RANGE, NEW_CIDR)
    install = "\n".join(
        json.dumps(x) if isinstance(x, dict) else x for x in stages["install-calico"]["steps"][0]["preview"]
    )
    for text in (
        f"kubectl label node node-2 {MIGRATION_LABEL}=weave",
        "kube-proxy clusterCIDR unset -> 10.0.0.0/8, DaemonSet kube-system/kube-proxy restarted"
        " (server dry run)",
        "DaemonSet kube-system/calico-node created (server dry run)",
        "IPPool migrator-dual-overlay created (server dry run)",
        "IPPool migrator-weave-range created (server dry run)",
        "calico-node: install-cni env CNI_CONF_NAME: '10-calico.conflist' -> '20-calico.conflist'"
        " (server dry run)",
        "the kubelet keeps 10-weave.conflist",
    ):
        assert text in install, install
    waves = stages["migrate-nodes"]["waves"]
    assert [w["nodes"][0]["node"] for w in waves] == ["node-2", "node-3", "node-1"]
    finalize = "\n".join(str(x) for x in stages["finalize"]["steps"][0]["preview"])
    assert "DaemonSet kube-system/weave-net deleted (server dry run)" in finalize
    assert "kube-proxy clusterCIDR unset -> 10.244.0.0/16" in finalize
    # a dry run changes nothing
    assert api.get("DaemonSet", "calico-node", "kube-system") is None and objects(api, "IPPool") == []
    assert api.get("DaemonSet", "weave-net", "kube-system") is not None
    assert {k: api.get(*k) for k in before} == before


def test_dry_run_refuses_what_cannot_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    with pytest.raises(CheckFailed) as err:
        _dry_run(_strict_weave_api(), tmp_path, calico_cidr="10.40.0.0/16", calico_manifest=str(CANAL))
    message = str(err.value)
    assert "preflight would fail, nothing would be changed" in message
    assert "calico_cidr 10.40.0.0/16 overlaps Weave Net's IPALLOC_RANGE 10.32.0.0/12" in message
    assert "is Canal's" in message
    with pytest.raises(CheckFailed) as err:
        _dry_run(_strict_weave_api(kube_proxy=False), tmp_path)
    assert "no ConfigMap kube-system/kube-proxy" in str(err.value)
