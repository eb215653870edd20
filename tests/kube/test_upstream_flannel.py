"""The kube target's flannel detection against the REAL kube-flannel.yml (``../shared/upstream``), with its
net-conf.json varied the way users vary it (VNI, Port, MTU, DirectRouting, SubnetLen, key case, another
namespace, flanneld's flags), and the nodes annotated as flanneld annotates them; what migrator derives
for Calico from it (IPPool, FelixConfiguration, calico-node's env) from the REAL Calico v3.31.7 calico.yaml.

The helpers here (``seed_real_flannel``, ``UPSTREAM``) are imported by the other ``test_upstream_*`` files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.cni import CniInfo, CniKind
from migrator.cni.flannel import parse_net_conf
from migrator.targets.kube import KubeCluster, KubeCniOps
from migrator.targets.kube.calico_ipam import plan_node_ipam
from migrator.targets.kube.cni import calico_objects
from migrator.testing.kube_server import FakeKubeApi, LocalKube
from migrator.testing.kube_server.objects import make_node
from tests.upstream import upstream_dir

UPSTREAM = upstream_dir()
KUBE_FLANNEL = UPSTREAM / "flannel" / "kube-flannel.yml"
CALICO = UPSTREAM / "calico" / "calico.yaml"

pytestmark = pytest.mark.skipif(not KUBE_FLANNEL.is_file(), reason=f"no upstream files in {UPSTREAM}")


def real_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def real_net_conf() -> dict[str, Any]:
    cm = next(d for d in real_docs(KUBE_FLANNEL) if d["kind"] == "ConfigMap")
    conf: dict[str, Any] = json.loads(cm["data"]["net-conf.json"])
    return conf


def flannel_manifest(
    *,
    net_conf: Mapping[str, Any] | str | None = None,
    namespace: str = "kube-flannel",
    args: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The real kube-flannel.yml with a user's changes: net-conf.json (an object, or raw text to keep a
    key's case), the namespace everything lives in, flanneld's args."""
    docs = real_docs(KUBE_FLANNEL)
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if doc["kind"] == "Namespace":
            meta["name"] = namespace
        elif meta.get("namespace") == "kube-flannel":
            meta["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
        if doc["kind"] == "ConfigMap" and net_conf is not None:
            text = net_conf if isinstance(net_conf, str) else json.dumps(net_conf, indent=2)
            doc["data"]["net-conf.json"] = text
        if doc["kind"] == "DaemonSet" and args is not None:
            flanneld = next(
                c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-flannel"
            )
            flanneld["args"] = list(args)
    return docs


def seed_real_flannel(
    api: FakeKubeApi,
    *,
    nodes: int = 3,
    pod_cidrs: Sequence[str] | None = None,
    recorded_vni: int | None = None,
    **manifest: Any,
) -> list[str]:
    """A cluster after ``kubectl apply -f kube-flannel.yml`` (changed as ``flannel_manifest``): every
    object of the file, and nodes as kubeadm (``spec.podCIDR``) and flanneld with ``--kube-subnet-mgr``
    (``flannel.alpha.coreos.com/*``: backend-data with the VNI it runs with and its VtepMAC) leave them."""
    docs = flannel_manifest(**manifest)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    try:
        parsed = parse_net_conf(cm["data"]["net-conf.json"])
        vni, backend_type = parsed.vni, parsed.backend_type
    except (TypeError, ValueError):
        vni, backend_type = 1, "vxlan"
    controllers, api.controllers_enabled = api.controllers_enabled, False
    try:
        for doc in docs:
            api.add(copy.deepcopy(doc))
        names = []
        for i in range(nodes):
            name = f"node-{i + 1}"
            cidr = pod_cidrs[i] if pod_cidrs is not None else f"10.244.{i}.0/24"
            backend = {
                "VNI": recorded_vni if recorded_vni is not None else vni,
                "VtepMAC": f"7a:1f:00:00:00:{i + 1:02x}",
            }
            api.add(
                make_node(
                    name,
                    ip=f"198.18.0.{i + 10}",
                    pod_cidr=cidr,
                    roles=("control-plane",) if i == 0 else (),
                    annotations={
                        "flannel.alpha.coreos.com/backend-type": backend_type,
                        "flannel.alpha.coreos.com/backend-data": json.dumps(backend),
                        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                        "flannel.alpha.coreos.com/public-ip": f"198.18.0.{i + 10}",
                    },
                )
            )
            names.append(name)
    finally:
        api.controllers_enabled = controllers
    return names


@pytest.fixture
def kube() -> Iterator[Callable[..., tuple[LocalKube, KubeCluster]]]:
    made: list[tuple[LocalKube, KubeCluster]] = []

    def factory(**seed: Any) -> tuple[LocalKube, KubeCluster]:
        local = LocalKube(FakeKubeApi())
        local.__enter__()
        seed_real_flannel(local.api, **seed)
        cluster = local.cluster(watch_chunk=1.0)
        made.append((local, cluster))
        return local, cluster

    yield factory
    for local, cluster in made:
        cluster.close()
        local.__exit__(None, None, None)


def detect(factory: Callable[..., tuple[LocalKube, KubeCluster]], **seed: Any) -> CniInfo:
    _, cluster = factory(**seed)
    return KubeCniOps(cluster).detect_cni()


def calico_for(info: CniInfo) -> dict[str, dict[str, Any]]:
    """What migrator would apply with the real calico.yaml: the objects by kind (the last of a kind)."""
    objects = calico_objects(info, str(CALICO), {"projectcalico.org/node-network-during-migration": "calico"})
    return {str(o["kind"]): o for o in objects}


def calico_node_env(objects: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    ds = objects["DaemonSet"]
    container = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "calico-node")
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container["env"]}


# ------------------------------------------------------------------------------------------------ defaults


def test_the_real_kube_flannel_yml_is_flannels_defaults(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    info = detect(kube)
    assert info.kind is CniKind.FLANNEL and info.namespace == "kube-flannel" and info.version == "v0.28.9"
    fl = info.settings
    assert (fl.network, fl.backend_type, fl.vni, fl.port, fl.mtu) == ("10.244.0.0/16", "vxlan", 1, 8472, None)
    assert fl.masquerade and fl.kube_subnet_mgr and not fl.direct_routing
    assert info.block_size == 24 and info.migration_blockers() == []
    objects = calico_for(info)
    assert objects["IPPool"]["spec"] == {
        "cidr": "10.244.0.0/16",
        "blockSize": 24,
        "vxlanMode": "Always",
        "ipipMode": "Never",
        "natOutgoing": True,
    }
    assert objects["FelixConfiguration"]["spec"] == {"vxlanVNI": 1, "vxlanPort": 8472}
    # flannel derives flannel.1's MTU from the interface, and so does Felix from calico-config's veth_mtu "0"
    assert calico_node_env(objects)["FELIX_VXLANMTU"] == {
        "configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}
    }


# ------------------------------------------------------------------------------------ net-conf.json varied


@pytest.mark.parametrize(
    "backend",
    [
        '"Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789}',
        '"backend": {"type": "vxlan", "vni": 4096, "port": 4789}',  # Go's JSON: any case
        '"BACKEND": {"TYPE": "VXLAN", "Vni": 4096, "PORT": 4789}',
    ],
)
def test_vni_and_port_in_any_key_case_reach_felix(
    kube: Callable[..., tuple[LocalKube, KubeCluster]], backend: str
) -> None:
    text = '{\n  "Network": "10.244.0.0/16",\n  "EnableNFTables": false,\n  ' + backend + "\n}"
    info = detect(kube, net_conf=text)
    assert (info.settings.vni, info.settings.port) == (4096, 4789)
    assert info.migration_blockers() == []
    assert calico_for(info)["FelixConfiguration"]["spec"] == {"vxlanVNI": 4096, "vxlanPort": 4789}


def test_a_vni_written_as_a_string_is_refused_as_flanneld_refuses_it(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    info = detect(kube, net_conf={"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": "4096"}})
    assert info.flannel is None
    assert any("net-conf.json" in b and "not found or not valid" in b for b in info.migration_blockers())


def test_nodes_backend_data_vni_is_cross_checked(kube: Callable[..., tuple[LocalKube, KubeCluster]]) -> None:
    """net-conf.json changed to VNI 4096 but flanneld still runs (and records) VNI 1: refused."""
    conf = {**real_net_conf(), "Backend": {"Type": "vxlan", "VNI": 4096}}
    info = detect(kube, net_conf=conf, recorded_vni=1)
    assert {n.vni for n in info.flannel_nodes.values()} == {1}
    assert {n.vtep_mac for n in info.flannel_nodes.values()} == {
        "7a:1f:00:00:00:01",
        "7a:1f:00:00:00:02",
        "7a:1f:00:00:00:03",
    }
    (problem,) = info.migration_blockers()
    assert "3 node(s) run flannel with another VNI than net-conf.json's 4096" in problem
    assert "node-1 VNI 1" in problem


def test_mtu_is_the_link_mtu_and_reaches_felix_where_it_counts(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    """flannel's MTU 1450 is the link's: flannel.1 runs at 1400. FelixConfiguration gets 1400, and so does
    calico-node's FELIX_VXLANMTU env (the real manifest sets it from calico-config, and Felix ranks an env
    value above every FelixConfiguration)."""
    conf = {**real_net_conf(), "Backend": {"Type": "vxlan", "MTU": 1450}}
    info = detect(kube, net_conf=conf)
    assert info.settings.mtu == 1450 and info.settings.vxlan_mtu == 1400
    objects = calico_for(info)
    assert objects["FelixConfiguration"]["spec"]["vxlanMTU"] == 1400
    env = calico_node_env(objects)
    assert env["FELIX_VXLANMTU"] == "1400"
    assert env["FELIX_IPINIPMTU"] == {"configMapKeyRef": {"name": "calico-config", "key": "veth_mtu"}}


def test_direct_routing_is_refused(kube: Callable[..., tuple[LocalKube, KubeCluster]]) -> None:
    conf = {**real_net_conf(), "Backend": {"Type": "vxlan", "DirectRouting": True}}
    info = detect(kube, net_conf=conf)
    assert info.settings.direct_routing
    assert info.migration_blockers() == [
        "flannel DirectRouting is on (Calico cannot keep those direct routes)"
    ]


def test_host_gw_backend_is_refused(kube: Callable[..., tuple[LocalKube, KubeCluster]]) -> None:
    info = detect(kube, net_conf={**real_net_conf(), "Backend": {"Type": "host-gw"}})
    assert info.migration_blockers() == [
        "flannel backend 'host-gw' is not vxlan (only VXLAN is wire-compatible)"
    ]


def test_block_size_comes_from_the_node_pod_cidrs_not_subnet_len(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    """With --kube-subnet-mgr flanneld uses each node's spec.podCIDR: SubnetLen 26 in net-conf.json changes
    nothing, the nodes' /24s are the blocks."""
    info = detect(kube, net_conf={**real_net_conf(), "SubnetLen": 26})
    assert info.settings.subnet_len == 26 and info.block_size == 24
    assert info.migration_blockers() == []
    assert calico_for(info)["IPPool"]["spec"]["blockSize"] == 24
    planned, problems = plan_node_ipam(info)
    assert problems == [] and [n.cidr for n in planned] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]


def test_node_pod_cidrs_of_26_are_calico_blocks_of_26(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    info = detect(kube, pod_cidrs=["10.244.0.0/26", "10.244.0.64/26", "10.244.0.128/26"])
    assert info.block_size == 26 and info.migration_blockers() == []
    assert calico_for(info)["IPPool"]["spec"]["blockSize"] == 26
    planned, problems = plan_node_ipam(info)
    assert problems == [] and [n.cidr for n in planned][1] == "10.244.0.64/26"


def test_pod_cidrs_calico_cannot_take_are_refused_early(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    mixed = detect(kube, pod_cidrs=["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/26"])
    (problem,) = mixed.migration_blockers()
    assert "the nodes' pod CIDRs have 2 sizes (/24: node-1, node-2; /26: node-3)" in problem
    wide = detect(
        kube,
        net_conf={**real_net_conf(), "Network": "10.0.0.0/8"},
        pod_cidrs=["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"],
    )
    (problem,) = wide.migration_blockers()
    assert "is a /16: Calico's IPv4 blockSize must be 20 to 32" in problem


def test_subnet_len_default_follows_flannel(kube: Callable[..., tuple[LocalKube, KubeCluster]]) -> None:
    assert parse_net_conf('{"Network": "10.244.0.0/16"}').subnet_len == 24
    assert parse_net_conf('{"Network": "10.244.0.0/23"}').subnet_len == 25
    assert parse_net_conf('{"network": "10.244.0.0/16", "subnetlen": 25}').subnet_len == 25


def test_a_non_default_namespace_is_read(kube: Callable[..., tuple[LocalKube, KubeCluster]]) -> None:
    """Everything of kube-flannel.yml in the user's namespace: the ConfigMap the DaemonSet mounts is read
    there (not only kube-flannel / kube-system)."""
    info = detect(
        kube, namespace="networking", net_conf={**real_net_conf(), "Backend": {"Type": "vxlan", "VNI": 7}}
    )
    assert info.kind is CniKind.FLANNEL and info.namespace == "networking"
    assert info.flannel is not None and info.flannel.vni == 7
    assert info.config["configmap"] == "networking/kube-flannel-cfg"
    assert info.migration_blockers() == []


@pytest.mark.parametrize(
    ("args", "masquerade"),
    [
        (["--ip-masq", "--kube-subnet-mgr"], True),
        (["--kube-subnet-mgr"], False),
        (["--ip-masq=false", "--kube-subnet-mgr"], False),
        (["-ip-masq=true", "-kube-subnet-mgr"], True),
    ],
)
def test_masquerade_follows_flanneld_ip_masq(
    kube: Callable[..., tuple[LocalKube, KubeCluster]], args: list[str], masquerade: bool
) -> None:
    info = detect(kube, args=[*args, "--healthz-port=8081"])
    assert info.settings.masquerade is masquerade
    assert calico_for(info)["IPPool"]["spec"]["natOutgoing"] is masquerade


def test_without_kube_subnet_mgr_the_block_size_is_subnet_len(
    kube: Callable[..., tuple[LocalKube, KubeCluster]],
) -> None:
    info = detect(kube, args=["--ip-masq"], net_conf={**real_net_conf(), "SubnetLen": 24})
    assert not info.settings.kube_subnet_mgr and info.block_size == 24
